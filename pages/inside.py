"""Look inside: every layer of a network at work on one image, its first filters, a class activation map, and
several networks side by side. The model runs once per (architecture, weights, image); every other control
only redraws from that cached result."""
import pages.menu  # noqa: F401, I001  (first: a first visit straight to this page's URL goes through app.py at once)

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image

from cnnlab.activations import Activations, LayerInfo, extract, first_conv, layer_statistics
from cnnlab.cam import HIRESCAM, METHODS, ClassActivationMap, class_activation_map, default_cam_layer
from cnnlab.charts import layer_statistics_figure, vector_bars
from cnnlab.lecture import lecture_claim
from cnnlab.mosaic import (COLORMAPS, channel_means, channel_spreads, colorbar, enlarge, filter_tiles, mosaic,
                           network_view, overlay, value_range, with_colorbar)
from cnnlab.naming import CHANNEL_ORDERS, dataset_label
from cnnlab.predict import Prediction, enlargement_note, label_set, predict_loaded
from cnnlab.registry import arch_names, get_spec
from cnnlab.weights import NONE, WeightsError, default_weights, offline_weights, trained_config, weights_label
from pages.widgets import (EMPTY, PickedImage, arch_picker, image_picker, loaded_model, metric_row, panes,
                           predictions_chart, random_weights_advice, show_image, weights_error, weights_picker)

TOP_COUNTS = (16, 32, 64, 128)
ALL_CHANNELS = "all"
DEFAULT_TOP = 64
TOP_KEY, TOP_WANTED_KEY = "inside_top", "inside_top_wanted"
TOP_CLASS = -1  # the class box's sentinel: "the top prediction", whatever the image
CAM_COLORMAP = "turbo"
CAM_ALPHA = 0.9  # at the map's maximum; clear where it is zero, over the photo in gray
DEFAULT_CAM_METHOD = HIRESCAM
SIDE_BY_SIDE_MAX = 4
STAGE_TILE = 150
FILTER_TILE = 64
FILTER_GRID_PX = 360  # a few filters (LeNet-5's six) are drawn at least this wide, not as one small block


@dataclass(frozen=True)
class Look:
    """One network's pass over one image: every layer's maps, their statistics, the top predictions and the
    image as the network sees it (resized, cropped)."""

    activations: Activations
    statistics: tuple[dict, ...]
    predictions: tuple[Prediction, ...]
    view: np.ndarray


def image_digest(picked: PickedImage) -> str:
    data = picked.source if isinstance(picked.source, bytes) else Path(picked.source).read_bytes()
    return hashlib.sha256(data).hexdigest()


@st.cache_resource(show_spinner=False, max_entries=6)
def look(arch: str, weights: str, digest: str, _image: Image.Image) -> Look:
    """Run `arch` once on the image with hash `digest` (shared, read-only)."""
    spec = get_spec(arch)
    loaded = loaded_model(arch, weights)
    batch = loaded.batch_for(_image)
    activations = extract(loaded.model, batch, spec)
    view = network_view(batch, spec)
    view.setflags(write=False)
    return Look(activations, tuple(layer_statistics(activations)), predict_loaded(loaded, _image), view)


@st.cache_data(show_spinner=False, max_entries=32)
def cam(arch: str, weights: str, digest: str, class_index: int | None, layer: str, method: str,
        _image: Image.Image) -> ClassActivationMap:
    loaded = loaded_model(arch, weights)
    return class_activation_map(loaded.model, loaded.batch_for(_image), get_spec(arch), class_index, layer, method)


@st.cache_data(show_spinner=False, max_entries=16)
def first_filters(arch: str, weights: str) -> tuple[str, tuple[int, ...], np.ndarray]:
    name, conv = first_conv(loaded_model(arch, weights).model)
    return name, tuple(conv.weight.shape), filter_tiles(conv.weight, min_tile=FILTER_TILE, min_width=FILTER_GRID_PX)


