"""The words a run is described with (strategies, classifiers, taps, heads and datasets) and the command line's other
choices. Imports nothing heavy, so that `cnnlab runs` and the command line's checks answer without loading torch."""
from __future__ import annotations

from pathlib import Path

STRATEGIES = ("scratch", "finetune", "extract", "probe")
STRATEGY_INFO = {
    "scratch": ("I", "Train from scratch",
                "The architecture alone, random weights, every layer trained: needs a large dataset and compute."),
    "finetune": ("II", "Fine-tune",
                 "Pretrained weights, a new head for your classes, early layers frozen, later ones trained further."),
    "extract": ("III", "Feature extractor",
                "A frozen pretrained backbone turns each image into features once; a classifier (e.g. an SVM) "
                "learns from them."),
}
PENULTIMATE = "penultimate"
CLASSIFIERS = ("logreg", "svm", "knn", "linear")
CLASSIFIER_NAMES = {"logreg": "logistic regression", "svm": "SVM", "knn": "k-NN", "linear": "linear head"}
PROBE_CLASSIFIERS = ("logreg", "svm", "knn")  # the probe fits one per stage: scikit-learn's, not a trained head
AVERAGE, FLATTEN = "average", "flatten"
POOLINGS = (AVERAGE, FLATTEN)
OWN_HEAD, LECTURE_HEAD = "own", "lecture"
HEADS = (OWN_HEAD, LECTURE_HEAD)


def fitted_at_once(strategy: str, classifier: str | None) -> bool:
    """Whether a run fits scikit-learn classifiers in one go (Strategy III other than the linear head, a probe):
    no epochs, no learning rate."""
    return strategy == "probe" or (strategy == "extract" and (classifier or "logreg") != "linear")


def strategy_label(strategy: str) -> str:
    """The strategy with the lecture's numeral, 'I: scratch'; a name cnnlab does not know stays as it is."""
    return f"{STRATEGY_INFO[strategy][0]}: {strategy}" if strategy in STRATEGY_INFO else strategy


def run_method(config: dict, size: bool = True) -> str:
    """How a run trained, in a few words: its strategy, the classifier of a feature extractor or probe, and (with
    `size`) the input size when it is not the architecture's own (a config stores None then): 'II: finetune, 96 px',
    'III: extract + SVM', and where a feature extractor reads other than the pooled penultimate features:
    'III: extract at blocks.5, flattened + SVM'."""
    strategy = config.get("strategy")
    label = strategy_label(strategy) if strategy != "probe" else "probe of every stage"
    if strategy == "extract" and config.get("tap", PENULTIMATE) != PENULTIMATE:
        label += f" at {config['tap']}" + (", flattened" if config.get("tap_pooling", AVERAGE) != AVERAGE else "")
    if strategy in ("extract", "probe") and config.get("classifier"):
        label += f" + {CLASSIFIER_NAMES.get(config['classifier'], config['classifier'])}"
    if config.get("head") == LECTURE_HEAD:
        label += " + lecture head"
    if size and config.get("image_size"):
        label += f", {config['image_size']} px"
    return label


def dataset_label(name: str) -> str:
    """A dataset as a person calls it: 'digits', 'mnist', the zip file's or the folder's own name ('pets.zip',
    'pets/'), not the path cnnlab keeps it under."""
    kind, _, argument = name.partition(":")
    if kind == "zip" and argument:
        return Path(argument).name
    if kind == "folder" and argument:
        return f"{Path(argument).name}/"
    return name


CHANNEL_ORDERS = {"mean": "most active first", "spread": "most varied first", "index": "by channel number"}
"""How a layer's channels can be ordered, with the words that say so: by mean activation, by how much a map varies
across its positions (its standard deviation: a bright but even map says little about where anything is), or as
stored."""
