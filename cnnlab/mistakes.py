"""After a run: the validation images its model gets wrong, most confident mistakes first (the lecture's "Test
Model: predict on the test images", turned towards what the confusion matrix cannot show: which images); and a
few of its validation images to try the model on.

The model is rebuilt from the run's last checkpoint and run over the same validation split the run used (same
dataset, seed and validation fraction, the architecture's evaluation preprocessing at the run's input size).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms.v2 import functional as TF

from cnnlab.checkpoints import CheckpointError, model_from_checkpoint, require_checkpoint
from cnnlab.data import DatasetError, ImageSet, TransformedSubset, load_dataset, split_images, transforms_for
from cnnlab.heads import scores_note
from cnnlab.images import fit_within
from cnnlab.registry import get_spec, logits_of
from cnnlab.training import RunConfig, resolve_device


SHOWN_SIDE = 256


class MistakesError(ValueError):
    """The run's mistakes cannot be shown, with a message meant for the user."""


@dataclass(frozen=True)
class Mistake:
    """One validation image the model got wrong."""

    index: int  # position in the dataset
    true: str
    predicted: str
    confidence: float  # the model's probability for its wrong answer
    true_probability: float
    image: Image.Image | None = field(default=None, repr=False, compare=False)  # as stored, at most SHOWN_SIDE


@dataclass(frozen=True)
class MistakeReport:
    """The mistakes among the validation images looked at, most confident first."""

    dataset: str
    classes: tuple[str, ...]
    mistakes: tuple[Mistake, ...]
    examined: int
    wrong: int
    validation_size: int
    scores_note: str | None = None  # what its probabilities are, where not a calibrated softmax (heads.scores_note)

    @property
    def accuracy(self) -> float:
        return 1 - self.wrong / self.examined if self.examined else 0.0

    def to_json(self) -> dict:
        """The report as JSON-ready data, without the images."""
        mistakes = [{f.name: getattr(m, f.name) for f in fields(m) if f.name != "image"} for m in self.mistakes]
        return {f.name: getattr(self, f.name) for f in fields(self)} | {"mistakes": mistakes, "accuracy": self.accuracy}


def validation_mistakes(run_dir: Path, limit: int = 24, max_images: int = 2000, batch_size: int = 64,
                        device: str = "auto", progress: Callable[[int, int], None] | None = None) -> MistakeReport:
    """Run the model saved in `run_dir` over (at most `max_images` of) the run's validation images and keep the
    `limit` mistakes it was surest of. MistakesError when the run has no saved model or its data are gone."""
    try:
        model, checkpoint = model_from_checkpoint(Path(run_dir))
    except CheckpointError as error:
        raise MistakesError(str(error)) from None  # a run without a model says why
    config = RunConfig.from_dict(checkpoint.config)
    images = run_dataset(checkpoint.config)
    classes = images.classes
    val_idx = _validation_indices(images, config)
    examined = val_idx[:max_images]
    subset = TransformedSubset(images, examined, transforms_for(get_spec(config.arch), False, config.image_size))
    target = torch.device(resolve_device(device))
    model = model.to(target)
    probabilities = []
    with torch.inference_mode():
        for batch, _ in DataLoader(subset, batch_size=batch_size):
            probabilities.append(logits_of(model(batch.to(target))).float().softmax(1).cpu())
            if progress:
                progress(sum(len(p) for p in probabilities), len(examined))
    probs = torch.cat(probabilities).numpy()
    targets = images.targets[examined]
    predicted = probs.argmax(1)
    wrong = np.flatnonzero(predicted != targets)
    wrong = wrong[np.argsort(-probs[wrong, predicted[wrong]], kind="stable")]
    mistakes = tuple(Mistake(int(examined[i]), classes[targets[i]], classes[predicted[i]],
                             float(probs[i, predicted[i]]), float(probs[i, targets[i]]),
                             fit_within(dataset_image(images, int(examined[i])), SHOWN_SIDE)) for i in wrong[:limit])
    return MistakeReport(config.dataset, classes, mistakes, len(examined), len(wrong), len(val_idx),
                         scores_note(checkpoint.config))


def validation_examples(run_dir: Path, limit: int = 10) -> list[tuple[str, int, Image.Image]]:
    """A validation image of each class (of the first `limit` classes) the run in `run_dir` trained on, as
    (class name, dataset index, image): images the model did not train on, of the kind it knows."""
    try:
        stored = require_checkpoint(Path(run_dir)).config
    except CheckpointError as error:
        raise MistakesError(str(error)) from None
    config, images = RunConfig.from_dict(stored), run_dataset(stored)
    first = {}
    for index in _validation_indices(images, config):
        first.setdefault(int(images.targets[index]), int(index))
    return [(images.classes[label], index, dataset_image(images, index))
            for label, index in sorted(first.items())[:limit]]


def _validation_indices(images: ImageSet, config: RunConfig) -> np.ndarray:
    """The validation split the run made: the same seed and fraction give the same images."""
    return split_images(images, config.val_fraction, config.seed)[1]


def run_dataset(config: dict) -> ImageSet:
    """The dataset the run with this stored config trained on, without downloading it again; MistakesError when
    it is gone, or when its images or classes changed since (its validation split cannot be rebuilt)."""
    try:
        images = load_dataset(config["dataset"], download=False)
    except DatasetError as error:
        raise MistakesError(f"the run's data cannot be read any more: {error}") from None
    if images.classes != tuple(config["classes"]):
        raise MistakesError(f"the dataset {config['dataset']} no longer has the classes this run trained on")
    if images.differs_from(config.get("data_hash")):
        raise MistakesError(f"the images of {config['dataset']} changed since this run trained on them, so its "
                            "validation images cannot be told apart from its training images any more")
    return images


def dataset_image(images: ImageSet, index: int) -> Image.Image:
    """Image `index` of a dataset as a PIL image, as stored (before any preprocessing)."""
    image, _ = images[index]
    return image if isinstance(image, Image.Image) else TF.to_pil_image(image)