def run_look(arch: str, weights: str, picked: PickedImage) -> Look | None:
    """The cached pass, with a spinner the first time; None (error shown) when the weights cannot be loaded."""
    try:
        with st.spinner(f"Running {get_spec(arch).title} on {picked.name}..."):
            return look(arch, weights, image_digest(picked), picked.image)
    except WeightsError as error:
        weights_error(error)
        return None


def _note_move(widget_key: str, moves_key: str) -> None:
    """on_change of the layer list or slider: only note the new value; `layer_choice` settles it after every
    callback of the rerun has run."""
    st.session_state.setdefault(moves_key, {})[widget_key] = st.session_state[widget_key]


def settled_layer(current: int, moves: dict[str, int], order: tuple[str, ...]) -> int:
    """The layer after this rerun's moves: the first widget in `order` whose value really differs from the
    current layer wins."""
    return next((moves[key] for key in order if key in moves and moves[key] != current), current)


def layer_choice(arch: str, layers: tuple[LayerInfo, ...], input_size: int) -> LayerInfo:
    """The layer list and slider, kept in step through one stored index, each synced only when the value
    really changed. The slider wins when both report a change: while it is stepped quickly with the arrow keys
    the browser re-sends the list's value from before the previous rerun, which used to drag the slider back
    (dropping keypresses). The list is a new widget for each input size (weights trained at another size):
    the browser would otherwise keep showing the label with the previous size's shapes."""
    index_key, moves_key = f"inside_layer_index_{arch}", f"inside_layer_moves_{arch}"
    list_key, slider_key = f"inside_layer_{arch}_{input_size}", f"inside_layer_slider_{arch}"
    current = min(st.session_state.get(index_key, 0), len(layers) - 1)
    moves = {key: value for key, value in st.session_state.pop(moves_key, {}).items()
             if isinstance(value, int) and 0 <= value < len(layers)}  # not a stale label after the model changed
    current = settled_layer(current, moves, (slider_key, list_key))
    st.session_state[index_key] = current
    for key in (list_key, slider_key):
        if st.session_state.get(key) != current:
            st.session_state[key] = current
    st.selectbox("Layer (index · name (type) output shape · stage)", range(len(layers)), key=list_key,
                 format_func=lambda i: layers[i].label, on_change=_note_move, args=(list_key, moves_key))
    st.slider("...or slide through the layers, input to output", 0, len(layers) - 1, key=slider_key,
              on_change=_note_move, args=(slider_key, moves_key))
    return layers[current]


def top_choices(channels: int) -> list[int | str]:
    """The 'Channels shown' choices for a layer with `channels` channels: each count below it, then all."""
    return [t for t in TOP_COUNTS if t < channels] + [ALL_CHANNELS]


def channels_shown(container, channels: int) -> int | None:
    """How many channels to show (None: all). The wish is remembered across layers: 'Top 128' on a layer of
    96 channels shows all 96, and 'Top 128' again on a larger layer.

    One box per channel count, and a wish is a value of the box now drawn that differs from what this page put
    in it: stepping quickly through layers, the browser sends the box of the layer before with its old value
    ('All 32'), which must not become the wish (an on_change callback would take it)."""
    choices = top_choices(channels)
    key, shown_key = f"{TOP_KEY}_{channels}", f"{TOP_KEY}_{channels}__shown"
    if key in st.session_state and st.session_state[key] != st.session_state.get(shown_key):
        st.session_state[TOP_WANTED_KEY] = st.session_state[key]
    wanted = st.session_state.get(TOP_WANTED_KEY, DEFAULT_TOP)
    st.session_state[key] = st.session_state[shown_key] = wanted if wanted in choices else ALL_CHANNELS
    top = container.selectbox("Channels shown", choices, key=key,
                              format_func=lambda t: f"All {channels}" if t == ALL_CHANNELS else f"Top {t}")
    return None if top == ALL_CHANNELS else top


