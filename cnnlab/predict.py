"""Top-K predictions of a classifier, named with its label set: the ImageNet class names torchvision ships,
the architecture's own class names (LeNet-5's digits), 'class i' otherwise."""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache

import torch
from PIL import Image
from torch import nn

from cnnlab.images import read_image
from cnnlab.registry import DEFAULT_ARCH, get_spec, logits_of
from cnnlab.weights import DEFAULT, NONE, LoadedModel, default_weights, load_weights

IMAGENET_CLASSES = 1000


@dataclass(frozen=True)
class Prediction:
    index: int
    label: str
    probability: float

    @property
    def shown(self) -> str:
        """The label with the class index, unless the label already shows it: 'tabby (281)', '7', 'class 3'."""
        return self.label if str(self.index) in self.label.split() else f"{self.label} ({self.index})"


@dataclass(frozen=True)
class LabelSet:
    """A model's class names and, for captions, what they are."""

    title: str
    names: tuple[str, ...]
    note: str = ""  # what a reader of the answers should know of these classes


@dataclass(frozen=True)
class PredictionResult:
    arch: str
    weights: str
    predictions: tuple[Prediction, ...]
    notes: tuple[str, ...] = ()


@cache
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in index order, as torchvision's weights metadata lists them."""
    from torchvision.models import ResNet18_Weights

    return tuple(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def class_names(num_classes: int) -> tuple[str, ...]:
    """ImageNet names for a 1000-class model, 'class i' otherwise."""
    if num_classes == IMAGENET_CLASSES:
        return imagenet_class_names()
    return tuple(f"class {i}" for i in range(num_classes))


IMAGENET_NOTE = ("ImageNet-1k has no 'person' class: a photo of people is answered with what they wear or hold (a "
                 "football helmet, a suit). It splits some things finely instead: a house cat is a tabby, a tiger "
                 "cat, a Persian, a Siamese or an Egyptian cat, so a cat photo's probability spreads over these.")


def label_set(loaded: LoadedModel) -> LabelSet:
    """The labels of a loaded model: the classes its run was trained on, ImageNet's, the architecture's own
    (LeNet-5's digits), else 'class i' (one sigmoid output counts as two classes)."""
    if loaded.class_names:
        return LabelSet(f"the {len(loaded.class_names)} classes it was trained on", loaded.class_names)
    if loaded.num_classes == IMAGENET_CLASSES:
        return LabelSet("the 1000 ImageNet-1k classes", imagenet_class_names(), IMAGENET_NOTE)
    spec = get_spec(loaded.arch)
    if spec.class_names and loaded.num_classes == len(spec.class_names):
        return LabelSet(spec.class_names_title, spec.class_names)
    classes = max(loaded.num_classes, 2)
    return LabelSet(f"{classes} unnamed classes, 'class 0' to 'class {classes - 1}'", class_names(classes))


ENLARGED = 4  # an image whose shorter side the network's input exceeds this many times is called enlarged


def enlargement_note(image: Image.Image, loaded: LoadedModel) -> str | None:
    """A word for an image far smaller than a pretrained network's input (an 8x8 digit before a 224 px ImageNet
    network): it is enlarged many times, and the answer is one of the network's classes whatever it shows. None
    for images of a usual size, for random weights, and for a run's model (it was trained on images like it)."""
    side = min(image.size)
    input_size = loaded.image_size or get_spec(loaded.arch).image_size
    if loaded.class_names or loaded.weights == NONE or side * ENLARGED > input_size:
        return None
    return (f"This {image.width}x{image.height} image is enlarged {input_size / side:.0f}x to the network's "
            f"{input_size} px, and the answer is one of {label_set(loaded).title} whatever it shows. A network "
            "trained on images like it (a run of yours, under Weights) answers in their classes.")


def predict(model: nn.Module, batch: torch.Tensor, top: int = 5,
            names: tuple[str, ...] | None = None) -> tuple[Prediction, ...]:
    """The `top` most probable classes for the first image of `batch`, most probable first.

    `model` must be in eval mode and is not changed. A single-output model is read as a sigmoid binary classifier."""
    if model.training:
        raise ValueError("predict needs a model in eval mode; cached models must never be switched to training")
    with torch.inference_mode():
        logits = logits_of(model(batch))[0].float()
    if logits.numel() == 1:
        positive = torch.sigmoid(logits)[0]
        probabilities = torch.stack([1 - positive, positive])
    else:
        probabilities = logits.softmax(-1)
    names = names or class_names(probabilities.numel())
    best = probabilities.topk(min(top, probabilities.numel()))
    return tuple(Prediction(int(i), names[int(i)], float(p)) for p, i in zip(best.values, best.indices))


def load_for_prediction(arch: str = DEFAULT_ARCH, weights: str = DEFAULT) -> LoadedModel:
    """The model to predict with: 'default' means pretrained weights (online if none are available offline)."""
    resolved = default_weights(arch, pretrained=True) if weights == DEFAULT else weights
    return load_weights(arch, resolved)


def predict_image(source: bytes | str | os.PathLike, arch: str = DEFAULT_ARCH, weights: str = DEFAULT,
                  top: int = 5) -> PredictionResult:
    """Read an image (bytes or path), load `arch` with `weights` and return its top-`top` classes.

    ImageInputError for an unreadable image, WeightsError for weights that cannot be loaded."""
    image = read_image(source)
    loaded = load_for_prediction(arch, weights)
    notes = loaded.notes
    if loaded.weights == "none":
        notes += ("Random weights: these predictions are noise.",)
    return PredictionResult(arch, loaded.weights, predict_loaded(loaded, image, top), notes)


def predict_loaded(loaded: LoadedModel, image: Image.Image, top: int = 5) -> tuple[Prediction, ...]:
    """The `top` most probable classes of a loaded model for an RGB image, named by its labels (see `label_set`)."""
    return predict(loaded.model, loaded.batch_for(image), top, label_set(loaded).names)
