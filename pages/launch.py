import pages.menu  # noqa: F401, I001  (first: a first visit straight to this page's URL goes through app.py at once)

import uuid

import pandas as pd
import streamlit as st

from cnnlab import jobs
from cnnlab.data import (SMALL_IMAGE_SIDE, SMALL_IMAGES, DatasetCheck, DatasetError, ImageSet, check_dataset,
                         first_names, image_folders_root, load_dataset, save_uploaded_archive, server_folders,
                         suggested_input_size, uploaded_archives, validation_size)
from cnnlab.naming import (AVERAGE, CLASSIFIERS, FLATTEN, OWN_HEAD, PENULTIMATE, POOLINGS, PROBE_CLASSIFIERS,
                           STRATEGY_INFO, fitted_at_once)
from cnnlab.planner import (default_freeze, default_head, describe_freeze, describe_head,
                            freeze_choices, freeze_plan, head_choices, suggest_strategy, tap_features)
from cnnlab.latency import (CLASSIFIER_SAMPLE, RunEstimate, busy_reason, estimate_run, images_passed, probe_estimate,
                            too_small_to_time)
from cnnlab.profiling import human
from cnnlab.registry import get_spec, stage_labels
from cnnlab.training import (DEFAULT_EPOCHS, DEFAULT_LR, ConfigError, features_cached, keeps_model, make_config,
                             preflight, settings_line)
from cnnlab.weights import NONE, download_source, downloadable, ready_weights, weights_options
from pages.common import current_settings
from pages.widgets import EMPTY, arch_picker, metric_row, panes, trained_model_labels

DATASETS = {"digits": "Handwritten digits (1,797 of 8x8, offline)",
            "mnist": "MNIST (70,000 digits of 28x28: a 12 MB download, 55 MB unpacked)",
            "cifar10": "CIFAR-10 (60,000 photos of 32x32: a 170 MB download)",
            "folder": "A folder on the server (one sub-folder per class)",
            "zip": "Upload a zip archive (one folder per class)"}
POOLING_LABELS = {AVERAGE: "averaged", FLATTEN: "flattened"}
CLASSIFIER_LABELS = {"logreg": "Logistic regression", "svm": "SVM (RBF kernel)", "knn": "k nearest neighbours",
                     "linear": "Linear layer trained in PyTorch"}
TRAINED_STRATEGIES = ("scratch", "finetune")  # I and II: trained for epochs; a shootout gives both the same


@st.cache_data(show_spinner=False, max_entries=64)
def cached_tap_features(arch: str, tap: str, pooling: str, image_size: int):
    return tap_features(arch, tap, pooling, image_size)


@st.cache_data(show_spinner=False, max_entries=32, ttl=60)
def checked_dataset(name: str) -> tuple[DatasetCheck | None, str | None]:
    """The dataset as a run would read it, or why it cannot be (kept a minute: a folder may change)."""
    try:
        return check_dataset(name), None
    except DatasetError as error:
        return None, str(error)


@st.cache_data(show_spinner=False, max_entries=32, ttl=300)
def cached_estimate(config, _images: ImageSet) -> RunEstimate:
    """Kept five minutes, and only when made on an idle machine (`busy_reason`): load changes the timing. `_images`
    are the images of `config.dataset`, not hashed."""
    return estimate_run(config, _images)


@st.cache_data(show_spinner=False, max_entries=32, ttl=300)
def cached_probe_estimate(extract: RunEstimate, probe_config, _images: ImageSet) -> RunEstimate:
    """`probe_estimate`, kept as `cached_estimate` is."""
    return probe_estimate(extract, probe_config, _images)


@st.cache_data(show_spinner=False, max_entries=64)
def cached_plan(arch: str, strategy: str, freeze: str, num_classes: int, image_size: int, tap: str = PENULTIMATE,
                head: str = OWN_HEAD):
    return freeze_plan(arch, strategy, freeze, num_classes, image_size, tap, head)


st.title("Launch a run")
st.caption("Train on your data with one of the lecture's three strategies. Runs go to a queue and a background "
           "worker trains them, on a GPU when there is one: close the tab whenever you like, nothing is lost.")

settings = current_settings()
st.session_state.setdefault("launch_strategy", "extract")
st.session_state.setdefault("launch_nonce", uuid.uuid4().hex)

