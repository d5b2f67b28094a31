"""The 'Look inside' page driven through Streamlit's AppTest: sample photo, layer browser, CAM, side by side."""
import json
import re
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


def labelled(at: AppTest, label: str):
    """The one selectbox whose label starts with `label` (the layer list and class box change keys)."""
    found = [s for s in at.selectbox if s.label.startswith(label)]
    assert len(found) == 1, [s.label for s in at.selectbox]
    return found[0]


def channels_box(at: AppTest):
    return labelled(at, "Channels shown")


def layer_list(at: AppTest):
    return labelled(at, "Layer (index")


def test_sample_photo_shows_predictions_maps_filters_and_cam(page):
    assert page.title[0].value == "Look inside"
    assert any("Top prediction:** tiger cat" in m.value for m in page.markdown)
    shown = captions(page)
    assert "chelsea.png (451x300)" in shown
    assert any(c.startswith("32 of 32 channels of conv_stem") for c in shown)
    assert any(c.startswith("stage 5 (blocks.5 … bn2): channel") and "of 1280, 7x7" in c
               for c in shown), "depth overview, last stage, named as the freeze menu names it"
    assert any("HiResCAM for 'tiger cat'" in c and "at bn2" in c for c in shown)
    assert any("conv_stem: 32 filters of 3x3x3" in c.value and "only 9 pixels per channel" in c.value
               for c in page.caption)
    assert len(page.get("plotly_chart")) >= 1


def test_changing_the_layer_by_list_or_slider_updates_the_browser(page):
    slider = f"inside_layer_slider_{LITE0}"
    assert metrics(page)["Output"] == "32x112x112"
    layer_list(page).set_value(24).run()
    assert not page.exception
    assert page.slider(key=slider).value == 24 and layer_list(page).value == 24
    assert metrics(page)["Stage"] == "stage 3"  # numbered as Launch numbers the stages
    assert next(m for m in page.metric if m.label == "Stage").help.startswith("Modules blocks.2, numbered as Launch")
    page.slider(key=slider).set_value(len(layer_list(page).options) - 1).run()
    assert not page.exception
    assert layer_list(page).value == len(layer_list(page).options) - 1
    assert metrics(page)["Output"] == "1000" and metrics(page)["Stage"] == "head"
    assert any("vector of 1,000 values, not maps: the 10 largest, one per class" in c.value for c in page.caption)
    specs = [json.loads(chart.proto.spec) for chart in page.get("plotly_chart")]
    bars = next(spec["data"][0] for spec in specs
                if spec["layout"].get("xaxis", {}).get("title", {}).get("text") == "Logit (before softmax)")
    top = page.markdown  # the page's own top prediction, as 'Top prediction: tiger cat (39.3%)'
    named = next(m.value for m in top if "Top prediction:" in m.value).split("**")[-1].strip().rsplit(" (", 1)[0]
    assert bars["y"][-1].startswith(named + " ("), (bars["y"][-1], named)
    assert not [s for s in page.selectbox if s.label.startswith("Channels shown")], "a vector has no channels"
    layer_list(page).set_value(9).run()
    channels_box(page).set_value(16).run()
    assert not page.exception
    assert page.slider(key=slider).value == 9
    assert any(c.startswith("16 of 96 channels of blocks.1.0.conv_dw") for c in captions(page))


@pytest.mark.parametrize("list_first", [True, False], ids=["list-first", "slider-first"])
def test_slider_steps_are_not_undone_by_a_stale_layer_list(page, list_first):
    """Quick arrow-key presses rerun the page with the slider's new value while the browser still holds the
    layer list it had before the previous rerun: that stale list must not drag the slider back (it used to,
    dropping keypresses). AppTest always sends its latest tree, so the browser's stale list state is put back
    by hand, through AppTest's private `_tree` and `_run`; the browser sends the list (drawn first) first."""
    slider_key = f"inside_layer_slider_{LITE0}"
    stale = layer_list(page)._widget_state  # the list as the browser still has it: layer 0
    for step in range(1, 5):
        page.slider(key=slider_key).set_value(step)
        current = layer_list(page).id
        states = page._tree.get_widget_states()
        kept = [w for w in states.widgets if w.id != current]
        del states.widgets[:]
        states.widgets.extend([stale, *kept] if list_first else [*kept, stale])
        page._run(states)
        assert not page.exception, page.exception
        assert page.slider(key=slider_key).value == step
        assert layer_list(page).value == step
        shown = layer_list(page).options[step].split(" · ")[1].split(" ")[0]
        assert any(f"channels of {shown}," in c for c in captions(page)), "the maps follow the slider"


