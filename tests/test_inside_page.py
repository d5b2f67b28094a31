"""The 'Look inside' page driven through Streamlit's AppTest: sample photo, layer browser, CAM, side by side."""
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")
LITE0 = "tf_efficientnet_lite0"


@pytest.fixture
def page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.switch_page("pages/inside.py")
    at.run()
    assert not at.exception, at.exception
    return at


def captions(at: AppTest) -> list[str]:
    return [caption for image in at.get("image") for caption in image.captions]


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_sample_photo_shows_predictions_maps_filters_and_cam(page):
    assert page.title[0].value == "Look inside"
    assert any("Top prediction:** tiger cat" in m.value for m in page.markdown)
    shown = captions(page)
    assert "chelsea.png (451x300)" in shown
    assert any(c.startswith("32 of 32 channels of conv_stem") for c in shown)
    assert any(c.startswith("bn2: channel") and "of 1280, 7x7" in c for c in shown), "depth overview, last stage"
    assert any("HiResCAM for 'tiger cat'" in c and "at bn2" in c for c in shown)
    assert any("conv_stem: 32 filters of 3x3x3" in c.value for c in page.caption)
    assert len(page.get("plotly_chart")) >= 1


def test_changing_the_layer_by_list_or_slider_updates_the_browser(page):
    select = f"inside_layer_{LITE0}"
    slider = f"inside_layer_slider_{LITE0}"
    assert metrics(page)["Output"] == "32x112x112"
    page.selectbox(key=select).set_value(24).run()
    assert not page.exception
    assert page.slider(key=slider).value == 24
    assert metrics(page)["Stage"] == "blocks.2"
    page.slider(key=slider).set_value(len(page.selectbox(key=select).options) - 1).run()
    assert not page.exception
    assert metrics(page)["Output"] == "1000" and metrics(page)["Stage"] == "head"
    assert any("vector of 1000 values" in i.value for i in page.info)
    page.selectbox(key="inside_top").set_value(16).run()
    page.selectbox(key=select).set_value(9).run()
    assert not page.exception
    assert any(c.startswith("16 of 96 channels of blocks.1.0.conv_dw") for c in captions(page))


def test_cam_for_a_chosen_class(page):
    page.selectbox(key=f"inside_cam_class_{LITE0}").set_value(967).run()
    assert not page.exception
    assert any("for 'espresso' (class 967" in c for c in captions(page))
    page.radio(key="inside_cam_method").set_value("gradcam").run()
    assert any(c.startswith("Grad-CAM for 'espresso'") for c in captions(page))


def test_side_by_side_shows_each_network_stage_by_stage(page):
    page.multiselect(key="inside_side_archs").set_value([LITE0, "resnet18", "lenet5"]).run()
    assert not page.exception
    headers = [m.value for m in page.markdown if m.value.startswith("**")]
    assert any("EfficientNet-Lite0** (shipped weights)" in h for h in headers)
    assert any("ResNet-18** (random weights)" in h for h in headers)
    assert any("LeNet-5** (random weights)" in h for h in headers)
    shown = captions(page)
    assert any(c.startswith("stage 5: layer4, 512x7x7") for c in shown)
    assert any(c.startswith("stage 5: bn2, 1280x7x7") for c in shown)
    assert any(c.startswith("stage 1: c1, 6x28x28") for c in shown)


@pytest.mark.parametrize("arch, stage", [("lenet5", "c1"), ("lecture_cnn", "maxpool_1")])
def test_grayscale_and_binary_networks_with_random_weights(page, arch, stage):
    page.selectbox(key="inside_arch").set_value(arch).run()
    page.selectbox(key=f"inside_weights_{arch}").set_value("none").run()
    assert not page.exception, page.exception
    assert any("Random weights" in i.value for i in page.info)
    assert any(c.startswith(f"{stage}: channel") for c in captions(page))
    assert any(" for 'class " in c for c in captions(page)), "a CAM for one of the network's own classes"