# where the built-in datasets sit in the quadrant, and why
QUADRANT = {"digits": ("small", "different", "the digits are few, tiny and grayscale, unlike ImageNet's photos"),
            "mnist": ("large", "different", "MNIST's 70,000 digits are many, but grayscale strokes, not photos"),
            "cifar10": ("large", "similar", "CIFAR-10's 60,000 small photos show ImageNet-like objects")}
preset = st.session_state.get("launch_dataset", "digits")
if st.session_state.get("launch_quadrant_for") != preset:  # another dataset: its own answers, or the user's to give
    st.session_state["launch_size"], st.session_state["launch_similarity"] = QUADRANT.get(preset, (None, None))[:2]
    st.session_state["launch_quadrant_for"] = preset

with st.expander("When to use what?", icon=":material/help:"):
    st.write("The lecture's quadrant: how much data you have, and how much it looks like ImageNet " + (
        f"(the answers start at this dataset's: {QUADRANT[preset][2]})." if preset in QUADRANT else
        "(answer for your images: a few thousand or fewer is small; photos of everyday objects, animals or scenes "
        "are similar, while scans, drawings, diagrams or digits are different)."))
    size_column, similarity_column = st.columns(2)
    amount = size_column.radio("Your dataset is", ["small", "large"], horizontal=True, key="launch_size",
                               persist_state="session")
    similarity = similarity_column.radio("Compared with ImageNet's photos it is", ["similar", "different"],
                                         horizontal=True, key="launch_similarity", persist_state="session")
    suggested_arch = st.session_state.get("launch_arch", settings.arch)
    if amount is None or similarity is None:
        st.info("Answer both questions for a suggestion.", icon=":material/lightbulb:")
    else:
        suggestion = suggest_strategy(amount == "large", similarity == "similar", suggested_arch)
        number, title, _ = STRATEGY_INFO[suggestion.strategy]
        plan = describe_freeze(suggested_arch, suggestion.freeze) if suggestion.strategy == "finetune" else ""
        st.info(f"**Strategy {number}, {title.lower()}.** {suggestion.why}" + (
            f" For {get_spec(suggested_arch).title}: {plan}." if plan else ""), icon=":material/lightbulb:")
        if suggestion.strategy != st.session_state["launch_strategy"] == "extract":
            st.caption("Strategy III, chosen below, is where the form starts: the quickest first run (under a minute "
                       "on the digits), a baseline to beat. **Use this suggestion** sets the quadrant's choice.")
        if st.button("Use this suggestion"):
            st.session_state["launch_strategy"] = suggestion.strategy
            st.session_state["launch_freeze_suggested"] = suggestion.freeze
            st.rerun()

strategy = st.radio("Strategy", list(STRATEGY_INFO), key="launch_strategy", persist_state="session", horizontal=True,
                    format_func=lambda s: f"{STRATEGY_INFO[s][0]}: {STRATEGY_INFO[s][1]}")
st.caption(STRATEGY_INFO[strategy][2])

