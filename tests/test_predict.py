"""Predictions with the shipped Lite0 weights on the sample photos: the library, the CLI and the Predict page."""
import json
import pickle
import re
from pathlib import Path

import pytest
import skimage.data
import torch
from PIL import Image
from safetensors.torch import save_file
from streamlit.testing.v1 import AppTest

from cnnlab.cli import main
from cnnlab.images import image_input, sample_images
from cnnlab.predict import imagenet_class_names, label_set, load_for_prediction, predict, predict_image
from cnnlab.registry import get_spec
from cnnlab.training import make_config, run
from cnnlab.weights import WeightsError, create_model
from tests.test_images import encode, png_header_only

APP = str(Path(__file__).resolve().parents[1] / "app.py")
DOMESTIC_CATS = {281, 282, 283, 284, 285}
ESPRESSO = 967
LAUNCH = {657, 744, 812}  # missile, projectile, space shuttle


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("CNNLAB_OFFLINE", "1")


def test_imagenet_class_names_come_from_torchvision():
    names = imagenet_class_names()
    assert len(names) == 1000 and names[285] == "Egyptian cat" and names[ESPRESSO] == "espresso"


def test_defaults_predict_the_sample_photos():
    cat = predict_image(sample_images()["chelsea"], top=5)
    assert cat.arch == "tf_efficientnet_lite0" and cat.weights == "shipped"
    indices = [p.index for p in cat.predictions]
    assert indices[0] in DOMESTIC_CATS and 285 in indices[:3]
    assert sum(p.probability for p in cat.predictions if p.index in DOMESTIC_CATS) > 0.9
    probabilities = [p.probability for p in cat.predictions]
    assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1 + 1e-6
    model = load_for_prediction().model
    coffee, rocket = (predict(model, image_input(sample_images()[name], get_spec(cat.arch)).tensor)
                      for name in ("coffee", "rocket"))
    assert coffee[0].label == "espresso" and coffee[0].probability > 0.9
    assert rocket[0].index in LAUNCH


def test_random_weights_are_flagged():
    result = predict_image(sample_images()["chelsea"], "resnet18", "none", top=3)
    assert len(result.predictions) == 3 and "noise" in result.notes[-1]


def test_predict_refuses_a_model_in_training_mode():
    model = create_model("lenet5", "none").train()
    batch = image_input(sample_images()["chelsea"], get_spec("lenet5")).tensor
    with pytest.raises(ValueError, match="eval mode"):
        predict(model, batch)


def test_cli_predict_json(capsys):
    assert main(["predict", str(sample_images()["coffee"]), "--top", "3", "--json"]) == 0
    output = json.loads(capsys.readouterr().out)
    assert output["weights"] == "shipped" and len(output["predictions"]) == 3
    assert output["predictions"][0]["index"] == ESPRESSO and output["predictions"][0]["label"] == "espresso"
    direct = predict_image(str(sample_images()["coffee"]), top=3).predictions
    assert [p["probability"] for p in output["predictions"]] == pytest.approx([p.probability for p in direct],
                                                                             abs=1e-6), "unrounded"


def test_cli_predict_table(capsys):
    assert main(["predict", str(sample_images()["chelsea"])]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "tf_efficientnet_lite0 with shipped weights" and len(lines) == 2 + 5
    assert int(lines[2].split()[1]) in DOMESTIC_CATS
    assert re.fullmatch(r"0\.\d{4}", lines[2].split()[-1]), "the table rounds to 4 decimals"


class RunsCode:
    marker = None

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def bad_inputs(tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("not a picture")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(encode(Image.fromarray(skimage.data.chelsea()), "JPEG")[:5000])
    huge = tmp_path / "huge.png"
    huge.write_bytes(png_header_only(30000, 30000))
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    RunsCode.marker = tmp_path / "marker"
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"fc.weight": RunsCode()}))
    chelsea = str(sample_images()["chelsea"])
    return {
        "text": ([str(text)], "not an image"),
        "cut": ([str(cut)], "truncated or corrupt"),
        "bomb": ([str(huge)], "declares 900 megapixels; the limit is 40"),
        "empty": ([str(empty)], "is empty"),
        "missing": ([str(tmp_path / "absent.png")], "no such file"),
        "offline": ([chelsea, "--arch", "resnet50"], "download.pytorch.org|offline mode"),
        "no pretrained": ([chelsea, "--arch", "bn_inception"], "no pretrained weights exist"),
        "evil": ([chelsea, "--arch", "resnet18", "--weights", str(evil)], "pickled Python objects"),
        "top": ([chelsea, "--top", "0"], "must be greater than zero"),
        "arch": ([chelsea, "--arch", "vgg99"], "unknown architecture"),
    }


