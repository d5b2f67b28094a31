"""Weights: the shipped Lite0 weights, torchvision's and timm's caches (pre-seeded, so their real loading code
runs), user files (safetensors, state dicts, malicious pickles) and failing fast offline."""
import pickle

import pytest
import torch
from safetensors.torch import save_file

from cnnlab.images import image_input, sample_images
from cnnlab.predict import predict
from cnnlab.registry import arch_names, build_model, get_spec
import cnnlab.weights
from cnnlab.weights import (WeightsError, create_model, default_weights, download_source,
                            host_reachable, load_weights, map_state_dict_in_order, reachable, ready_weights,
                            shipped_weights_path, timm_cached_file, torchvision_cache_path, weights_options)

LITE0 = "tf_efficientnet_lite0"
LITE2 = "tf_efficientnet_lite2"
DOMESTIC_CATS = {281, 282, 283, 284, 285}


@pytest.fixture(autouse=True)
def isolated_caches(tmp_path, monkeypatch):
    """Empty torchvision and Hugging Face caches and no network, whatever the machine has."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("CNNLAB_OFFLINE", "1")


def top_indices(model, photo="chelsea", arch=LITE0, k=3):
    batch = image_input(sample_images()[photo], get_spec(arch)).tensor
    return [p.index for p in predict(model, batch, top=k)]


def random_state(name, seed=0, **build):
    torch.manual_seed(seed)
    return build_model(name, **build).state_dict()


@pytest.mark.parametrize("arch", [LITE0, LITE2])
def test_shipped_weights_map_by_shape_and_classify_the_samples(arch):
    source = torch.load(shipped_weights_path(arch), map_location="cpu", weights_only=True)
    target = build_model(arch)
    mapped = map_state_dict_in_order(source, target)
    assert list(mapped) == list(target.state_dict())
    assert all(mapped[k].shape == v.shape for k, v in target.state_dict().items())
    model = create_model(arch)
    chelsea = top_indices(model, arch=arch)
    assert chelsea[0] in DOMESTIC_CATS and 285 in chelsea
    assert top_indices(model, "coffee", arch=arch)[0] == 967  # espresso


def test_options_say_what_each_architecture_can_have_offline():
    lite0 = {o.key: o for o in weights_options(LITE0)}
    assert list(lite0) == ["shipped", "timm", "none"]
    assert lite0["shipped"].offline and not lite0["timm"].offline
    resnet = {o.key: o for o in weights_options("resnet18")}
    assert list(resnet) == ["torchvision", "none"] and not resnet["torchvision"].offline
    assert [o.key for o in weights_options("bn_inception")] == ["none"]
    assert default_weights(LITE0) == "shipped" and default_weights("resnet18") == "none"
    assert default_weights("resnet18", pretrained=True) == "torchvision"
    with pytest.raises(WeightsError, match="no pretrained weights exist for bn_inception"):
        default_weights("bn_inception", pretrained=True)


def test_default_without_offline_weights_is_random_init_and_says_so():
    loaded = load_weights("resnet18", "default", num_classes=7)
    assert loaded.weights == "none" and loaded.num_classes == 7
    assert "random init" in loaded.notes[0]


def test_online_weights_offline_fail_with_what_is_available():  # how fast: benchmarks/offline_errors.py
    with pytest.raises(WeightsError) as error:
        load_weights("resnet18", "torchvision")
    message = str(error.value)
    assert "\n" not in message
    assert str(torchvision_cache_path("resnet18")) in message
    assert f"{LITE0} (shipped)" in message and "weights file" in message
    with pytest.raises(WeightsError, match="timm weights tf_efficientnet_lite0.in1k .* offline mode is set"):
        load_weights(LITE0, "timm")


def test_offline_errors_have_a_short_summary_in_the_menu_words():
    with pytest.raises(WeightsError) as error:
        load_weights("resnet18", "torchvision")
    summary = error.value.summary
    assert summary.startswith("ImageNet (torchvision) weights need a download") and "offline mode is set" in summary
    assert "Random init" in summary and len(summary) < 120 and summary != str(error.value)
    assert str(error.value).endswith("or start from random weights (--weights none).")
    assert str(error.value.for_training()).endswith("or train from random weights (`cnnlab train --strategy scratch`).")
    assert WeightsError("one line").summary == "one line"


def test_ready_weights_load_now_offline_cached_or_reachable(monkeypatch):
    assert ready_weights(LITE0) == "shipped" and ready_weights("bn_inception") == "none"
    assert ready_weights("resnet18") == "none"  # CNNLAB_OFFLINE=1: no probe at all
    monkeypatch.delenv("CNNLAB_OFFLINE")
    asked = []
    monkeypatch.setattr(cnnlab.weights, "reachable", lambda url, timeout=0: asked.append(url) or True)
    monkeypatch.setattr(cnnlab.weights, "_answers", {})
    assert ready_weights("resnet18") == "torchvision" and ready_weights("alexnet") == "torchvision"
    assert asked == [download_source("resnet18", "torchvision").url], "one probe per host, kept a while"
    monkeypatch.setattr(cnnlab.weights, "_answers", {})
    monkeypatch.setattr(cnnlab.weights, "reachable", lambda url, timeout=0: False)
    assert ready_weights("resnet18") == "none"


def test_host_answers_are_kept_briefly(monkeypatch):
    answers = iter([False, True])
    monkeypatch.setattr(cnnlab.weights, "reachable", lambda url, timeout=0: next(answers))
    monkeypatch.setattr(cnnlab.weights, "_answers", {})
    assert host_reachable("https://example.test/a") is False and host_reachable("https://example.test/b") is False
    monkeypatch.setattr(cnnlab.weights, "REACHABLE_TTL_S", 0.0)
    assert host_reachable("https://example.test/a") is True


def test_download_source_says_where_to_copy_the_file():
    torchvision = download_source("resnet18", "torchvision")
    assert torchvision.url.startswith("https://download.pytorch.org/") and torchvision.cache.endswith(".pth")
    assert torchvision.copy_hint == f"copy resnet18-f37072fd.pth into {torchvision_cache_path('resnet18').parent}"
    timm = download_source(LITE0, "timm")
    assert "timm/" in timm.url and "hf download" in timm.fill_hint


def test_unreachable_host_is_detected_without_waiting():
    assert reachable("https://weights.invalid/model.pth", timeout=3) is False


def test_torchvision_weights_load_from_a_seeded_cache():
    state = random_state("resnet18", seed=1)
    cached = torchvision_cache_path("resnet18")
    cached.parent.mkdir(parents=True)
    torch.save(state, cached)
    assert {o.key: o.offline for o in weights_options("resnet18")}["torchvision"]
    assert default_weights("resnet18") == "torchvision"
    loaded = load_weights("resnet18", "default")
    assert loaded.weights == "torchvision"
    for key, value in loaded.model.state_dict().items():
        torch.testing.assert_close(value, state[key])


def test_torchvision_googlenet_loads_like_torchvision_does():
    """torchvision's GoogLeNet checkpoint carries the auxiliary heads, and its weights expect transform_input."""
    import torchvision

    torch.manual_seed(2)
    state = torchvision.models.googlenet(aux_logits=True, init_weights=False).state_dict()
    assert any(k.startswith("aux1.") for k in state)
    cached = torchvision_cache_path("googlenet")
    cached.parent.mkdir(parents=True)
    torch.save(state, cached)
    model = create_model("googlenet", "torchvision")
    assert model.transform_input and model.aux1 is None
    torch.testing.assert_close(model.fc.weight, state["fc.weight"])


