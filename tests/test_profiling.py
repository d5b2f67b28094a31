import pytest
import torch
from torch import nn

from cnnlab.profiling import conv_formula, profile_arch, profile_model
from cnnlab.registry import arch_names, build_model, get_spec

TORCHVISION = [n for n in arch_names() if get_spec(n).reference_macs]


@pytest.mark.parametrize("name", TORCHVISION)
def test_macs_match_torchvision_published_ops(name):
    profile = profile_arch(name)
    assert profile.macs == pytest.approx(get_spec(name).reference_macs, rel=0.01)
    assert profile.flops == 2 * profile.macs


@pytest.mark.parametrize("name", arch_names())
def test_rows_sum_to_totals(name):
    profile = profile_arch(name)
    assert sum(r.params for r in profile.rows) == profile.params
    assert sum(r.macs for r in profile.rows) == profile.macs
    assert profile.output_shape == (1, get_spec(name).num_classes)
    # every multiply-accumulate is counted in a leaf layer, and each convolution run once counts exactly what
    # the lecture's formula (H x W x Cout) x (k x k x Cin) gives for it
    assert all(r.macs == 0 for r in profile.rows if r.type.endswith("(own)"))
    with torch.device("meta"):
        modules = dict(build_model(name).named_modules())
    convs = [r for r in profile.rows if r.type == "Conv2d" and r.calls == 1]
    assert convs and all(conv_formula(modules[r.name], r.output_shape)[1] == r.macs for r in convs)


@pytest.mark.parametrize("name, depth", [("alexnet", 8), ("vgg16", 16), ("vgg19", 19), ("googlenet", 22),
                                         ("resnet18", 18), ("resnet50", 50), ("densenet121", 121), ("lenet5", 5)])
def test_depth_is_the_published_layer_count(name, depth):
    assert profile_arch(name).depth == depth


@pytest.mark.parametrize("name, depth", [("lenet5", 5 + 2), ("alexnet", 8 + 3 + 1), ("vgg16", 16 + 5 + 1)])
def test_depth_with_pooling_adds_the_pooling_layers_of_a_plain_chain(name, depth):
    # LeNet-5's S2 and S4; AlexNet's and VGG's max-pools and torchvision's adaptive average pool before the FCs
    assert profile_arch(name).depth_with_pooling == depth


@pytest.mark.parametrize("name", ["googlenet", "resnet50", "tf_efficientnet_lite0", "inception_v3"])
def test_conv_formulas_agree_with_the_counter(name):
    profile = profile_arch(name)
    model_convs = {n: m for n, m in build_model_meta(name).named_modules() if isinstance(m, nn.Conv2d)}
    checked = 0
    for row in profile.rows:
        if row.name in model_convs and row.calls == 1:
            text, macs = conv_formula(model_convs[row.name], row.output_shape)
            assert macs == row.macs, row.name
            assert row.formula == text
            checked += 1
    assert checked > 10


def build_model_meta(name):
    with torch.device("meta"):
        return build_model(name)


def test_lecture_formula_form():
    conv = nn.Conv2d(480, 48, 5, padding=2)
    text, macs = conv_formula(conv, (1, 48, 14, 14))
    assert text == "(14x14x48) x (5x5x480) = 112.9M"
    assert macs == 112_896_000


def test_input_size_changes_operations_quadratically():
    base, double = profile_arch("resnet18"), profile_arch("resnet18", 448)
    conv_macs = sum(r.macs for r in base.rows if r.type == "Conv2d")
    assert sum(r.macs for r in double.rows if r.type == "Conv2d") == 4 * conv_macs
    assert double.params == base.params


def test_real_model_frozen_layers_and_no_side_effects():
    model = build_model("resnet18").train()
    for p in model.layer1.parameters():
        p.requires_grad_(False)
    frozen = sum(p.numel() for p in model.layer1.parameters())
    x = torch.randn(1, 3, 224, 224)
    profile = profile_model(model, x)
    assert profile.frozen_params == frozen
    assert profile.trainable_params == profile.params - frozen
    assert model.training, "the model's mode is restored"
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    model.eval()
    with torch.inference_mode():
        assert torch.equal(model(x), model(x))