def test_a_stale_layer_label_from_the_browser_is_ignored(page):
    """After the weights change the layers' shapes (a run trained at 64 px), the browser sent the list's old
    label instead of its index, which reached the slider and crashed the page."""
    stale = layer_list(page).options[0]  # '  0 · conv_stem (Conv2dSame) 32x112x112 · stage 1 (…)'
    page.session_state[f"inside_layer_moves_{LITE0}"] = {f"inside_layer_{LITE0}_224": stale}
    page.run()
    assert not page.exception, page.exception
    assert page.slider(key=f"inside_layer_slider_{LITE0}").value == 0 and layer_list(page).value == 0


def test_channel_choices_follow_the_layer(page):
    top = channels_box(page)
    assert metrics(page)["Output"] == "32x112x112"
    assert top.options == ["Top 16", "All 32"], "no 'Top 64' (or larger) for a 32-channel layer"
    assert top.value == "all"
    layer_list(page).set_value(9).run()  # 96 channels: the default top 64 applies
    assert channels_box(page).options == ["Top 16", "Top 32", "Top 64", "All 96"]
    assert channels_box(page).value == 64
    channels_box(page).set_value("all").run()
    assert any(c.startswith("96 of 96 channels") for c in captions(page))
    layer_list(page).set_value(0).run()
    assert channels_box(page).value == "all"
    assert any(c.startswith("32 of 32 channels of conv_stem") for c in captions(page))


def test_cam_for_a_chosen_class(page):
    labelled(page, "Class").set_value(967).run()
    assert not page.exception
    assert any("for 'espresso' (class 967" in c for c in captions(page))
    page.radio(key="inside_cam_method").set_value("gradcam").run()
    assert any(c.startswith("Grad-CAM for 'espresso'") for c in captions(page))
    assert labelled(page, "Class").value == 967


def test_cam_class_box_follows_the_image(page):
    box = labelled(page, "Class")
    assert box.value == -1 and box.format_func(box.value) == "Top prediction: tiger cat"
    page.selectbox(key="inside_image_sample").set_value("coffee").run()
    assert not page.exception
    box = labelled(page, "Class")
    assert box.value == -1 and box.format_func(box.value) == "Top prediction: espresso"
    assert box.options[box.index] == "Top prediction: espresso"
    assert any(c.startswith("HiResCAM for 'espresso'") for c in captions(page))
    page.radio(key="inside_cam_method").set_value("gradcam").run()
    box = labelled(page, "Class")
    assert box.value == -1 and box.options[box.index] == "Top prediction: espresso", "not 'Choose an option'"
    assert any(c.startswith("Grad-CAM for 'espresso'") for c in captions(page))


def test_cam_notes_when_the_methods_coincide(page):
    notes = [c.value for c in page.caption if "HiResCAM and Grad-CAM give the same map at bn2" in c.value]
    assert notes and "global average pooling and a linear layer" in notes[0]
    page.selectbox(key=f"inside_cam_layer_{LITE0}").set_value("blocks.4").run()
    assert not page.exception
    assert any("At blocks.4 the two methods differ" in c.value for c in page.caption)


