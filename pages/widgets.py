"""Widgets every page can reuse: pick an image, pick weights, load a model (cached) and chart predictions.

Models returned by `loaded_model` are shared by every session: never mutate them (no .train(), no hooks left).
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pandas as pd
import streamlit as st
from PIL import Image

from cnnlab.charts import prediction_bars
from cnnlab.images import (MAX_FILE_BYTES, MAX_PIXELS, SAMPLE_TITLES, ImageInputError, fit_within,
                           png_bytes, read_image, sample_images)
from cnnlab.jobs import trained_models
from cnnlab.mistakes import MistakesError, validation_examples
from cnnlab.predict import Prediction, load_for_prediction
from cnnlab.registry import arch_names, get_spec
from cnnlab.weights import (NONE, WEIGHTS_FILE_SUFFIXES, LoadedModel, WeightsError, WeightsOption,
                            download_source, ready_weights, save_uploaded_weights, trained_arch, weights_options)

EMPTY = "—"  # what a table shows for a missing number, instead of Streamlit's grey "None"
PERCENT = "%.1f%%"  # accuracies in tables, given in percent: '95.0%' as the metrics write them, not '94.99%'


TABLE_ROW_PX = 35  # st.dataframe's row height


DELETED_WHERE = "on the Runs page, another tab or `cnnlab delete`"  # where a run can be deleted from


def whole_table_height(rows: int) -> int:
    """The height at which st.dataframe shows `rows` rows and its header without an inner scroll."""
    return TABLE_ROW_PX * (rows + 1) + 3


def text_column_px(texts, title: str = "") -> int:
    """A table column's width in pixels that shows the longest of `texts` (and its `title`) whole."""
    return 24 + 8 * max(len(str(t)) for t in [title, *texts])


def in_percent(fractions):
    """A table column of fractions (0.9499, or None where there is none yet) in percent, for PERCENT."""
    return pd.to_numeric(fractions, errors="coerce") * 100
UPLOAD = "upload"
DISPLAY_SIDE = 1024
MIN_DISPLAY_SIDE = 256
MAX_DISPLAY_HEIGHT = 520
NARROWEST_CAPTIONED = 160  # px: an image shown narrower gets its caption below it, at the width of the column


class PickedImage(NamedTuple):
    """The chosen image: upright RGB for display and preprocessing, its source (upload bytes or sample path)."""

    image: Image.Image
    source: bytes | Path
    name: str


def arch_picker(key: str, label: str = "Architecture", names: list[str] | None = None) -> str:
    """A choice of architecture by title, starting at the sidebar's architecture and following it whenever it
    changes there; a choice made on the page holds until then."""
    from pages.common import SIDEBAR_CHOICES, current_settings

    names = names or arch_names()
    default = current_settings().arch
    seen, choices = f"{key}__sidebar_choices", st.session_state.get(SIDEBAR_CHOICES, 0)
    if st.session_state.get(seen, 0) != choices and default in names:  # the sidebar changed since this page drew
        st.session_state[key] = st.session_state[f"{key}__kept"] = default
    st.session_state[seen] = choices
    start_at(key, names, default if default in names else names[0])
    return st.selectbox(label, names, key=key, format_func=lambda n: get_spec(n).title)


def preset_arch(key: str, arch: str) -> None:
    """Set the `arch_picker` keyed `key`, on a page about to open, to `arch`: a choice of its own, which that page's
    first draw does not take for a change of the sidebar's architecture to follow."""
    from pages.common import SIDEBAR_CHOICES

    st.session_state[key] = arch
    st.session_state[f"{key}__sidebar_choices"] = st.session_state.get(SIDEBAR_CHOICES, 0)


def metric_row(parent=None):
    """A row for metrics (in `parent`, or where the page is) that wraps onto more lines in a narrow window instead of
    cutting their values short."""
    return (parent or st).container(horizontal=True, gap="medium")