def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys):
    for case, (args, expected) in bad_inputs(tmp_path).items():
        assert main(["predict", *args]) == 2, case
        captured = capsys.readouterr()
        assert captured.out == "", case
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("cnnlab: error: "), (case, captured.err)
        assert re.search(expected, lines[0]), (case, lines[0])
    assert not RunsCode.marker.exists()


def open_predict_page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("pages/predict.py")
    at.run()
    assert not at.exception
    return at


def top_class(at: AppTest) -> str:
    assert not at.exception and not at.error, [e.value for e in at.error]
    return at.metric[0].value


def test_page_predicts_the_cat_by_default_and_other_samples():
    at = open_predict_page()
    assert at.selectbox(key="predict_arch").value == "tf_efficientnet_lite0"
    assert at.selectbox(key="predict_weights_tf_efficientnet_lite0").value == "shipped"
    assert at.selectbox(key="predict_image_sample").value == "chelsea"
    assert top_class(at) in {imagenet_class_names()[i] for i in DOMESTIC_CATS}
    assert len(at.get("plotly_chart")) == 1 and len(at.get("image")) == 1
    assert any("ImageNet-1k has no 'person' class" in c.value and "a tabby, a tiger cat" in c.value
               for c in at.caption), "what a student needs to read the astronaut's and the cat's answers"
    at.selectbox(key="predict_image_sample").set_value("coffee").run()
    assert top_class(at) == "espresso" and not at.info, "a photo of a usual size needs no word on its size"
    at.selectbox(key="predict_image_sample").set_value("digit").run()
    assert not at.exception and [i.value for i in at.info] == [
        "This 8x8 image is enlarged 28x to the network's 224 px, and the answer is one of the 1000 ImageNet-1k "
        "classes whatever it shows. A network trained on images like it (a run of yours, under Weights) answers in "
        "their classes."]


def test_page_takes_an_upload_and_refuses_bad_ones():
    at = open_predict_page()
    uploader = at.file_uploader(key="predict_image_upload")
    uploader.set_value(("mug.webp", encode(Image.open(sample_images()["coffee"]), "WEBP", quality=90),
                        "image/webp")).run()
    assert top_class(at) == "espresso"
    for name, data, expected in [("notes.jpg", b"not a picture", "not an image"),
                                 ("notes.txt", b"a text file", "notes.txt is not an image cnnlab can read"),
                                 ("huge.png", png_header_only(30000, 30000), "declares 900 megapixels; the limit is 40"),
                                 ("empty.png", b"", "is empty")]:
        at.file_uploader(key="predict_image_upload").set_value((name, data, "image/png")).run()
        assert not at.exception and len(at.error) == 1 and expected in at.error[0].value, name
        assert not at.metric and [i.value.startswith("No prediction: the uploaded file") for i in at.info] == [True]


def test_look_inside_opens_on_the_same_network_weights_and_image():
    at = open_predict_page()
    at.selectbox(key="predict_image_sample").set_value("coffee").run()
    next(b for b in at.button if b.label == "Look inside").click().run()
    assert not at.exception, at.exception
    assert at.selectbox(key="inside_image_sample").value == "coffee"
    assert at.selectbox(key="inside_weights_tf_efficientnet_lite0").value == "shipped"
    assert "espresso" in next(m.value for m in at.markdown if m.value.startswith("**Top prediction:**"))

    at.switch_page("pages/predict.py").run()
    mug = encode(Image.open(sample_images()["coffee"]).rotate(90, expand=True), "PNG")
    at.file_uploader(key="predict_image_upload").set_value(("mug.png", mug, "image/png")).run()
    next(b for b in at.button if b.label == "Look inside").click().run()
    assert not at.exception, at.exception
    assert "Showing **mug.png**, uploaded earlier." in [c.value for c in at.caption], "the upload, not the sample"