def representative(values: np.ndarray, colormap_name: str, side: int = STAGE_TILE) -> tuple[np.ndarray, int]:
    """A stage's most varied channel (its map the least even), coloured on its own range and enlarged; and that
    channel's number."""
    channel = int(np.argmax(channel_spreads(values)))
    low, high = value_range(values[channel], robust=False)
    return enlarge(values[channel], low, high, colormap_name, min_side=side), channel


@st.fragment
def layer_browser(arch: str, result: Look, names: tuple[str, ...] = ()) -> None:
    """Choose a layer (list or slider) and see its maps; only this part reruns when the layer changes."""
    layer = layer_choice(arch, result.activations.layers, result.view.shape[0])
    stats = result.statistics[layer.index]
    row = metric_row()
    short, _, span = layer.stage_label.partition(" (")  # short enough for a phone's metric; the span on hover
    row.metric("Stage", short, help=f"Modules {span.rstrip(')')}, numbered as Launch's freeze plans number the "
                                    "stages" if span else None)
    row.metric("Output", "x".join(map(str, layer.shape)), help="channels x height x width (one image)")
    row.metric("Mean activation", f"{stats['mean']:.3g}")
    row.metric("Zeros", f"{100 * stats['zero_fraction']:.0f}%", help="Share of exact zeros (after a ReLU)")
    values = result.activations.maps[layer.name]
    if layer.spatial is None:  # one number per unit: bars, not a mosaic of one-pixel maps
        vector_view(layer, values, names if layer.channels == len(names) else ())
        return
    controls = panes("inside-map-controls", 1, 1, 1, 1, min_width=150, gap="small")
    top = channels_shown(controls[0], layer.channels)
    order = controls[1].selectbox("Order", list(CHANNEL_ORDERS), key="inside_order", persist_state="session",
                                  format_func=lambda o: CHANNEL_ORDERS[o].capitalize(),
                                  help="Most active: the highest mean first. Most varied: the maps with the largest "
                                       "spread (standard deviation) across positions first: they show where "
                                       "something is, where a bright but even map does not")
    colormap_name = controls[2].selectbox("Colour map", COLORMAPS, key="inside_colormap",
                                          persist_state="session")
    per_channel = controls[3].toggle("Scale each channel", key="inside_per_channel", persist_state="session",
                                     help="Stretch every tile from its own minimum to maximum instead of one scale "
                                          "for the whole layer (from its 0.5th to its 99.5th percentile, so that a "
                                          "few extreme values do not wash out the rest)")
    picture = mosaic(values, top=top, order=order, colormap_name=colormap_name,
                     per_channel=per_channel)
    grid_col, channel_col = panes("inside-maps", 3, 2)
    with grid_col:
        st.image(with_colorbar(picture), width="stretch", output_format="PNG",
                 caption=f"{len(picture.channels)} of {layer.channels} channels of {layer.name}, "
                         f"{CHANNEL_ORDERS[order]}; " + ("each tile is labelled with its channel number."
                                                         if picture.labelled else "too many to label each "
                                                         "tile: show fewer to see their channel numbers."))
    with channel_col:
        channel_view(layer, values, picture, result.view, colormap_name)


VECTOR_TOP = 10


def vector_view(layer: LayerInfo, values: np.ndarray, names: tuple[str, ...]) -> None:
    """A layer that outputs a vector: its largest values as bars, named by class for the classifier's output."""
    flat = np.ravel(values)
    top = np.argsort(-flat, kind="stable")[:VECTOR_TOP]  # the largest first
    labels = [f"{names[i]} ({i})" if names else f"unit {i}" for i in top]
    figure = vector_bars(flat[top], labels, "Logit (before softmax)" if names else "Value")
    st.plotly_chart(figure, width="stretch", key=f"inside_vector_{layer.name}")
    pooled = " (a 1x1 map per channel)" if len(layer.shape) == 3 else ""
    st.caption(f"`{layer.name}` outputs a vector of {layer.channels:,} values{pooled}, not maps: the {len(top)} "
               "largest" + (", one per class." if names else "."))