left, right = panes("launch", 3, 2)
with left:
    arch = arch_picker("launch_arch")
    spec = get_spec(arch)
    if strategy == "scratch":
        weights = NONE
        st.caption("Strategy I starts from random weights.")
    else:
        pretrained = [o for o in weights_options(arch) if o.pretrained]
        labels = {o.key: o.menu_label for o in pretrained}
        labels |= trained_model_labels(arch)
        if not labels:
            st.error(f"{spec.title} has no pretrained weights; Strategy I (scratch) is the only choice for it.")
            weights = None
        else:
            weights = st.selectbox("Pretrained weights", list(labels), key=f"launch_weights_{arch}",
                                   persist_state="session", format_func=labels.get,
                                   help="ImageNet weights, or the model one of your finished runs trained (with a "
                                        "new head when your classes differ from its).")
            chosen = next((o for o in pretrained if o.key == weights), None)
            if chosen is not None and not chosen.offline and not downloadable(arch, weights):
                st.warning(f"{chosen.label} weights need a download and cannot be fetched now: go online, or "
                           f"{download_source(arch, weights).copy_hint}.", icon=":material/cloud_off:")
                weights = None

    kind = st.selectbox("Dataset", list(DATASETS), format_func=DATASETS.get, key="launch_dataset",
                        persist_state="session",
                        help="The digits are scikit-learn's, shipped with it: a small offline stand-in for MNIST, so "
                             "the lecture's MNIST numbers differ. MNIST and CIFAR-10 download once, or read a local "
                             "copy from the data directory.")
    dataset = kind
    if kind == "folder":
        folders = server_folders()
        if not folders:
            st.warning(f"No image folders yet: put one (a sub-folder per class) under `{image_folders_root()}`.")
            dataset = None
        else:
            folder = st.selectbox("Folder", folders, format_func=lambda p: p.name, key="launch_folder",
                                  persist_state="session")
            dataset = f"folder:{folder}"
    elif kind == "zip":
        upload = st.file_uploader("Zip archive", type=["zip"], key="launch_zip",
                                  help="One folder per class, images inside. Checked before use: no path escapes, "
                                       "no links, no nested archives, size and compression-ratio caps.")
        dataset = None
        if upload is not None:
            try:
                dataset = f"zip:{save_uploaded_archive(upload.getvalue(), upload.name)}"
            except DatasetError as error:
                st.error(str(error), icon=":material/folder_off:")
        elif earlier := uploaded_archives():
            archive = st.selectbox("Or one uploaded before", list(earlier), format_func=earlier.get,
                                   key="launch_zip_earlier", help="The archives you uploaded are kept in the data "
                                                                   "directory, the newest first.")
            dataset = f"zip:{archive}"
    checked = None
    if dataset:
        with st.spinner("Reading the dataset..."):
            checked, problem = checked_dataset(dataset)
        if problem:
            st.error(problem, icon=":material/folder_off:")
            dataset = None
        else:
            st.caption(checked.describe())
            if checked.skipped:
                st.warning(("1 file is not a readable image and will be skipped: " if len(checked.skipped) == 1 else
                            f"{len(checked.skipped)} files are not readable images and will be skipped: ")
                           + first_names(checked.skipped))

    freeze, classifier, tap, pooling = "none", None, PENULTIMATE, AVERAGE
    if strategy == "finetune":
        choices = freeze_choices(arch)
        suggested = st.session_state.pop("launch_freeze_suggested", None)
        st.session_state.setdefault(f"launch_freeze_{arch}", default_freeze(arch))
        if suggested in choices:
            st.session_state[f"launch_freeze_{arch}"] = suggested
        freeze = st.selectbox("Freeze", choices, key=f"launch_freeze_{arch}", persist_state="session",
                              format_func=lambda f: describe_freeze(arch, f)[0].upper() + describe_freeze(arch, f)[1:],
                              help="cnnlab train --freeze takes the same choices: none, stage:K (every layer "
                                   "through stage K), body (everything but the head), and also all-but:N (only the "
                                   "last N layers train).")
    head = default_head(arch, strategy)
    if heads := head_choices(arch, strategy):
        head = st.radio("Head", heads, index=heads.index(head), key=f"launch_head_{arch}_{strategy}",
                        persist_state="session",
                        format_func=lambda h: describe_head(arch, h)[0].upper() + describe_head(arch, h)[1:],
                        help="cnnlab train --head own|lecture. The lecture's fine-tuning slide puts this new head on "
                             "the frozen VGG16 base in place of VGG's own 4096-wide fully connected layers.")
    if strategy == "extract":
        classifier = st.selectbox("Classifier on the features", list(CLASSIFIERS), key="launch_classifier",
                                  persist_state="session", format_func=CLASSIFIER_LABELS.get)
        tap_column, pooling_column = st.columns(2)
        taps = [PENULTIMATE, *spec.stages]
        tap = tap_column.selectbox("Features from", taps, key=f"launch_tap_{arch}", persist_state="session",
                                   format_func=lambda t: "the classifier's input" if t == PENULTIMATE
                                   else stage_labels(arch)[taps.index(t) - 1],
                                   help="Where the frozen backbone's features are read. Earlier stages are more "
                                        "general, later ones more specific to ImageNet (the Probe measures each).")
        pooling = pooling_column.radio("Feature maps", POOLINGS, key=f"launch_pooling_{arch}", horizontal=True,
                                       persist_state="session",
                                       disabled=tap == PENULTIMATE, format_func=POOLING_LABELS.get,
                                       help="Average each map over its positions (one number per channel), or keep "
                                            "every position as the lecture's VGG16 recipe does (7 x 7 x 512 = "
                                            "25,088 features at 224 px; smaller inputs give fewer, as counted "
                                            "below).")
        if tap == PENULTIMATE:
            pooling = AVERAGE
        if not keeps_model(strategy, tap, pooling):
            st.info("This run will report its accuracy and confusion matrix but keep no model to predict with, "
                    "export or look inside: features read before the classifier's input, or flattened, do not fit "
                    "the network's head. For a model, read the classifier's input.", icon=":material/info:")

    side = checked.image_side if checked and checked.image_side else SMALL_IMAGES.get(kind)
    suggested_size = suggested_input_size(spec.image_size, spec.min_input_size, spec.fixed_input_size, side)
    tiny = side is not None and side <= SMALL_IMAGE_SIDE
    image_size = st.number_input(
        "Input size (pixels)", spec.min_input_size, 1024, suggested_size, step=16,
        key=f"launch_size_{arch}" + ("_small" if tiny else ""), persist_state="session",
        disabled=spec.fixed_input_size,
        help=f"{spec.title} was trained on ImageNet at {spec.image_size}x{spec.image_size}. Smaller inputs train much "
             f"faster on a CPU" + (f": images of this dataset, {side} px on their shorter side, start at "
                                   f"{suggested_size}, several times faster than {spec.image_size} for a point or "
                                   "two of accuracy." if suggested_size < spec.image_size else "."))
    epochs_default = DEFAULT_EPOCHS["linear" if classifier == "linear" else strategy]
    fitted = fitted_at_once(strategy, classifier)  # no epochs, no learning rate
    c1, c2, c3 = st.columns(3)
    epochs = c1.number_input("Epochs", 1, 500, epochs_default, key=f"launch_epochs_{strategy}_{classifier}",
                             persist_state="session", disabled=fitted,
                             help="Strategy III with a scikit-learn classifier fits in one go." if fitted else
                             "Passes over the training images; a checkpoint is written after each.")
    batch_size = c2.number_input("Batch size", 2, 4096, 64, key="launch_batch", persist_state="session",
                                 help="Images per step; 2 or more (batch normalization needs them).")
    lr = c3.number_input("Learning rate", 1e-6, 10.0, DEFAULT_LR[strategy], step=DEFAULT_LR[strategy] / 2,
                         format="%.4g", key=f"launch_lr_{strategy}", persist_state="session",
                         disabled=fitted,
                         help="Peak learning rate (AdamW, warm-up then cosine decay); +/- moves by half the "
                              "strategy's default, or type any value.")
    if lr > 10 * DEFAULT_LR[strategy] and not fitted:
        st.warning(f"A learning rate of {lr:g} is more than 10 times this strategy's default "
                   f"({DEFAULT_LR[strategy]:g}): AdamW this fast usually diverges, and the model ends up giving one "
                   "answer for everything.", icon=":material/warning:")