def panes(name: str, *weights: int, min_width: int = 340, gap: str = "large") -> list:
    """Containers side by side in proportion to `weights`, like st.columns, that stack one below the other
    when the page is too narrow to give each `min_width` pixels (st.columns only stacks on a phone's width).
    `name` keys the containers: unique on the page."""
    keys = [f"pane-{name}-{i}" for i in range(len(weights))]
    rules = "".join(f"[data-testid=stLayoutWrapper]:has(> .st-key-{key}) {{flex: {weight} 1 0; "
                    f"min-width: min({min_width}px, 100%)}}" for key, weight in zip(keys, weights))
    st.html(f"<style>{rules}</style>")
    with st.container(horizontal=True, gap=gap):
        return [st.container(key=key) for key in keys]


def start_at(key: str, options: list, default):
    """Give the widget `key` its starting choice, unless it holds a valid one (chosen, or set by another page):
    the last one chosen on this page, also after a visit to another page (Streamlit forgets the state of widgets
    that a run does not draw), else `default`. Returns the earlier choice it replaced because it is no longer
    among `options` (a deleted run's), else None."""
    kept = f"{key}__kept"
    value = st.session_state.get(key)
    if value in options:
        st.session_state[kept] = value
        return None
    earlier = value if value is not None else st.session_state.get(kept)
    st.session_state[key] = st.session_state[kept] if st.session_state.get(kept) in options else default
    return earlier if earlier is not None and earlier not in options else None


@st.cache_data(show_spinner=False, max_entries=16)
def run_examples(weights: str) -> dict[str, tuple[str, bytes]]:
    """When `weights` is a run's folder, one of its validation images per class, as samples to pick:
    {'val-0': ("From its validation set: '0', image 10", PNG bytes)}; otherwise none."""
    if trained_arch(weights) is None:
        return {}
    try:
        examples = validation_examples(Path(weights))
    except MistakesError:
        return {}
    return {f"val-{i}": (f"From its validation set: '{name}', image {index}", png_bytes(image))
            for i, (name, index, image) in enumerate(examples)}


def _suited_sample(arch: str | None, samples: dict) -> str:
    """The sample to start `arch` on: the handwritten digit for a grayscale network (LeNet-5), else the cat."""
    gray = arch is not None and get_spec(arch).input_size[0] == 1 and "digit" in samples
    return "digit" if gray else next(iter(samples))


def image_picker(key: str, weights: str | None = None, arch: str | None = None) -> PickedImage | None:
    """An upload widget plus 'use a sample'; the upload wins when there is one. With a run's folder as
    `weights`, its validation images come first among the samples, and choosing those weights picks the first;
    with `arch`, a grayscale network starts on the handwritten digit (and a switch of network follows along while
    the sample is still the last network's starting one). None (with an error shown) when the upload cannot be
    read."""
    extra = run_examples(weights) if weights else {}
    samples = sample_images()
    choices = list(extra) + list(samples)
    sample_key, suited = f"{key}_sample", _suited_sample(arch, samples)
    if extra and st.session_state.get(f"{key}_sample_weights") != weights:
        st.session_state[sample_key] = next(iter(extra))  # a run's model: start on an image of its own kind
    elif st.session_state.get(f"{key}_sample_arch", arch) != arch and st.session_state.get(sample_key) in samples:
        before = _suited_sample(st.session_state[f"{key}_sample_arch"], samples)
        if st.session_state[sample_key] == before:  # still on the last network's starting sample: follow
            st.session_state[sample_key] = suited
    st.session_state[f"{key}_sample_weights"], st.session_state[f"{key}_sample_arch"] = weights, arch
    start_at(sample_key, choices, next(iter(extra), suited))
    kept_key = f"{key}_kept_upload"  # (name, bytes): Streamlit drops an upload when its page is left
    upload = st.file_uploader(
        "Upload an image", key=f"{key}_upload", max_upload_size=MAX_FILE_BYTES // 2**20,  # any file type: a wrong
        # one gets the page's own error message, not only a red mark on the uploader's chip
        on_change=st.session_state.pop, args=(kept_key, None),  # removed or replaced: forget the one kept
        help=f"JPEG, PNG, WebP, BMP, GIF (first frame) or TIFF, up to {MAX_FILE_BYTES // 2**20} MB and "
             f"{MAX_PIXELS / 1e6:.0f} megapixels.")
    kept = st.session_state.get(kept_key) if upload is None else None
    if kept is not None:
        line = st.container(horizontal=True, vertical_alignment="center")
        line.caption(f"Showing **{kept[0]}**, uploaded earlier.")
        line.button("Back to the sample photos", key=f"{key}_forget", icon=":material/close:", type="tertiary",
                    on_click=st.session_state.pop, args=(kept_key, None))
    uploaded = upload is not None or kept is not None
    sample = st.selectbox("...or use a sample photo", choices, key=f"{key}_sample", disabled=uploaded,
                          format_func=lambda s: ("Unused sample: " if uploaded else "")
                          + (extra[s][0] if s in extra else SAMPLE_TITLES.get(s, s)),
                          help="CC0 / public-domain photos from scikit-image, shipped in assets/"
                               + ("; first, images the run held out for validation." if extra else "."))
    if upload is not None:
        source, name = upload.getvalue(), upload.name
    elif kept is not None:
        name, source = kept
    elif sample in extra:
        name, source = extra[sample]
    else:
        source, name = samples[sample], samples[sample].name
    try:
        picked = PickedImage(read_image(source, name), source, name)
    except ImageInputError as error:
        st.error(f"{error}. Upload another, or remove it to go back to the sample photos.",
                 icon=":material/broken_image:")
        return None
    if upload is not None:
        st.session_state[kept_key] = (name, source)  # readable: shown again when the page is opened again
    return picked