def test_timm_weights_load_from_a_seeded_hugging_face_cache(tmp_path):
    """Seed the hub cache with the shipped weights under timm's names: timm's loader must give the same model."""
    shipped = create_model(LITE0, "shipped")
    snapshot = tmp_path / "hf" / "models--timm--tf_efficientnet_lite0.in1k" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in shipped.state_dict().items()}, str(snapshot / "model.safetensors"))
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("0" * 40)
    assert timm_cached_file(LITE0) == str(snapshot / "model.safetensors")
    from_timm = load_weights(LITE0, "timm")
    assert from_timm.weights == "timm"
    batch = image_input(sample_images()["chelsea"], get_spec(LITE0)).tensor
    with torch.inference_mode():
        torch.testing.assert_close(from_timm.model(batch), shipped(batch))


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_user_file_loads(tmp_path, suffix):
    state = random_state("mobilenet_v2", seed=3)
    path = tmp_path / f"mine{suffix}"
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save({"epoch": 4, "state_dict": state}, path)
    loaded = load_weights("mobilenet_v2", str(path))
    assert loaded.weights == str(path) and loaded.num_classes == 1000 and not loaded.notes
    torch.testing.assert_close(loaded.model.classifier[1].weight, state["classifier.1.weight"])


def test_user_file_with_another_class_count_is_built_with_it(tmp_path):
    state = random_state("resnet18", seed=4, num_classes=10)
    path = tmp_path / "ten.pth"
    torch.save(state, path)
    loaded = load_weights("resnet18", str(path))
    assert loaded.num_classes == 10 and loaded.model.fc.out_features == 10
    assert "10-class classifier" in loaded.notes[0]
    torch.testing.assert_close(loaded.model.fc.weight, state["fc.weight"])
    assert create_model("resnet18", str(path), num_classes=3).fc.out_features == 3