def test_side_by_side_default_is_the_network_and_one_more(page):
    # EfficientNet-Lite2 is the other network with ImageNet weights offline: both pretrained, both see the cat
    assert page.multiselect(key="inside_side_archs").value == [LITE0, "tf_efficientnet_lite2"]
    headers = [m.value for m in page.markdown if m.value.startswith("**")]
    assert any(h.startswith("**EfficientNet-Lite2** (shipped weights)  \ntop: Egyptian cat") for h in headers), headers
    page.multiselect(key="inside_side_archs").set_value([LITE0, "resnet18"]).run()
    headers = [m.value for m in page.markdown if m.value.startswith("**")]
    assert any(h.startswith("**ResNet-18** (random weights) :orange-badge[") for h in headers)


def test_side_by_side_shows_each_network_stage_by_stage(page):
    page.multiselect(key="inside_side_archs").set_value([LITE0, "resnet18", "lenet5"]).run()
    assert not page.exception
    headers = [m.value for m in page.markdown if m.value.startswith("**")]
    assert any("EfficientNet-Lite0** (shipped weights)" in h and "top: tiger cat" in h for h in headers)
    assert any("ResNet-18** (random weights)" in h and "untrained" in h and "meaningless guess" in h
               for h in headers)
    assert any("LeNet-5** (random weights)" in h for h in headers)
    assert any(c.startswith("HiResCAM for") and c.endswith("at layer4 (random weights)") for c in captions(page))
    shown = captions(page)
    assert any(c.startswith("stage 5 (layer4): 512x7x7") for c in shown)
    assert any(c.startswith("stage 5 (blocks.5 … bn2): 1280x7x7") for c in shown)
    assert any(c.startswith("stage 1 (c1): 6x28x28") for c in shown)
    assert any(c.endswith("over the input") for c in shown)


@pytest.mark.parametrize("arch, stage", [("lenet5", "stage 1 (c1)"), ("lecture_cnn", "stage 1 (conv_1 … maxpool_1)")])
def test_grayscale_and_binary_networks_with_random_weights(page, arch, stage):
    page.selectbox(key="inside_arch").set_value(arch).run()
    page.selectbox(key=f"inside_weights_{arch}").set_value("none").run()
    assert not page.exception, page.exception
    assert any("Random weights" in i.value for i in page.info)
    assert any(m.value.startswith("**Top prediction:** :orange-badge[:material/casino: untrained] meaningless guess: ")
               for m in page.markdown), "not presented as the network's answer"
    assert any(c.startswith(f"{stage}: channel") for c in captions(page))
    names = "'[0-9]'" if arch == "lenet5" else "'class [01]'"  # LeNet-5 names its digits
    assert any(re.search(f" for {names}", c) for c in captions(page)), "a CAM for one of the network's own classes"


def test_a_stale_channels_box_from_the_browser_does_not_become_the_wish(page):
    """Stepping through layers quickly, the browser sends the 'Channels shown' value of the layer before ('All 32'
    at layer 0) with the new layer; that must not replace the wish (Top 64) on a larger layer."""
    slider_key = f"inside_layer_slider_{LITE0}"
    stale = channels_box(page)._widget_state
    page.slider(key=slider_key).set_value(9).run()
    page.slider(key=slider_key).set_value(10)
    states = page._tree.get_widget_states()
    kept = [w for w in states.widgets if w.id != stale.id]
    del states.widgets[:]
    states.widgets.extend([*kept, stale])
    page._run(states)
    assert not page.exception, page.exception
    assert channels_box(page).value == 64
    assert any(c.startswith("64 of 96 channels") for c in captions(page))
    page.slider(key=slider_key).set_value(24).run()  # 40 channels: all of them, and the wish is kept
    assert channels_box(page).value == "all"
    page.slider(key=slider_key).set_value(9).run()
    assert channels_box(page).value == 64


def test_alexnets_first_layer_says_the_lecture_counts_96_filters(page):
    page.selectbox(key="inside_arch").set_value("alexnet").run()
    page.selectbox(key="inside_weights_alexnet").set_value("none").run()
    assert not page.exception, page.exception
    shown = [c.value for c in page.caption]
    assert any(c.startswith("The lecture's AlexNet has 96 first-layer filters: torchvision follows Krizhevsky's 2014")
               for c in shown)
    assert any(c.startswith("features.0: 64 filters of 11x11x3") and "These are random weights" in c for c in shown)