def show_image(picked: PickedImage, caption: str = "") -> None:
    """The picked image, scaled down for display: as wide as its column, or for a portrait (up to a 3x200 strip)
    no taller than MAX_DISPLAY_HEIGHT."""
    width, height = picked.image.size
    shown = "stretch" if width >= height else max(1, round(MAX_DISPLAY_HEIGHT * width / height))
    caption = caption or f"{picked.name} ({width}x{height})"
    narrow = shown != "stretch" and shown < NARROWEST_CAPTIONED  # its caption would wrap a letter a line
    st.image(fit_within(picked.image, DISPLAY_SIDE, MIN_DISPLAY_SIDE), caption=None if narrow else caption,
             width=shown)
    if narrow:
        st.caption(caption)


def open_with_same_choices(page: str, here: str, there: str, arch: str, weights: str, label: str, icon: str) -> None:
    """A button that opens `page` on the network, weights and image chosen here: its pickers (keys starting `there`)
    are set as this page's (keys starting `here`) stand; weights it cannot offer (an uploaded file) are left."""
    if not st.button(label, icon=icon):
        return
    state = st.session_state
    preset_arch(f"{there}_arch", arch)
    if weights in trained_models(arch) or weights in {o.key for o in weights_options(arch)}:
        state[f"{there}_weights_{arch}"] = state[f"{there}_image_sample_weights"] = weights
    state[f"{there}_image_sample_arch"] = arch
    state[f"{there}_image_sample"] = state[f"{here}_image_sample"]
    if (upload := state.get(f"{here}_image_kept_upload")) is not None:
        state[f"{there}_image_kept_upload"] = upload
    else:
        state.pop(f"{there}_image_kept_upload", None)
    st.switch_page(page)


def trained_model_labels(arch: str) -> dict[str, str]:
    """The finished runs of `arch` whose model can be picked as weights: {run folder: 'Your run · II: finetune on
    digits · val 86.1% · 5fc868e03fcf'}, newest first (cnnlab.jobs.trained_models)."""
    return {folder: f"Your run · {label}" for folder, label in trained_models(arch).items()}