def channel_view(layer: LayerInfo, values: np.ndarray, picture, view: np.ndarray, colormap_name: str) -> None:
    """One channel of the layer, large and over the input."""
    means, spreads = channel_means(values), channel_spreads(values)
    key = f"inside_channel_{layer.name}_{hashlib.sha256(means.tobytes()).hexdigest()[:12]}"  # new image: new labels
    channel = st.selectbox("Channel to see large", picture.channels, key=key,
                           format_func=lambda c: f"channel {c} (mean {means[c]:.3g}, spread {spreads[c]:.3g})")
    alpha = st.slider("Opacity over the input", 0.0, 1.0, 0.65, 0.05, key="inside_alpha", persist_state="session")
    low, high = (None, None) if picture.per_channel else (picture.vmin, picture.vmax)
    st.image(overlay(values[channel], view, colormap_name, alpha, low, high), width="stretch",
             caption=f"Channel {channel} ({layer.spatial[0]}x{layer.spatial[1]}) upsampled over the "
                     f"{view.shape[1]}x{view.shape[0]} input the network sees")


def depth_overview(result: Look, colormap_name: str = "viridis") -> None:
    stages = result.activations.stage_outputs()
    st.markdown("The most varied channel of each stage's output (the one whose map differs most from place to place), "
                "from the first layers to the last: early maps are sharp and follow edges and colours; later ones are "
                "coarse, a few pixels a side, and mark where a part or an object is rather than what it looks like. "
                "The lecture's Zeiler & Fergus slide shows what such late units respond to by projecting them back to "
                "image patches; the **Class activation map** tab is the nearest view here.")
    row = st.container(horizontal=True)  # wraps: two tiles a row on a phone instead of one screen-wide tile each
    for layer in stages:
        values = result.activations.maps[layer.name]
        with row.container(width=STAGE_TILE):
            if layer.spatial is None:
                st.caption(f"**{layer.stage_label}**: a vector of {layer.channels}")
                continue
            picture, channel = representative(values, colormap_name)
            height, width = layer.spatial
            st.image(picture, width=STAGE_TILE, output_format="PNG",
                     caption=f"{layer.stage_label}: channel {channel} of {layer.channels}, {height}x{width}")
    st.plotly_chart(layer_statistics_figure(result.statistics), width="stretch")
    st.caption("Per layer: mean activation, the share of exact zeros (high right after a ReLU), then channels and "
               "spatial size (log scales). Stages are shaded alternately; hover for the layer.")
    with st.expander("Every layer", icon=":material/table_rows:"):
        st.dataframe(pd.DataFrame(result.statistics), hide_index=True, placeholder=EMPTY, width="stretch",
                     column_config={"zero_fraction": st.column_config.NumberColumn(format="%.3f"),
                                    "mean": st.column_config.NumberColumn(format="%.4g")})


def filters_section(arch: str, weights: str) -> None:
    name, shape, tiles = first_filters(arch, weights)
    st.image(tiles, width=min(tiles.shape[1], 720), output_format="PNG")
    out_channels, in_channels, kh, kw = shape
    claim = lecture_claim(arch, "first_conv_filters")
    if claim and claim.stated != out_channels:
        st.caption(f"The lecture's {get_spec(arch).title} has {claim.stated:,.0f} first-layer filters: {claim.note}")
    st.caption(f"{name}: {out_channels} filters of {kh}x{kw}x{in_channels}"
               f"{', shown as RGB' if in_channels == 3 else ''}; each stretched from its own minimum (dark) to "
               f"maximum (bright). {filters_meaning(weights)}" + (
                   f" At {kh}x{kw} each filter has only {kh * kw} pixels per channel, so the patterns are hard to see;"
                   " AlexNet's 11x11 and ResNet's 7x7 filters show them best (their ImageNet weights are a download); "
                   "offline, a LeNet-5 you train on the digits (Launch a run) shows its 5x5 filters here."
                   if max(kh, kw) <= 3 else ""))