def test_user_file_that_does_not_fit_is_refused_naming_every_key(tmp_path):
    state = random_state("lenet5")
    state["c1.0.weight"] = torch.zeros(6, 3, 5, 5)
    del state["c3.0.bias"]
    state["extra.weight"] = torch.zeros(2)
    path = tmp_path / "wrong.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError) as error:
        load_weights("lenet5", str(path))
    message = str(error.value)
    assert "missing keys: c3.0.bias;" in message and "unexpected keys: extra.weight;" in message
    assert "shape mismatches: c1.0.weight [6, 3, 5, 5] (model needs [6, 1, 5, 5])" in message


class RunsCode:
    marker = None

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_checkpoint_whose_unpickling_runs_code_is_refused_and_runs_nothing(tmp_path, writer):
    RunsCode.marker = tmp_path / "marker"
    payload = {"fc.weight": torch.zeros(2, 2), "fc.bias": RunsCode()}
    path = tmp_path / "evil.pth"
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    with pytest.raises(WeightsError, match="evil.pth holds pickled Python objects.*refused"):
        load_weights("resnet18", str(path))
    assert not RunsCode.marker.exists()


def test_bad_weights_arguments_are_refused(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_weights("resnet18", str(tmp_path / "absent.pth"))
    (tmp_path / "notes.pth").write_text("these are my notes, not weights")
    with pytest.raises(WeightsError, match="^notes.pth is not a PyTorch weights file"):
        load_weights("resnet18", str(tmp_path / "notes.pth"))
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(WeightsError, match=r"^other.pth does not fit LeNet-5 \(lenet5\): "):
        load_weights("lenet5", str(tmp_path / "other.pth"))
    with pytest.raises(WeightsError, match="unknown weights 'imagenet'"):
        load_weights("resnet18", "imagenet")
    with pytest.raises(WeightsError, match="unknown weights 'shipped'"):
        load_weights("resnet18", "shipped")
    tensor_only = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor_only)
    with pytest.raises(WeightsError, match="holds a Tensor, not a state dict"):
        load_weights("resnet18", str(tensor_only))
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not safetensors at all")
    with pytest.raises(WeightsError, match="cannot load garbage.safetensors"):
        load_weights("resnet18", str(garbage))


def test_create_model_keeps_its_contract():
    model = create_model(LITE0, "shipped", num_classes=3)
    assert model.classifier.out_features == 3 and not model.training
    assert create_model("lenet5", "none").output.out_features == 10
    assert {n for n in arch_names() if get_spec(n).shipped_weights} == {LITE0, LITE2}


def test_weights_are_named_in_a_few_words(tmp_path):
    from cnnlab.weights import weights_label

    (tmp_path / "29e5f3516a3c").mkdir()
    assert weights_label("shipped") == "shipped weights"
    assert weights_label(str(tmp_path / "29e5f3516a3c")) == "your run 29e5f3516a3c"
    assert weights_label(str(tmp_path / "mine.pth")) == "weights from mine.pth"