def test_a_tall_strip_of_an_upload_keeps_its_caption_readable():
    at = open_predict_page()
    strip = encode(Image.new("RGB", (40, 3000), "red"), "PNG")
    at.file_uploader(key="predict_image_upload").set_value(("tall.png", strip, "image/png")).run()
    assert not at.exception and "tall.png (40x3000)" in [c.value for c in at.caption]
    assert all(caption in ("", None) for image in at.get("image") for caption in image.captions)


def test_an_upload_is_still_there_after_a_visit_to_another_page_until_it_is_put_aside():
    at = open_predict_page()
    mug = encode(Image.open(sample_images()["coffee"]), "PNG")
    at.file_uploader(key="predict_image_upload").set_value(("mug.png", mug, "image/png")).run()
    assert top_class(at) == "espresso"
    at.switch_page("pages/home.py")
    at.run()
    at.switch_page("pages/predict.py")
    at.run()
    assert at.file_uploader(key="predict_image_upload").value is None, "Streamlit forgets it: the page keeps it"
    assert top_class(at) == "espresso" and any("Showing **mug.png**, uploaded earlier" in c.value for c in at.caption)
    assert at.selectbox(key="predict_image_sample").disabled
    at.button(key="predict_image_forget").click().run()
    assert top_class(at) in {imagenet_class_names()[i] for i in DOMESTIC_CATS}, "back to the sample, the cat"
    assert not at.selectbox(key="predict_image_sample").disabled

    at.file_uploader(key="predict_image_upload").set_value(("mug.png", mug, "image/png")).run()
    at.file_uploader(key="predict_image_upload").set_value(None).run()  # removed with its chip's x
    assert top_class(at) in {imagenet_class_names()[i] for i in DOMESTIC_CATS}
    assert not any("uploaded earlier" in c.value for c in at.caption)


def test_page_starts_offline_architectures_at_random_init_with_one_info_line():
    at = open_predict_page()
    at.selectbox(key="predict_arch").set_value("resnet18").run()
    assert not at.exception and not at.error and at.get("plotly_chart")
    assert not at.metric, "random weights' top class is no headline"
    assert at.selectbox(key="predict_weights_resnet18").value == "none"
    assert len(at.info) == 1 and "need a download" in at.info[0].value
    assert "resnet18-f37072fd.pth" in at.info[0].value and "\n" not in at.info[0].value
    assert "noise" in at.warning[0].value and "or train it on the Launch page" in at.warning[0].value


def test_page_download_choice_offline_is_a_one_line_error_with_details():
    at = open_predict_page()
    at.selectbox(key="predict_arch").set_value("alexnet").run()
    at.selectbox(key="predict_weights_alexnet").set_value("torchvision").run()
    assert not at.exception and len(at.error) == 1 and not at.metric
    error = at.error[0].value
    assert "Random init" in error and "'none'" not in error and "\n" not in error and len(error) < 120
    assert [e.label for e in at.expander] == ["Details"]
    details = " ".join(m.value for m in at.markdown)
    assert "not in the cache" in details and "tf_efficientnet_lite0 (shipped)" in details
    assert "random weights (--weights none)" in details


def test_page_names_lenet_digits_without_tuples():
    at = open_predict_page()
    at.selectbox(key="predict_arch").set_value("lenet5").run()
    assert not at.exception and not at.error and not at.metric  # random weights: the chart, no headline
    texts = [c.value for c in at.caption] + [m.value for m in at.markdown]
    assert not [t for t in texts if re.search(r"\(\d[\d., ]*,\)|\(\d+\.\d+, ", t)], texts
    assert not [t for t in texts if "ImageNet classes" in t or "class 1 (1)" in t]
    assert any("Classes: the digits 0-9 (MNIST)" in t and "mean 0.5 and std 0.5" in t for t in texts), texts
    chart = json.loads(at.get("plotly_chart")[0].proto.spec)
    bars = chart["data"][0]
    assert all(len(label) == 1 and label in "0123456789" for label in bars["y"])
    assert bars["textangle"] == 0 and chart["layout"]["yaxis"]["type"] == "category"