def filters_meaning(weights: str) -> str:
    """What the first-layer filters of these weights can be expected to show."""
    if weights == NONE:
        return "These are random weights, Strategy I's starting point: noise."
    config = trained_config(weights)
    if config and config.get("strategy") == "scratch":
        enlarged = " (the 8x8 digits are enlarged to the network's input)" if config["dataset"] == "digits" else ""
        return (f"Learned from scratch by your run on {dataset_label(config['dataset'])}. From few, small "
                f"images{enlarged} first-layer filters stay coarse: look for a dark half against a bright one (an "
                "edge detector) rather than clean gratings, and compare with random weights (Weights above).")
    if config:
        return ("Your run started from pretrained weights: unless it trained the first layer too, these are the "
                "pretrained filters, edge, colour-blob and grating detectors.")
    return "Pretrained first layers learn edge, colour-blob and grating detectors; random weights show noise."


def cam_overlay(result_cam: ClassActivationMap, view: np.ndarray) -> np.ndarray:
    """A class activation map over the image the network sees: the photo in gray, the map's colours growing
    more opaque with the map's value (clear where it is zero)."""
    return overlay(result_cam.heatmap, view, CAM_COLORMAP, CAM_ALPHA, 0.0, 1.0, gray_background=True)


def cam_class_key(arch: str, weights: str, digest: str) -> str:
    """The class box's widget key: one per (architecture, weights, image), so that a new image (or model)
    starts again at its own top prediction instead of keeping the last one's label."""
    return "inside_cam_class_" + hashlib.sha256(f"{arch}|{weights}|{digest}".encode()).hexdigest()[:16]


def cam_class(container, arch: str, weights: str, digest: str, result: Look, names: list[str]) -> int | None:
    """The class to explain: None for the top prediction (the box's sentinel TOP_CLASS), else its index."""
    top_label = names[result.predictions[0].index]
    choice = container.selectbox("Class", [TOP_CLASS] + list(range(len(names))),
                                 key=cam_class_key(arch, weights, digest),
                                 format_func=lambda i: f"Top prediction: {top_label}" if i == TOP_CLASS
                                 else f"{i}: {names[i]}")
    return None if choice == TOP_CLASS else choice


def methods_note(shown: np.ndarray, other: np.ndarray, layer: str) -> str:
    """Why HiResCAM and Grad-CAM agree (or not) at `layer`, given both maps; empty when the map is blank."""
    if not shown.any():
        return ""
    if np.allclose(shown, other, atol=1e-4):
        return (f"HiResCAM and Grad-CAM give the same map at {layer}. For a layer followed only by global "
                "average pooling and a linear layer the gradient is the same at every position, so Grad-CAM's "
                "channel-averaged gradients equal HiResCAM's element-wise ones: both maps are the original CAM "
                "(Zhou et al. 2016). Pick an earlier layer to see them differ.")
    return (f"At {layer} the two methods differ: Grad-CAM averages each channel's gradient over the map, "
            "HiResCAM keeps it position by position.")