def test_rows_follow_the_data_with_a_parents_own_row_before_its_children():
    rows = [r for r in profile_arch("tf_efficientnet_lite0").rows]
    names = [r.name for r in rows]
    assert names[:4] == ["conv_stem", "bn1", "bn1.drop", "bn1.act"]
    own = rows[1]
    assert own.type == "BatchNormAct2d (own)" and own.params == 2 * 32 and own.output_shape == (1, 32, 112, 112)
    assert names.index("bn2") == names.index("conv_head") + 1
    last_ran = names.index("classifier")
    assert all(r.calls == 0 for r in rows[last_ran + 1:]) and all(r.calls for r in rows[:last_ran + 1])
    assert all(r.output_shape is not None for r in rows if r.type.endswith("(own)"))


def test_auxiliary_classifier_counts_params_but_no_operations():
    profile = profile_arch("inception_v3")
    aux = [r for r in profile.rows if r.name.startswith("AuxLogits")]
    assert sum(r.params for r in aux) > 3_000_000
    assert all(r.calls == 0 and r.macs == 0 for r in aux)
    assert [r.name for r in profile.rows[-len(aux):]] == [r.name for r in aux], "modules that never ran come last"


def test_concurrent_profiles_do_not_mix_their_counts():
    """Two dashboard sessions profile at once: each count must be its own network's."""
    import threading

    from cnnlab.registry import example_input

    expected = {"resnet50": 4_089_184_256, "vgg16": 15_470_264_320, "googlenet": 1_498_376_192}
    measured, errors = {}, []

    def profile(arch: str, attempt: int) -> None:
        try:
            with torch.device("meta"):
                model = build_model(arch, 1000)
            measured[arch, attempt] = profile_model(model, example_input(get_spec(arch), device="meta")).macs
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=profile, args=(arch, attempt)) for attempt in range(3) for arch in expected]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert measured == {(arch, attempt): macs for attempt in range(3) for arch, macs in expected.items()}


def test_counts_stay_exact_while_another_thread_runs_a_network():
    """Two dashboard sessions: one counts a plan's MACs while another runs Predict. FlopCounterMode's module
    hooks are process-wide, so without care the other thread's modules took this count's operations."""
    import threading

    alone = profile_arch("tf_efficientnet_lite0")
    stop = threading.Event()

    def predict_in_a_loop():
        model = build_model("resnet18").eval()
        with torch.no_grad():
            while not stop.is_set():
                model(torch.randn(1, 3, 64, 64))

    other = threading.Thread(target=predict_in_a_loop)
    other.start()
    try:
        counts = [profile_arch("tf_efficientnet_lite0") for _ in range(3)]
    finally:
        stop.set()
        other.join()
    assert all(p.macs == alone.macs == 385_187_552 for p in counts)
    assert all([r.macs for r in p.rows] == [r.macs for r in alone.rows] for p in counts)


def test_architecture_rows_are_measured_once_and_kept_in_the_data_directory(monkeypatch):
    from cnnlab import compare

    compare._architecture_rows.cache_clear()
    rows = compare.architecture_rows()
    googlenet = next(row for row in rows if row["name"] == "googlenet")
    assert googlenet["params"] == profile_arch("googlenet").params and googlenet["input_size"] == [3, 224, 224]
    assert compare._rows_file().is_file()

    compare._architecture_rows.cache_clear()
    monkeypatch.setattr(compare, "_measure_rows", lambda: pytest.fail("measured again"))
    assert compare.architecture_rows() == rows, "another process reads the kept rows"

    compare._rows_file().write_text("{damaged")
    compare._architecture_rows.cache_clear()
    monkeypatch.setattr(compare, "_measure_rows", lambda: rows[:1])
    assert compare.architecture_rows() == rows[:1], "a damaged file is measured again"
    compare._architecture_rows.cache_clear()