def test_page_loads_an_uploaded_checkpoint_or_refuses_it(tmp_path):
    shipped = create_model("tf_efficientnet_lite0", "shipped")
    path = tmp_path / "lite0.safetensors"
    save_file({k: v.contiguous() for k, v in shipped.state_dict().items()}, str(path))
    at = open_predict_page()
    at.selectbox(key="predict_weights_tf_efficientnet_lite0").set_value("upload").run()
    assert not at.exception and not at.metric
    at.file_uploader(key="predict_weights_file").set_value(("lite0.safetensors", path.read_bytes(), "")).run()
    assert top_class(at) in {imagenet_class_names()[i] for i in DOMESTIC_CATS}
    RunsCode.marker = tmp_path / "marker"
    evil = pickle.dumps({"classifier.weight": RunsCode(), "classifier.bias": torch.zeros(1000)})
    at.file_uploader(key="predict_weights_file").set_value(("evil.pth", evil, "")).run()
    assert not at.exception and at.error[0].value.startswith("evil.pth holds pickled Python objects")
    assert at.error[0].icon == ":material/error:", "not the icon of a missing download"
    assert not RunsCode.marker.exists()


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """LeNet-5 trained from scratch on the digits: a real run folder with its checkpoint."""
    out = tmp_path_factory.mktemp("runs") / "lenet-digits"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CNNLAB_HOME", str(tmp_path_factory.mktemp("home")))
        run(make_config("scratch", "lenet5", "digits", epochs=6, device="cpu"), out_dir=out)
    return out


def test_a_runs_model_predicts_the_classes_it_learned(digits_run):
    digit = sample_images()["digit"]
    result = predict_image(digit, "lenet5", str(digits_run), top=3)
    assert result.predictions[0].label == "3" and result.predictions[0].probability > 0.5
    assert any("on digits (10 classes)" in note for note in result.notes), result.notes
    loaded = load_for_prediction("lenet5", str(next((digits_run / "checkpoints").iterdir())))
    assert label_set(loaded).names == tuple("0123456789") and "trained on" in label_set(loaded).title
    with pytest.raises(WeightsError, match="holds a trained lenet5, not resnet18"):
        predict_image(digit, "resnet18", str(digits_run))
    with pytest.raises(WeightsError, match="holds no checkpoint"):
        predict_image(digit, "lenet5", str(digits_run / "checkpoints"))


def test_cli_predicts_with_a_run_folder_as_its_architecture(digits_run, capsys):
    assert main(["predict", str(sample_images()["digit"]), "--weights", str(digits_run), "--json"]) == 0
    output = json.loads(capsys.readouterr().out)
    assert output["arch"] == "lenet5" and output["predictions"][0]["label"] == "3"
    assert main(["predict", str(sample_images()["digit"]), "--weights", str(digits_run), "--top", "50"]) == 0
    printed = capsys.readouterr()
    assert len(printed.out.splitlines()) == 2 + 10, "a header line, the table's head and ten digits"
    assert "note: the model knows 10 classes, fewer than --top 50: all are listed" in printed.err
    assert main(["predict", str(sample_images()["digit"]), "--weights", str(digits_run), "--arch", "alexnet"]) == 2
    assert "holds a trained lenet5, not alexnet" in capsys.readouterr().err


def test_a_grayscale_network_starts_on_the_digit_and_a_chosen_photo_stays():
    at = open_predict_page()
    at.selectbox(key="predict_arch").set_value("lenet5").run()
    assert at.selectbox(key="predict_image_sample").value == "digit", "LeNet-5 reads digits, not the cat"
    at.selectbox(key="predict_arch").set_value("tf_efficientnet_lite0").run()
    assert at.selectbox(key="predict_image_sample").value == "chelsea"
    at.selectbox(key="predict_image_sample").set_value("coffee").run()
    at.selectbox(key="predict_arch").set_value("lenet5").run()
    assert at.selectbox(key="predict_image_sample").value == "coffee", "a photo the user picked is kept"
    assert not at.exception