with right:
    st.subheader("What this run trains")
    classes = checked.num_classes if checked else None
    plan = cached_plan(arch, strategy, freeze, classes or 10, int(image_size),
                       tap if strategy == "extract" else PENULTIMATE, head)
    rows = [{"Part": p.name, "Params": p.params,
             "State": p.state if p.state != "partly trained" else f"{p.trainable_params:,} trained"} for p in plan.parts]
    if strategy == "extract":
        features = cached_tap_features(arch, tap, pooling, int(image_size))
        head = (features.count + 1) * (classes or 10) if classifier in ("logreg", "linear") else 0
        rows[-1] = {"Part": CLASSIFIER_LABELS[classifier], "Params": head,
                    "State": "trained" if head else "keeps examples"}
    st.dataframe(pd.DataFrame(rows), hide_index=True, placeholder=EMPTY, width="stretch",
                 column_config={"Params": st.column_config.NumberColumn(format="localized")})
    if plan.stages_without_params:
        st.caption(f"Not listed, having no parameters: {', '.join(plan.stages_without_params)}.")
    row = metric_row()
    if strategy == "extract":
        row.metric("Trainable parameters", human(head),
                   help=f"The classifier on {features.count:,} features: (features + 1) x classes weights for "
                        "logistic regression and the linear layer; an SVM or k-NN keeps training examples instead")
        row.metric("MACs per image, once", human(plan.forward_macs),
                   help="Strategy III never trains the backbone: each image goes forward once, then its features "
                        "are cached.")
        where = "the classifier's input" if tap == PENULTIMATE else f"{tap}, {POOLING_LABELS[pooling]}"
        st.caption(f"The backbone runs forward once per image ({human(plan.forward_macs)} MACs), the features are "
                   f"cached on disk, and only the classifier learns: {features.formula} features per image "
                   f"({where})." + (" The layers after the tap are not run." if tap != PENULTIMATE else ""))
    else:
        row.metric("Trainable parameters", human(plan.params_trainable),
                   help=f"{plan.params_trainable:,} trainable, {plan.params_frozen:,} frozen")
        row.metric("Training MACs/image", human(plan.training_macs), help=plan.formula)
        st.caption("Training MACs = forward + input gradients of the layers after the first trainable one + weight "
                   f"gradients of the trainable layers: {plan.formula}.")
    if classes is None:
        st.caption("Counted for a 10-class head; the real head is sized from the data when the run starts.")