def weights_picker(arch: str, key: str) -> str | None:
    """A choice of `arch`'s weights (pretrained first, offline availability shown), the model of a finished run
    or an uploaded file, starting at weights that load right now (cnnlab.weights.ready_weights), or rather than
    random init at the newest run's model; when random init is the start although pretrained weights exist, an
    info line says how to get them.

    Returns the `weights` value for cnnlab.weights.load_weights, or None while no usable file is uploaded."""
    options = {o.key: o for o in weights_options(arch)}
    runs = trained_model_labels(arch)
    keys = list(options) + list(runs) + [UPLOAD]
    initial = ready_weights(arch)
    if initial == NONE and runs:
        initial = next(iter(runs))  # the newest: a trained LeNet-5 says more than a random one
    widget_key = f"{key}_{arch}"
    deleted_run = start_at(widget_key, keys, initial)  # nothing else leaves the options: a run folder chosen

    def label(k: str) -> str:
        if k == UPLOAD:
            return "Upload a weights file"
        if k in runs:
            return runs[k]
        return options[k].menu_label

    choice = st.selectbox("Weights", keys, key=widget_key, format_func=label,
                          help="ImageNet weights, random init, the model of one of your finished runs, or a file.")
    if deleted_run is not None:
        st.warning(f"Run {Path(deleted_run).name}, whose model was chosen here, was deleted ({DELETED_WHERE}); the "
                   f"weights are {label(choice)} now.", icon=":material/delete:")
    if choice in runs:
        st.caption(f"{runs[choice]}, kept in `{choice}`.")
        return choice
    if choice != UPLOAD:
        _weights_note(arch, options, choice, initial)
        return choice
    upload = st.file_uploader("Weights file", type=[s.lstrip(".") for s in WEIGHTS_FILE_SUFFIXES], key=f"{key}_file",
                              help="A .safetensors file or a PyTorch state dict (.pth/.pt/.bin), loaded with "
                                   "weights_only=True: pickled code is refused, never run.")
    if upload is None:
        st.info(f"Upload weights for {arch}: keys and shapes are checked against the architecture.")
        return None
    try:
        return str(save_uploaded_weights(upload.getvalue(), upload.name))
    except WeightsError as error:
        st.error(str(error))
        return None


def _weights_note(arch: str, options: dict[str, WeightsOption], choice: str, initial: str) -> None:
    """Where the chosen weights come from or, when random init is the start for want of loadable pretrained
    weights, an info line on how to get them."""
    pretrained = [o for o in options.values() if o.pretrained]
    if choice == initial == NONE and pretrained:
        hint = download_source(arch, pretrained[0].key).copy_hint
        st.info(f"{pretrained[0].label} weights need a download: go online, or {hint}.",
                icon=":material/cloud_download:")
        return
    option = options[choice]
    if not option.pretrained:
        st.caption("Freshly initialised weights: nothing learnt, nothing to download.")
        return
    where = "available offline" if option.offline else "not cached: downloaded on first use (needs internet)"
    st.caption(f"{option.source}; {where}.")


def random_weights_advice(arch: str) -> str:
    """What to pick instead of random weights for `arch`: its shipped weights, the user's own runs by name, a
    download, or a run to train."""
    pretrained = [o for o in weights_options(arch) if o.pretrained]
    if any(o.offline for o in pretrained):
        return "Pick its pretrained weights under Weights."
    if runs := list(trained_models(arch).values()):
        more = f", and {len(runs) - 1} more" if len(runs) > 1 else ""
        return f"Pick your run under Weights (the newest: {runs[0]}{more})."
    if pretrained:
        return "Its pretrained weights need a download (see the note under Weights), or train it on the Launch page."
    return "Train it on the Launch page: your finished runs appear under Weights."


def weights_error(error: WeightsError) -> None:
    """A WeightsError as a one-line error, with the full message in an expander when it is longer."""
    st.error(error.summary, icon=":material/cloud_off:" if error.needs_download else ":material/error:")
    if error.summary != str(error):
        with st.expander("Details", icon=":material/info:"):
            st.markdown(str(error))


@st.cache_resource(show_spinner=False, max_entries=4)
def loaded_model(arch: str, weights: str) -> LoadedModel:
    """`arch` with `weights` for inference, shared by every session (read-only)."""
    return load_for_prediction(arch, weights)


def predictions_chart(predictions: tuple[Prediction, ...]) -> None:
    """Draw the top predictions as a Plotly bar chart."""
    st.plotly_chart(prediction_bars(predictions), width="stretch")
