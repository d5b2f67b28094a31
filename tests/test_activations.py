"""Feature maps, mosaics, class activation maps and `cnnlab features`, on the shipped Lite0 weights and the
sample photos."""
import copy
import json
import threading

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from cnnlab.activations import LayerInfo, extract, first_conv, layer_modules, layer_statistics, module_path
from cnnlab.cam import GRADCAM, HIRESCAM, class_activation_map, default_cam_layer
from cnnlab.cli import main
from cnnlab.images import preprocess, read_image, sample_images
from cnnlab.mosaic import (channel_means, channel_order, channel_spreads, filter_tiles, mosaic, network_view, overlay,
                           with_colorbar, write_layer_pictures)
from cnnlab.predict import predict
from cnnlab.profiling import profile_arch
from cnnlab.registry import build_model, get_spec
from cnnlab.weights import create_model

LITE0 = "tf_efficientnet_lite0"
CAT_CLASSES = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


@pytest.fixture(scope="module")
def lite0():
    return create_model(LITE0, "shipped")


@pytest.fixture(scope="module")
def chelsea():
    return read_image(sample_images()["chelsea"])


def batch_for(image, arch=LITE0):
    return preprocess(image, get_spec(arch)).unsqueeze(0)


def hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


@pytest.mark.parametrize("arch", [LITE0, "resnet18", "googlenet"])
def test_every_layer_has_the_shape_the_profiler_reports(arch, lite0, chelsea):
    model = lite0 if arch == LITE0 else build_model(arch)
    spec = get_spec(arch)
    activations = extract(model, batch_for(chelsea, arch), spec)
    profile = {row.name: row for row in profile_arch(arch).rows if row.output_shape is not None}
    last_call = {module_path(n): activations.maps[n].shape for n in activations.names}
    compared = 0
    for path, shape in last_call.items():
        if path in profile:
            assert (1,) + shape == profile[path].output_shape, path
            compared += 1
    convs = [name for name, row in profile.items() if "Conv" in row.type]
    assert set(convs) <= set(last_call), "every convolution is a layer"
    assert compared >= len(convs)
    assert [s.name for s in activations.stage_outputs()] == list(spec.stages)
    assert activations.layers[-1].name == spec.classifier and activations.layers[-1].shape == (1000,)


def test_layers_run_in_order_with_stages_and_repeated_calls(chelsea):
    spec = get_spec("resnet18")
    activations = extract(build_model("resnet18"), batch_for(chelsea, "resnet18"), spec)
    names = activations.names
    assert names[:4] == ["conv1", "bn1", "relu", "maxpool"]
    assert names.index("layer1.0.relu") < names.index("layer1.0.conv2") < names.index("layer1.0.relu#2")
    stage_of = {layer.name: layer.stage for layer in activations.layers}
    assert stage_of["conv1"] == "relu" and stage_of["maxpool"] == "layer1" and stage_of["fc"] == "head"
    assert [layer.index for layer in activations.layers] == list(range(len(names)))
    first = activations.layers[0]  # the layer first, its stage last: what a narrow box cuts
    assert first.label.startswith("  0 · conv1 (Conv2d) 64x112x112 · ") and first.label.endswith(first.stage_label)


def test_maps_hold_values_from_before_later_in_place_operations(chelsea):
    """ReLU(inplace=True) overwrites bn1's output and `out += identity` a block's bn2 output; the maps must keep
    the values each layer produced, on the first pass and on the faster passes after it."""
    model, spec = build_model("resnet18"), get_spec("resnet18")
    batch = batch_for(chelsea, "resnet18")
    for _ in range(2):
        maps = extract(model, batch, spec).maps
        assert (maps["bn1"] < 0).any()
        np.testing.assert_array_equal(maps["relu"], np.maximum(maps["bn1"], 0))
        np.testing.assert_allclose(maps["layer1.0.relu#2"], np.maximum(maps["layer1.0.bn2"] + maps["maxpool"], 0),
                                   atol=1e-6)