def build_config(run_strategy: str, **overrides):
    """The RunConfig for the form's values (the strategy may differ for a shootout)."""
    options = {"weights": weights, "batch_size": int(batch_size), "device": settings.device,
               "image_size": None if image_size == spec.image_size else int(image_size)}
    if {run_strategy, strategy} <= set(TRAINED_STRATEGIES):  # a shootout trains I and II for the form's epochs
        options["epochs"] = int(epochs)
    if run_strategy == strategy:
        if not fitted_at_once(run_strategy, classifier):
            options.update(epochs=int(epochs), lr=float(lr))
        if run_strategy == "finetune":
            options["freeze"] = freeze
        if run_strategy in ("scratch", "finetune"):
            options["head"] = head
        if run_strategy == "extract":
            options.update(classifier=classifier, tap=tap, tap_pooling=pooling)
    options["weights"] = None if run_strategy == "scratch" else pretrained_weights
    options.update(overrides)
    return make_config(run_strategy, arch, dataset, **options)


def queue_runs(strategies: list[str], **overrides) -> list[str] | None:
    """Queue a run per strategy, once each passes the checks it would meet first (its options, weights and data),
    and start a worker; None, with the reason shown, when one does not."""
    try:
        configs = [build_config(s, **overrides) for s in strategies]
        for index, config in enumerate(configs):
            preflight(config, check_data=config.dataset not in {c.dataset for c in configs[:index]})
    except jobs.user_errors() as error:
        st.error(str(error))
        return None
    nonce = st.session_state["launch_nonce"]
    ids = [jobs.submit(c, request_key=f"{nonce}-{c.strategy}") for c in configs]
    jobs.start_worker()
    st.session_state["launch_nonce"] = uuid.uuid4().hex
    return ids


ready = dataset is not None and weights is not None
pretrained_weights = weights if weights not in (None, NONE) else ready_weights(arch)
if ready:
    try:
        st.caption(f"Launch runs it with {settings_line(build_config(strategy))}.",
                   help="The values the run is queued with. A field left red holds a number out of its range, "
                        "which is not taken: the last valid one is.")
    except ConfigError:
        pass  # said when Launch is pressed, with the checks it meets there
buttons = st.container(horizontal=True)
if buttons.button("Launch", type="primary", icon=":material/rocket_launch:", disabled=not ready):
    if ids := queue_runs([strategy]):
        st.session_state["selected_run"] = ids[0]
        st.switch_page("pages/runs.py", query_params={"run": ids[0]})

has_pretrained = pretrained_weights != NONE
shared_epochs = (f"I and II for the {int(epochs)} epochs set here" if strategy in TRAINED_STRATEGIES else
                 f"I for {DEFAULT_EPOCHS['scratch']} epochs and II for {DEFAULT_EPOCHS['finetune']} (set epochs "
                 "with I or II chosen above)")
shootout_help = (f"The same backbone and data with each strategy: {shared_epochs}, III with its defaults. Then "
                 "compare accuracy against compute on the Compare runs page.")
missing = "" if has_pretrained else f" Needs pretrained weights; {spec.title} " + (
    "has them only as a download, which cannot be fetched now." if any(o.pretrained for o in weights_options(arch))
    else "has none.")
if buttons.button("Strategy shootout: launch I, II and III", icon=":material/sports_score:",
                  disabled=not (ready and has_pretrained), help=shootout_help + missing):
    if ids := queue_runs(list(reversed(STRATEGY_INFO))):  # III first: its result comes in minutes
        st.session_state["compare_runs"] = ids
        st.switch_page("pages/run_compare.py")