def cam_section(arch: str, weights: str, digest: str, picked: PickedImage, result: Look) -> None:
    """Where the evidence for a class lies: the class, layer and method chosen, the map over the image."""
    spec = get_spec(arch)
    names = label_set(loaded_model(arch, weights)).names
    spatial_stages = [s.name for s in result.activations.stage_outputs() if s.spatial]
    default_layer = default_cam_layer(spec)
    cols = panes("inside-cam-controls", 1, 1, 1, min_width=200, gap="small")
    choice = cam_class(cols[0], arch, weights, digest, result, names)
    layer = cols[1].selectbox("Layer", spatial_stages, index=spatial_stages.index(default_layer),
                              key=f"inside_cam_layer_{arch}", persist_state="session",
                              help=f"Default: {default_layer}, the last stage that still has spatial maps")
    method = cols[2].radio("Method", list(METHODS), format_func=METHODS.get, key="inside_cam_method",
                           persist_state="session", horizontal=True,
                           help="HiResCAM multiplies gradient and maps position by position (faithful to the model); "
                                "Grad-CAM averages the gradient over each map first.")
    try:
        with st.spinner("Computing the class activation map..."):
            result_cam = cam(arch, weights, digest, choice, layer, method, picked.image)
            other = cam(arch, weights, digest, choice, layer, next(m for m in METHODS if m != method), picked.image)
    except ValueError as error:
        st.info(str(error)[0].upper() + str(error)[1:] + ".", icon=":material/info:")
        return
    left, right = panes("inside-cam", 3, 2)
    left.image(cam_overlay(result_cam, result.view), width="stretch",
               caption=f"{METHODS[method]} for '{names[result_cam.class_index]}' (class {result_cam.class_index}, "
                       f"probability {100 * result_cam.probability:.1f}%) at {layer}, over the image in gray")
    h, w = result_cam.low_res.shape
    right.image(enlarge(result_cam.low_res, 0.0, 1.0, CAM_COLORMAP, min_side=224), width="stretch", output_format="PNG",
                caption=f"The map at the layer's own resolution, {h}x{w}")
    right.image(colorbar(0.0, 1.0, CAM_COLORMAP, width=300, caption="evidence, scaled to its maximum"),
                output_format="PNG")
    note = methods_note(result_cam.low_res, other.low_res, layer)
    if note:
        st.caption(note)


def side_by_side_default(arch: str) -> list[str]:
    """`arch` and one more: an architecture with pretrained weights available offline where there is one,
    else the first other one registered (which then runs with random weights, and says so)."""
    others = [name for name in [*offline_weights(), *arch_names()] if name != arch]
    return [arch, others[0]]


def network_header(name: str, weights: str, top: Prediction) -> str:
    """A side-by-side column's title: the network, its weights and its top prediction; random-init networks
    are flagged, since their 'prediction' means nothing."""
    title = get_spec(name).title
    if weights == NONE:
        return (f"**{title}** (random weights) :orange-badge[:material/casino: untrained]  \n"
                f"meaningless guess: {top.label} ({100 * top.probability:.1f}%)")
    return f"**{title}** ({weights_label(weights)})  \ntop: {top.label} ({100 * top.probability:.0f}%)"


def side_by_side(arch: str, arch_weights: str, digest: str, picked: PickedImage) -> None:
    """Several networks on the same image, stage by stage, then each one's class activation map; `arch` with the
    weights chosen above (`arch_weights`), the others with their default weights."""
    names = arch_names()
    chosen = st.multiselect("Architectures", names, default=side_by_side_default(arch),
                            max_selections=SIDE_BY_SIDE_MAX,
                            key="inside_side_archs", format_func=lambda n: get_spec(n).title)
    if not chosen:
        st.info("Pick at least one architecture.")
        return
    st.caption(f"{get_spec(arch).title} with the weights chosen above; the others with their pretrained weights "
               "where they are available offline, random weights otherwise. "
               "Row k shows the most varied channel of each network's k-th stage output, alone and over the "
               "input; the last row is each network's class activation map for its top prediction.")
    results = {}
    for name in chosen:
        weights = arch_weights if name == arch else default_weights(name)
        found = run_look(name, weights, picked)
        if found is not None:
            results[name] = (weights, found)
    if not results:
        return  # each one's error is shown above
    for col, (name, (weights, found)) in zip(side_row(len(results)), results.items()):
        col.markdown(network_header(name, weights, found.predictions[0]))
    depth = max(len(found.activations.stage_outputs()) for _, found in results.values())
    for k in range(depth):
        for col, (name, (weights, found)) in zip(side_row(len(results)), results.items()):
            stages = found.activations.stage_outputs()
            if k < len(stages):
                stage_cell(col, stages[k], found)
    for col, (name, (weights, found)) in zip(side_row(len(results)), results.items()):
        spec = get_spec(name)
        layer = default_cam_layer(spec)
        try:
            result_cam = cam(name, weights, digest, None, layer, DEFAULT_CAM_METHOD, picked.image)
        except ValueError as error:  # a k-NN head: no gradient, no map
            col.caption(f"No class activation map: {error}.")
            continue
        untrained = " (random weights)" if weights == NONE else ""
        col.image(cam_overlay(result_cam, found.view), width="stretch",
                  caption=f"{METHODS[DEFAULT_CAM_METHOD]} for '{found.predictions[0].label}' at {layer}{untrained}")