def test_extraction_leaves_the_model_unchanged(lite0, chelsea):
    batch = batch_for(chelsea)
    with torch.inference_mode():
        before = lite0(batch)
    state = {k: v.clone() for k, v in lite0.state_dict().items()}
    hooks = hook_count(lite0)
    activations = extract(lite0, batch, get_spec(LITE0))
    with torch.inference_mode():
        after = lite0(batch)
    assert torch.equal(before, after)
    np.testing.assert_allclose(activations.logits, before[0].numpy(), rtol=1e-5, atol=1e-5)
    assert hook_count(lite0) == hooks == 0
    assert not lite0.training
    assert all(torch.equal(state[k], v) for k, v in lite0.state_dict().items())
    assert not any(m.flags.writeable for m in activations.maps.values())


def test_a_forward_pass_in_another_thread_meanwhile_changes_nothing(chelsea):
    """A dashboard shares one cached model between sessions: another thread's forward pass during an extraction
    (or a CAM) must neither land in its maps nor be altered by its hooks."""
    model, spec = build_model("resnet18"), get_spec("resnet18")
    batch, other = batch_for(chelsea, "resnet18"), torch.randn(1, 3, 224, 224)
    clean = extract(model, batch, spec)
    clean_cam = class_activation_map(model, batch, spec)
    with torch.inference_mode():
        expected_other = model(other)
    seen = []

    def forward_elsewhere(_module, _inputs):
        if threading.current_thread() is threading.main_thread():
            worker = threading.Thread(target=lambda: seen.append(model(other)))
            worker.start()
            worker.join()

    handle = model.fc.register_forward_pre_hook(forward_elsewhere)
    try:
        with torch.inference_mode():
            busy = extract(model, batch, spec)
        busy_cam = class_activation_map(model, batch, spec)
    finally:
        handle.remove()
    assert len(seen) == 2
    assert all(torch.allclose(out, expected_other, atol=1e-5) for out in seen)
    assert busy.names == clean.names
    assert all(np.array_equal(busy.maps[n], clean.maps[n]) for n in clean.names)
    np.testing.assert_allclose(busy_cam.heatmap, clean_cam.heatmap, atol=1e-6)


def test_chosen_layers_only_and_unknown_layers_refused(lite0, chelsea):
    spec = get_spec(LITE0)
    activations = extract(lite0, batch_for(chelsea), spec, layers=["blocks.2", "conv_stem"])
    assert activations.names == ["conv_stem", "blocks.2"]
    assert activations.maps["blocks.2"].shape == (40, 28, 28)
    everything = extract(lite0, batch_for(chelsea), spec)
    assert [activations.info(n) for n in activations.names] == [everything.info(n) for n in activations.names]
    assert activations.info("conv_stem").stage == "blocks.0" and activations.info("conv_stem").index == 0
    np.testing.assert_array_equal(activations.maps["blocks.2"], everything.maps["blocks.2"])
    with pytest.raises(ValueError, match="no layer 'blocks.99'"):
        extract(lite0, batch_for(chelsea), spec, layers=["blocks.99"])
    with pytest.raises(ValueError, match="one image"):
        extract(lite0, torch.cat([batch_for(chelsea)] * 2), spec)


def test_pass_through_modules_are_not_layers(lite0):
    types = {type(m).__name__ for m in layer_modules(lite0, get_spec(LITE0)).values()}
    assert "Identity" not in types and "BatchNormAct2d" in types


def test_a_1x1_map_per_channel_is_a_vector_not_maps():
    def layer(shape):
        return LayerInfo(0, "avgpool", "AdaptiveAvgPool2d", "avgpool", 4, shape)

    assert layer((1024, 1, 1)).spatial is None and layer((1000,)).spatial is None  # GoogLeNet's pool, its logits
    assert layer((1024, 7, 7)).spatial == (7, 7) and layer((64, 1, 7)).spatial == (1, 7)