probe_classifier = classifier if classifier in PROBE_CLASSIFIERS else "logreg"
if buttons.button("Probe every stage", icon=":material/stacked_line_chart:", disabled=not (ready and has_pretrained),
                  help="Strategy III at each stage of the frozen backbone, stem to top: validation accuracy per depth. "
                       "The lecture's claim, measured on your data: early features are general, late ones specific "
                       f"to ImageNet. Classifier: {CLASSIFIER_LABELS[probe_classifier]}." + missing):
    if ids := queue_runs(["probe"], classifier=probe_classifier):
        st.session_state["selected_run"] = ids[0]
        st.switch_page("pages/runs.py", query_params={"run": ids[0]})
if ready and missing:  # a disabled button's help does not open on a touch screen: say it where it shows
    st.caption(f"Strategy shootout and Probe every stage:{missing}")


def estimate_message(config) -> tuple[str, str | None]:
    """The estimate for `config` in words, and why it may be off when the machine was busy while it was timed."""
    with st.spinner("Reading the images..."):
        images = load_dataset(config.dataset, download=False)
    if too_small_to_time(config, images):
        return (f"**No quicker to time than to run**: this run passes only {images_passed(config, images):,} images "
                "through the network, fewer than an estimate times, so launch it and watch its progress."), None
    busy = busy_reason()
    with st.spinner("Timing a few steps..."):
        estimate = (estimate_run if busy else cached_estimate)(config, images)
        cached = features_cached(config, images)
    fit = fit_words(estimate.classifier_s)
    if cached:
        lasts = f"**{fit.capitalize()}**" if estimate.classifier_s >= 5 else "**A few seconds**"
        return (f"{lasts}: the features of these {len(images):,} images are cached from an earlier run with the same "
                "backbone, weights and input size, so this run skips the forward pass and only fits its classifier "
                f"({fit}; without the cache: {estimate.describe()})."), busy
    counted = f"{len(images):,} images"
    if config.strategy in ("scratch", "finetune"):
        val_images = validation_size(len(images), len(images.classes), config.val_fraction)
        counted = (f"{len(images) - val_images:,} training and {val_images:,} validation images x {config.epochs} "
                   f"epoch{'s' if config.epochs != 1 else ''}")
    fitted = (f", and fitting the classifier ({fit}, timed on {min(CLASSIFIER_SAMPLE, len(images)):,} made-up "
              "feature vectors and scaled to these images)" if estimate.classifier_s else "")
    probe = ""
    if config.strategy == "extract":  # the Probe button's run: the same forward pass, a fit at every stage
        with st.spinner("Timing the probe's fits..."):
            probe_config = build_config("probe", classifier=probe_classifier)
            probed = (probe_estimate if busy else cached_probe_estimate)(estimate, probe_config, images)
        probe = (f" Probe every stage: {probed.describe()}, its {len(spec.stages)} fits taking "
                 f"{fit_words(probed.classifier_s)} in all.")
    return (f"**{estimate.describe().capitalize()}** for {counted}: the network's compute "
            f"and the preparing of the images, timed on a few steps and images here{fitted}. Loading the weights "
            f"comes on top; the worker trains one run at a time.{probe}"), busy


def fit_words(seconds: float) -> str:
    """'about 12 s', or 'under a second': how long a classifier's fit takes."""
    return f"about {jobs.in_words(seconds)}" if seconds >= 1 else "under a second"


def form_config():
    """The form's RunConfig, or None while an option is invalid."""
    try:
        return build_config(strategy)
    except ConfigError:
        return None


if buttons.button("Estimate time", icon=":material/timer:", disabled=not (ready and checked and checked.images),
                  help="Times a few training steps of this very network, at this input size and freeze, on this "
                       "machine, and scales them to the run's images and epochs."):
    try:
        config = build_config(strategy)
        st.session_state["launch_estimate"] = (config, *estimate_message(config))
    except jobs.user_errors() as error:
        st.session_state.pop("launch_estimate", None)
        st.error(str(error))
if shown := st.session_state.get("launch_estimate"):
    estimated, message, busy = shown
    if estimated != form_config():
        st.caption(f"Estimated before your last change of settings: {message.replace('**', '')} Press Estimate "
                   "time again for these settings.")
    else:
        if busy:
            st.warning(f"{busy}: timings made now can be off either way, long if it is idle by the time the run "
                       "trains, short if it stays this busy. Estimate again once it is idle.", icon=":material/speed:")
        st.info(message, icon=":material/timer:")