def side_row(count: int, container=st) -> list:
    """`count` equal cells side by side that stay side by side on a phone (st.columns would stack them there, and the
    networks would then alternate down the page instead of standing next to each other)."""
    row = container.container(horizontal=True, wrap=False, gap="small")
    return [row.container(width="stretch") for _ in range(count)]


def stage_cell(col, layer: LayerInfo, found: Look) -> None:
    """One network's stage output in the side-by-side grid, under its network's header."""
    shape = "x".join(map(str, layer.shape))
    if layer.spatial is None:
        col.caption(f"{layer.stage_label}: a vector of {layer.channels}")
        return
    values = found.activations.maps[layer.name]
    picture, channel = representative(values, "viridis")
    left, right = side_row(2, col)
    left.image(picture, width="stretch", output_format="PNG",
               caption=f"{layer.stage_label}: {shape}, channel {channel}")
    right.image(overlay(values[channel], found.view, "viridis", 0.85), width="stretch",
                caption=f"channel {channel} over the input")


st.title("Look inside")
st.caption("What every layer of a network computes on one image: feature maps layer by layer, the first "
           "layer's filters, where the evidence for a class lies, and several networks side by side.")

controls, preview = panes("inside", 3, 2)
with controls:
    arch = arch_picker("inside_arch")
    weights = weights_picker(arch, "inside_weights")
    picked = image_picker("inside_image", weights, arch)
if weights is None or picked is None:
    st.stop()
result = run_look(arch, weights, picked)
if result is None:
    st.stop()
digest = image_digest(picked)
with preview:
    show_image(picked)
    top = result.predictions[0]
    if weights == NONE:  # as the side-by-side headers say it: a random network's answer means nothing
        st.markdown(f"**Top prediction:** :orange-badge[:material/casino: untrained] meaningless guess: "
                    f"{top.label} ({100 * top.probability:.1f}%)")
    else:
        st.markdown(f"**Top prediction:** {top.label} ({100 * top.probability:.1f}%)")
        if note := enlargement_note(picked.image, loaded_model(arch, weights)):
            st.caption(note)
    with st.expander("Top 5", icon=":material/bar_chart:"):
        predictions_chart(result.predictions)
if weights == NONE:
    st.info("Random weights: the maps show what an untrained network computes, not learnt features. "
            + random_weights_advice(arch), icon=":material/casino:")

tabs = st.tabs(["Layer browser", "Depth overview", "First-layer filters", "Class activation map", "Side by side"],
               key="inside_tabs")  # a stable key: the open tab stays open when the note above comes or goes
with tabs[0]:
    layer_browser(arch, result, label_set(loaded_model(arch, weights)).names)
with tabs[1]:
    depth_overview(result)
with tabs[2]:
    filters_section(arch, weights)
with tabs[3]:
    cam_section(arch, weights, digest, picked, result)
with tabs[4]:
    side_by_side(arch, weights, digest, picked)