def test_layer_statistics_describe_each_map(lite0, chelsea):
    activations = extract(lite0, batch_for(chelsea), get_spec(LITE0))
    rows = {row["layer"]: row for row in layer_statistics(activations)}
    stem = activations.maps["bn1"]
    assert rows["bn1"]["zero_fraction"] == pytest.approx(float((stem == 0).mean()))
    assert rows["bn1"]["zero_fraction"] > 0.2, "ReLU6 zeroes a good share of the stem"
    assert rows["conv_stem"]["zero_fraction"] < 0.01
    assert rows["bn1"]["mean"] == pytest.approx(float(stem.mean()), rel=1e-4)
    assert (rows["bn2"]["channels"], rows["bn2"]["height"], rows["bn2"]["width"]) == (1280, 7, 7)
    assert rows["bn2"]["stage"] == "bn2" and rows["classifier"]["stage"] == "head"


def test_mosaic_orders_channels_by_mean_and_keeps_the_top(lite0, chelsea):
    maps = extract(lite0, batch_for(chelsea), get_spec(LITE0), layers=["blocks.1"]).maps["blocks.1"]
    means = channel_means(maps)
    picture = mosaic(maps, top=8)
    assert len(picture.channels) == 8 and picture.columns == 3
    assert list(means[list(picture.channels)]) == sorted(means, reverse=True)[:8]
    assert picture.image.dtype == np.uint8 and picture.image.ndim == 3
    everything = mosaic(maps, order="index")
    assert everything.channels == tuple(range(maps.shape[0]))
    assert with_colorbar(everything).shape[0] > everything.image.shape[0]
    per_channel = mosaic(maps, top=4, per_channel=True)
    assert (per_channel.vmin, per_channel.vmax) == (0.0, 1.0)
    assert mosaic(np.arange(10, dtype=np.float32)).channels == tuple(range(9, -1, -1)), "a vector: one tile a value"


def test_spread_order_puts_maps_that_vary_first_not_bright_even_ones(lite0, chelsea):
    maps = extract(lite0, batch_for(chelsea), get_spec(LITE0), layers=["bn2"]).maps["bn2"]
    spreads = channel_spreads(maps)
    by_spread = mosaic(maps, top=6, order="spread").channels
    assert list(spreads[list(by_spread)]) == sorted(spreads, reverse=True)[:6]
    brightest = int(channel_order(maps, "mean", top=1)[0])
    assert by_spread[0] != brightest and spreads[by_spread[0]] > 1.2 * spreads[brightest], \
        "the cat's brightest late map is an even one; the most varied shows where things are"
    even, varied = np.full((4, 4), 5.0), np.zeros((4, 4))
    varied[0, 0] = 8.0
    assert list(channel_order(np.stack([even, varied]), "spread")) == [1, 0]
    assert list(channel_order(np.stack([even, varied]), "mean")) == [0, 1]
    assert list(channel_order(np.array([0.5, 3.0, 1.0]), "spread")) == [1, 2, 0], "a vector goes by value"


def test_mosaic_text_reads_at_page_size_and_tiles_too_small_to_label_go_unlabelled(lite0, chelsea):
    from cnnlab.mosaic import DISPLAY_PX, text_px

    maps = extract(lite0, batch_for(chelsea), get_spec(LITE0), layers=["blocks.1", "bn2"]).maps
    few, many = mosaic(maps["blocks.1"]), mosaic(maps["bn2"])
    assert few.labelled and few.tile_size[1] * DISPLAY_PX / few.image.shape[1] >= 28
    assert not many.labelled, "1,280 tiles of a few pixels each on the page: numbers would cover them"
    assert text_px(2 * DISPLAY_PX) == 24 and text_px(DISPLAY_PX // 2) == 11
    bar_rows = with_colorbar(few).shape[0] - few.image.shape[0]
    assert bar_rows >= 2 * text_px(few.image.shape[1]), "the scale's numbers grow with the picture"


def test_a_small_mosaic_gets_a_scale_whose_numbers_do_not_overlap():
    from cnnlab.mosaic import DISPLAY_PX, colorbar

    digit = batch_for(read_image(sample_images()["digit"]), "lenet5")
    maps = extract(build_model("lenet5").eval(), digit, get_spec("lenet5"), ["c1"]).maps["c1"]
    picture = mosaic(maps)
    assert picture.image.shape[1] < DISPLAY_PX / 2, "six 28x28 maps: a small picture, shown stretched on the page"
    shown = with_colorbar(picture)
    assert DISPLAY_PX <= shown.shape[1] < 2 * DISPLAY_PX, "enlarged before the scale is drawn under it"
    narrow = colorbar(-0.632, 0.546, width=40, caption="activation")
    assert narrow.shape[1] > 100, "widened until its three texts fit side by side"


def test_overlay_network_view_and_filters(lite0, chelsea):
    spec = get_spec(LITE0)
    batch = batch_for(chelsea)
    view = network_view(batch, spec)
    crop = chelsea.resize((384, 256), Image.BICUBIC).crop((80, 16, 304, 240))
    assert view.shape == (224, 224, 3)
    assert np.abs(view.astype(int) - np.asarray(crop, dtype=int)).mean() < 3
    picture = overlay(np.eye(7, dtype=np.float32), view, alpha=0.5)
    assert picture.shape == view.shape and not np.array_equal(picture, view)
    assert np.array_equal(overlay(np.eye(7, dtype=np.float32), view, alpha=0.0), view)
    corner = np.zeros((7, 7), dtype=np.float32)
    corner[0, 0] = 1.0
    weighted = overlay(corner, view, alpha=1.0)
    assert np.array_equal(weighted[150:, 150:], view[150:, 150:]), "clear where the map is at its minimum"
    assert not np.array_equal(weighted[:10, :10], view[:10, :10])
    gray = overlay(corner, view, alpha=1.0, gray_background=True)
    quiet = gray[150:, 150:].astype(int)
    assert (quiet[..., 0] == quiet[..., 1]).all() and (quiet[..., 1] == quiet[..., 2]).all(), "the photo in gray"
    luma = view[150:, 150:].astype(float) @ [0.299, 0.587, 0.114]
    assert np.abs(quiet[..., 0] - luma).max() <= 1
    name, conv = first_conv(lite0)
    tiles = filter_tiles(conv.weight)
    assert name == "conv_stem" and conv.weight.shape == (32, 3, 3, 3)
    assert tiles.shape[0] == tiles.shape[1] and tiles.std() > 10
    six = filter_tiles(first_conv(build_model("lenet5"))[1].weight, min_tile=64, min_width=360)  # 5x5s, 3 a row
    assert six.shape[1] >= 360, "a few small filters are drawn large, not as one small block"
    white_columns = (six == 255).all(axis=(0, 2))
    gap_widths = [len(run) for run in "".join("1" if w else "0" for w in white_columns).split("0") if run]
    assert len(gap_widths) == 4 and min(gap_widths) >= 8, "wide white gaps around and between the 3 columns"


def four_photos() -> Image.Image:
    """Chelsea the cat (top left) beside the coffee cup, the rocket and the astronaut, 448x448."""
    samples = sample_images()
    canvas = Image.new("RGB", (448, 448))
    for i, name in enumerate(("chelsea", "coffee", "rocket", "astronaut")):
        canvas.paste(ImageOps.fit(read_image(samples[name]), (224, 224)), ((i % 2) * 224, (i // 2) * 224))
    return canvas


def quadrant_means(heatmap: np.ndarray) -> np.ndarray:
    h, w = heatmap.shape
    return np.array([heatmap[:h // 2, :w // 2].mean(), heatmap[:h // 2, w // 2:].mean(),
                     heatmap[h // 2:, :w // 2].mean(), heatmap[h // 2:, w // 2:].mean()])


@pytest.mark.parametrize("method", [HIRESCAM, GRADCAM])
def test_cam_of_the_top_prediction_lands_on_the_cat(lite0, method):
    spec = get_spec(LITE0)
    batch = batch_for(four_photos())
    top = predict(lite0, batch, top=1)[0]
    assert top.index in CAT_CLASSES
    result = class_activation_map(lite0, batch, spec, method=method)
    assert result.class_index == top.index and result.layer == default_cam_layer(spec) == "bn2"
    assert result.probability == pytest.approx(top.probability, rel=1e-4)
    assert result.heatmap.shape == (224, 224) and result.low_res.shape == (7, 7)
    means = quadrant_means(result.heatmap)
    cat, rest = means[0], means[1:].mean()
    assert cat > 3 * rest, means
    peak = np.unravel_index(result.heatmap.argmax(), result.heatmap.shape)
    assert peak[0] < 112 and peak[1] < 112, "the hottest point is on the cat"


def test_cam_for_a_chosen_class_moves_to_that_object(lite0):
    result = class_activation_map(lite0, batch_for(four_photos()), get_spec(LITE0), class_index=ESPRESSO)
    means = quadrant_means(result.heatmap)
    assert result.class_index == ESPRESSO and means.argmax() == 1, means


def test_cam_with_a_frozen_backbone_and_the_model_untouched(lite0, chelsea):
    spec = get_spec(LITE0)
    batch = batch_for(chelsea)
    frozen = copy.deepcopy(lite0)
    for parameter in frozen.parameters():
        parameter.requires_grad_(False)
    state = {k: v.clone() for k, v in lite0.state_dict().items()}
    free = class_activation_map(lite0, batch, spec, layer="blocks.4")
    held = class_activation_map(frozen, batch, spec, layer="blocks.4")
    np.testing.assert_allclose(held.heatmap, free.heatmap, atol=1e-5)
    assert held.low_res.max() == pytest.approx(1.0) and held.heatmap.max() > 0.5
    for model in (lite0, frozen):
        assert not model.training and hook_count(model) == 0
        assert all(p.grad is None for p in model.parameters())
    assert all(not p.requires_grad for p in frozen.parameters())
    assert all(torch.equal(state[k], v) for k, v in lite0.state_dict().items())
    with torch.inference_mode():
        inside_inference = class_activation_map(lite0, batch, spec, layer="blocks.4")
    np.testing.assert_allclose(inside_inference.heatmap, free.heatmap, atol=1e-5)


def test_cam_refuses_bad_requests(lite0, chelsea):
    spec, batch = get_spec(LITE0), batch_for(chelsea)
    with pytest.raises(ValueError, match="out of range"):
        class_activation_map(lite0, batch, spec, class_index=1000)
    with pytest.raises(ValueError, match="no layer"):
        class_activation_map(lite0, batch, spec, layer="blocks.99")
    with pytest.raises(ValueError, match="not spatial maps"):
        class_activation_map(lite0, batch, spec, layer="classifier")
    with pytest.raises(ValueError, match="unknown CAM method"):
        class_activation_map(lite0, batch, spec, method="guess")


def test_default_cam_layer_has_spatial_maps():
    assert default_cam_layer(get_spec("resnet18")) == "layer4"
    assert default_cam_layer(get_spec("alexnet")) == "features.12", "AlexNet's last stages are dense layers"


def test_write_layer_pictures_writes_a_grid_and_one_png_per_channel(tmp_path, lite0, chelsea):
    maps = extract(lite0, batch_for(chelsea), get_spec(LITE0), layers=["blocks.0"]).maps["blocks.0"]
    write_layer_pictures(maps, tmp_path, "blocks.0", top=8)
    files = write_layer_pictures(maps, tmp_path, "blocks.0", top=5)
    assert files.grid.is_file() and len(files.channel_files) == 5
    assert sorted((tmp_path / "blocks.0").iterdir()) == sorted(files.channel_files), "no files left from before"
    assert Image.open(files.channel_files[0]).size == (224, 224)


def test_cli_features_lists_layers_and_writes_maps(lite0, chelsea, tmp_path, capsys):
    image = str(sample_images()["chelsea"])
    assert main(["features", image, "--layer", "list", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["weights"] == "shipped"
    blocks_2 = next(row for row in listing["layers"] if row["layer"] == "blocks.2")
    assert blocks_2["shape"] == [40, 28, 28]
    assert main(["features", image, "--layer", "list"]) == 0
    table = {line.split()[-3]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert "stage 1 (conv_stem … blocks.0)" in table["conv_stem"] and "stage 3 (blocks.2)" in table["blocks.2"]
    assert table["classifier"].split()[1] == "head"
    assert main(["features", image, "--layer", "blocks.2", "--out", str(tmp_path), "--top", "6"]) == 0
    out = capsys.readouterr().out
    assert "input 3x224x224" in out and "output 40x28x28" in out
    assert (tmp_path / "blocks.2_grid.png").is_file()
    assert len(list((tmp_path / "blocks.2").glob("channel_*.png"))) == 6
    assert main(["features", image, "--layer", str(blocks_2["index"]), "--out", str(tmp_path / "i"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["layer"] == "blocks.2", "the index --layer list prints"
    assert main(["features", image, "--layer", "blocks.2", "--out", str(tmp_path), "--top", "64"]) == 0
    said = capsys.readouterr()
    assert "note: --top 64 is more than the 40 channels of blocks.2: all are drawn" in said.err
    assert "(40 channels, most active first" in said.out
    assert main(["features", image, "--layer", "blocks.2", "--out", str(tmp_path / "s"), "--top", "3", "--order",
                 "spread", "--json"]) == 0
    spreads = channel_spreads(extract(lite0, batch_for(chelsea), get_spec(LITE0), layers=["blocks.2"]).maps["blocks.2"])
    assert json.loads(capsys.readouterr().out)["channels"] == list(np.argsort(-spreads, kind="stable")[:3])
    assert main(["features", image, "--layer", "classifier", "--out", str(tmp_path), "--top", "5"]) == 0
    said = capsys.readouterr()
    assert "note: classifier gives a vector of 1000 values, not maps" in said.err and "`cnnlab predict`" in said.err
    assert "(5 values, most active first" in said.out


@pytest.mark.parametrize("args, words", [
    (["--layer", "blocks.99", "--out", "OUT"], ["no layer 'blocks.99'", "--layer list"]),
    (["--layer", "blocks.2"], ["--out"]),
    (["--layer", "999", "--out", "OUT"], ["has layers 0 to", "not 999", "--layer list"]),
    (["--layer", "999"], ["not 999"]),  # the bad layer first, not the missing --out: one correction is enough
    (["--layer", "nosuch"], ["no layer 'nosuch'"]),
    (["--layer", "list", "--colormap", "rainbow"], ["colour map"]),
    (["--layer", "blocks.2", "--out", "README.md"], ["--out README.md is a file, not a folder"]),
])
def test_cli_features_bad_input_is_one_line(args, words, tmp_path, capsys):
    args = [str(tmp_path) if a == "OUT" else a for a in args]
    assert main(["features", str(sample_images()["chelsea"]), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cnnlab: error:") and "\n" not in err
    assert all(word in err for word in words), err


def test_cli_features_refuses_a_non_image(tmp_path, capsys):
    bad = tmp_path / "notes.png"
    bad.write_text("not a picture")
    assert main(["features", str(bad), "--layer", "list"]) == 2
    assert "not an image" in capsys.readouterr().err


def test_a_few_extreme_activations_high_or_low_do_not_set_the_colour_range():
    from cnnlab.mosaic import value_range

    rng = np.random.default_rng(0)
    maps = rng.normal(0, 1, (8, 32, 32)).astype(np.float32)
    maps[0, 0, :3], maps[1, 0, :3] = -40.0, 40.0  # a conv's output before its ReLU: rare large values both ways
    low, high = value_range(maps)
    assert -4 < low < -2 and 2 < high < 4, (low, high)
    assert value_range(maps, robust=False) == (-40.0, 40.0)
    assert value_range(np.maximum(maps, 0))[0] == 0.0, "after a ReLU the range starts at zero"
