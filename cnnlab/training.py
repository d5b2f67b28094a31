"""The training engine: the lecture's three strategies, and a probe of every stage, in plain PyTorch.

- scratch (Strategy I): the architecture with random weights, every layer trained;
- finetune (Strategy II): pretrained weights, a new head for the dataset's classes, early layers frozen
  ("stage:K" freezes every layer through stage K, "all-but:N" the lecture's "all but the last N layers");
- extract (Strategy III): a frozen pretrained backbone's features, computed once and cached, fed to a
  classifier (logreg, svm, knn from scikit-learn, or a linear head trained in torch);
- probe: Strategy III at every stage, accuracy per depth.

`run(config, callbacks, out_dir)` runs one `RunConfig`. The loop is `train_one_epoch` then `evaluate`,
once per epoch, with events for callbacks (the CLI's progress bar, the job system) and a checkpoint
after every epoch. On CUDA: bf16 autocast, channels_last, cudnn autotuning, pinned memory and worker
processes, optionally torch.compile; under torchrun: DistributedDataParallel.
"""
from __future__ import annotations

import copy
import math
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from cnnlab import distributed
from cnnlab.checkpoints import (Checkpoint, atomic_write_json, head_from_checkpoint, latest_checkpoint,
                                load_checkpoint_weights, load_trainer_state, read_json, save_checkpoint)
from cnnlab.data import (ImageSet, TransformedSubset, first_names, load_dataset, split_images,
                         transforms_for, worker_count)
from cnnlab.defaults import DEFAULT_EPOCHS, DEFAULT_LR
from cnnlab.distributed import DistContext
from cnnlab.featurecache import (FeatureSizeError, cache_key, cache_path, check_tap, extract_features, linear_from,
                                 load_cached, make_classifier, model_fingerprint, store)
from cnnlab.heads import classifier_as_head, keeps_examples
from cnnlab.profiling import profile_arch
from cnnlab.naming import (AVERAGE, CLASSIFIER_NAMES, CLASSIFIERS, HEADS, LECTURE_HEAD, OWN_HEAD, PENULTIMATE, POOLINGS,
                           PROBE_CLASSIFIERS, STRATEGIES, fitted_at_once)
from cnnlab.registry import (ArchSpec, arch_names, build_model, fit_head, get_spec,
                             logits_of, stage_labels)

DEVICES = ("auto", "cpu", "cuda")
RUNTIME_FIELDS = ("epochs", "device", "compile", "workers")  # may change when a run resumes
AUX_LOSS_WEIGHT = 0.4  # Inception's auxiliary classifiers, as in torchvision's reference recipe


class ConfigError(ValueError):
    """A run configuration that cannot run, with a message meant for the user."""


class LossNotFinite(ConfigError):
    """Training diverged: the loss became NaN or infinite. No checkpoint is written for the epoch it happened in."""

    def __init__(self, loss: float, epoch: int, lr: float, where: str = ""):
        super().__init__(f"the loss became {'NaN' if math.isnan(loss) else 'infinite'} in epoch {epoch}{where} "
                         f"(learning rate {lr:.3g}), usually from a learning rate too high: lower it (--lr) and "
                         "train again")


class StopRun(Exception):
    """Raised by a callback to end a run early; the last complete epoch's checkpoint stays."""


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines one run; stored as JSON beside its checkpoints. Build it with `make_config`."""

    strategy: str
    arch: str
    dataset: str
    weights: str = "none"
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    freeze: str = "none"
    classifier: str = "logreg"
    tap: str = PENULTIMATE
    tap_pooling: str = AVERAGE
    device: str = "auto"
    seed: int = 0
    val_fraction: float = 0.2
    image_size: int | None = None
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05
    head_epochs: int = 0
    body_lr_scale: float = 1.0
    compile: bool = False
    workers: int | None = None
    head: str = OWN_HEAD

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> RunConfig:
        """The config stored in `data` (extra keys, such as a checkpoint's `classes`, are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def same_run(self, other: RunConfig) -> bool:
        """Whether `other` continues this run: equal in everything but the runtime fields (epochs, device...)."""
        return not self.differences(other)

    def differences(self, other: RunConfig) -> list[str]:
        """The settings, runtime fields aside, in which `other` is another run than this one: 'lr 0.01 (was
        0.001)', in field order."""
        return [f"{f.name} {getattr(other, f.name)} (was {getattr(self, f.name)})" for f in fields(self)
                if f.name not in RUNTIME_FIELDS and getattr(self, f.name) != getattr(other, f.name)]


def parse_freeze(text: str) -> tuple[str, int]:
    """`none`, `body` (all but the classifier), `stage:K` or `all-but:N` as (kind, number)."""
    kind, _, number = text.partition(":")
    if kind in ("none", "body") and not number:
        return kind, 0
    if kind in ("stage", "all-but") and number.isdigit() and int(number) > 0:
        return kind, int(number)
    raise ConfigError(f"bad freeze {text!r}: use none, body, stage:K (freeze through stage K) or all-but:N "
                      "(train only the last N layers)")


def make_config(strategy: str, arch: str, dataset: str, **options) -> RunConfig:
    """A validated RunConfig; options left as None take the strategy's defaults.

    Defaults: scratch uses random weights, freezes nothing and trains 15 epochs; finetune uses pretrained
    weights, freezes the first half of the stages (the lecture's recipe where it has one, with its new head) and
    trains 10; extract and probe tap the penultimate features into logistic regression (a `linear` head trains
    30 epochs on the cached features).
    """
    options = {k: v for k, v in options.items() if v is not None}
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown strategy {strategy!r}; choose from: {', '.join(STRATEGIES)}")
    if arch not in arch_names():
        raise ConfigError(f"unknown architecture {arch!r}; choose from: {', '.join(arch_names())}")
    spec = get_spec(arch)
    transfer = strategy != "scratch"
    _refuse_options(strategy, options)
    weights = options.setdefault("weights", "default" if transfer else "none")
    if transfer and weights == "none":
        raise ConfigError(f"{strategy} needs pretrained weights; to train from random weights ('none'), use "
                          "`cnnlab train --strategy scratch`")
    if not transfer and weights != "none":
        raise ConfigError("scratch trains from random weights (--weights none); to start from other weights, "
                          "--strategy finetune (--freeze none trains every layer)")
    options.setdefault("lr", DEFAULT_LR[strategy])
    from cnnlab.planner import default_freeze, default_head

    if "freeze" not in options:
        options["freeze"] = default_freeze(arch) if strategy == "finetune" else "none"
    if strategy in ("scratch", "finetune"):
        options.setdefault("head", default_head(arch, strategy))
    options.setdefault("epochs", DEFAULT_EPOCHS["linear" if options.get("classifier") == "linear" else strategy])
    if options.get("image_size") == spec.image_size:
        del options["image_size"]  # None: the network's own, as `run_method` tells without the registry
    config = RunConfig(strategy=strategy, arch=arch, dataset=dataset, **options)
    _check_values(config, spec)
    return config


NOT_FOR = {"scratch": {"freeze", "classifier", "tap", "tap_pooling"}, "finetune": {"classifier", "tap", "tap_pooling"},
           "extract": {"freeze", "head_epochs", "body_lr_scale", "head"},
           "probe": {"freeze", "tap", "tap_pooling", "head_epochs", "body_lr_scale", "head"}}
"""The options a strategy refuses: they have no meaning for it."""


def unused_fields(strategy: str, classifier: str) -> set[str]:
    """The RunConfig fields a run of `strategy` with `classifier` never reads: `NOT_FOR` its strategy and, where a
    scikit-learn classifier is fitted in one go (Strategy III, the probe), those of a training loop."""
    fitted = fitted_at_once(strategy, classifier)
    return NOT_FOR[strategy] | ({"epochs", "lr", "weight_decay", "warmup_fraction", "compile"} if fitted else set())


def config_in_use(config: dict) -> dict:
    """A stored config without the fields its run never read (a Strategy III run's freeze or learning rate), and
    with the input size it ran at where it left that to the network (stored as None)."""
    unused = unused_fields(config["strategy"], config.get("classifier", "logreg"))
    shown = {name: value for name, value in config.items() if name not in unused}
    if "image_size" in shown and shown["image_size"] is None:
        shown["image_size"] = get_spec(config["arch"]).image_size
    return shown


def differing_settings(configs: list[dict]) -> str | None:
    """The settings runs differ in that bear on their accuracy beyond their strategy, in words, each among the runs
    that read it: 'epochs (1, 2) and input size (32, 64, 128 px)'; None when they agree. (The learning rate differs
    by strategy on purpose, and is left out.)"""
    differences = []
    for field, name, unit in (("epochs", "epochs", ""), ("image_size", "input size", " px")):
        values = sorted({used[field] for used in map(config_in_use, configs) if used.get(field) is not None})
        if len(values) > 1:
            differences.append(f"{name} ({', '.join(map(str, values))}{unit})")
    return " and ".join(differences) or None


def settings_line(config: RunConfig) -> str:
    """The settings a run uses, in words: '3 epochs · batch 64 · learning rate 0.002 · 32 px' (Strategy III's
    classifier first, Strategy II's freeze plan last); those its strategy and classifier never read are left out."""
    unused = unused_fields(config.strategy, config.classifier)
    parts = [CLASSIFIER_NAMES[config.classifier]] if config.strategy in ("extract", "probe") else []
    if "epochs" not in unused:
        parts.append(f"{config.epochs} epoch{'s' if config.epochs != 1 else ''}")
    parts.append(f"batch {config.batch_size}")
    if "lr" not in unused:
        parts.append(f"learning rate {config.lr:g}")
    parts.append(f"{config.image_size or get_spec(config.arch).image_size} px")
    if config.strategy == "finetune":
        parts.append(f"freeze {config.freeze}")
    return " · ".join(parts)


def _flag(name: str) -> str:
    """The command-line option of a RunConfig field: 'batch_size' -> '--batch-size'."""
    return f"--{name.replace('_', '-')}"


def _refuse_options(strategy: str, options: dict) -> None:
    given = set(options)
    misplaced = NOT_FOR[strategy] & given
    if misplaced:
        flags = [_flag(name) for name in sorted(misplaced)]
        raise ConfigError(f"{', '.join(flags)} {'do' if len(flags) > 1 else 'does'} not apply to --strategy {strategy}")
    classifier = options.get("classifier", "logreg")
    unused = [_flag(name) for name in ("epochs", "lr") if name in given]
    if strategy == "extract" and classifier != "linear" and unused:
        raise ConfigError(f"{' and '.join(unused)} {'apply' if len(unused) > 1 else 'applies'} only to the linear "
                          f"classifier (--classifier linear); {classifier} is fitted in one go")
    if strategy == "probe" and unused:
        raise ConfigError(f"{' and '.join(unused)} {'do' if len(unused) > 1 else 'does'} not apply to a probe: it fits "
                          f"{classifier} at each stage in one go")


def _check_values(config: RunConfig, spec: ArchSpec) -> None:
    parse_freeze(config.freeze)
    if config.device not in DEVICES:
        raise ConfigError(f"unknown device {config.device!r}; choose from: {', '.join(DEVICES)}")
    choices = PROBE_CLASSIFIERS if config.strategy == "probe" else CLASSIFIERS
    if config.classifier not in choices:
        raise ConfigError(f"unknown classifier {config.classifier!r}; choose from: {', '.join(choices)}")
    if config.head not in HEADS:
        raise ConfigError(f"unknown head {config.head!r}; choose from: {', '.join(HEADS)}")
    if config.head == LECTURE_HEAD and not spec.lecture_head_width:
        raise ConfigError(f"the lecture gives no new head for {spec.title}; use --head {OWN_HEAD}")
    if config.tap_pooling not in POOLINGS:
        raise ConfigError(f"unknown tap pooling {config.tap_pooling!r}; choose from: {', '.join(POOLINGS)}")
    if config.tap == PENULTIMATE and config.tap_pooling != AVERAGE:
        raise ConfigError(f"the classifier's input is pooled already, one number per channel: {config.tap_pooling} "
                          "applies to the feature maps of an earlier layer (--tap LAYER)")
    for name in ("epochs", "batch_size"):
        if getattr(config, name) < 1:
            raise ConfigError(f"{name} must be at least 1")
    if config.strategy in ("scratch", "finetune") and config.batch_size < 2:
        raise ConfigError("training needs a batch size of at least 2 (batch normalization, in most of these "
                          "networks, needs more than one value per channel)")
    if not 0 < config.lr < math.inf or config.body_lr_scale < 0 or config.weight_decay < 0:
        raise ConfigError("the learning rate must be positive and finite, its body scale and the weight decay not "
                          "negative")
    if not 0 < config.val_fraction < 1:
        raise ConfigError(f"the validation fraction must be between 0 and 1, not {config.val_fraction}")
    if config.image_size is not None:
        try:
            spec.check_input_size(config.image_size)
        except ValueError as error:
            raise ConfigError(str(error)) from None


# ----------------------------------------------------------------------------------------------- events

@dataclass(frozen=True)
class RunStart:
    """Sent before the first step: what is about to run, and how many parameters train."""

    config: RunConfig
    device: str
    classes: tuple[str, ...]
    train_size: int
    val_size: int
    params_trainable: int
    params_frozen: int
    frozen_layers: tuple[str, ...] = ()
    start_epoch: int = 0
    world_size: int = 1
    finished_before: bool = False  # its output folder holds the run done: the saved model is evaluated again

    def summary(self) -> str:
        from cnnlab.weights import weights_label

        c = self.config
        done = (f"fitted its {CLASSIFIER_NAMES[c.classifier]}" if fitted_at_once(c.strategy, c.classifier)
                else f"trained its {c.epochs} epoch{'s' if c.epochs > 1 else ''}")
        resumed = (f"; it already {done}: its saved model is evaluated again" if self.finished_before else
                   f", resuming after epoch {self.start_epoch}" if self.start_epoch else "")
        ranks = f" x{self.world_size} processes" if self.world_size > 1 else ""
        why_none = f" ({keeps})" if (keeps := keeps_examples(c.strategy, c.classifier)) else ""
        return (f"{c.strategy} {c.arch} ({weights_label(resolve_weights(c))}) on {c.dataset}: "
                f"{len(self.classes)} classes, {self.train_size} train / {self.val_size} val images, "
                f"{self.device}{ranks}; parameters: {self.params_trainable:,} trainable{why_none}, "
                f"{self.params_frozen:,} frozen{resumed}")


@dataclass(frozen=True)
class StepEvent:
    """One batch done. `phase` is 'train', 'eval' or 'features'; `loss` is set every few steps."""

    phase: str
    epoch: int
    epochs: int
    step: int
    steps: int
    loss: float | None = None
    lr: float | None = None


@dataclass(frozen=True)
class EpochMetrics:
    """One epoch, as Keras reports it."""

    epoch: int
    epochs: int
    loss: float
    acc: float
    val_loss: float
    val_acc: float
    time_s: float
    images_per_s: float
    lr: float

    def keras_line(self) -> str:
        return (f"Epoch {self.epoch}/{self.epochs} - {self.time_s:.1f}s - loss: {self.loss:.4f} - acc: {self.acc:.4f}"
                f" - val_loss: {self.val_loss:.4f} - val_acc: {self.val_acc:.4f} - {self.images_per_s:,.0f} images/s")


def guessing_note(confusion, classes) -> str | None:
    """What a confusion matrix (rows: true class, columns: answer) says when the model learned nothing it can use:
    it gives one answer for every image, or scores no better than always answering the commonest class. None
    otherwise."""
    matrix = np.asarray(confusion)
    total = matrix.sum()
    if total == 0 or len(classes) < 2:
        return None
    answers = np.flatnonzero(matrix.sum(0))
    hint = ": the model learned nothing it can use (a learning rate too high, or too few epochs, are common causes)"
    if len(answers) == 1:
        return f"It answers class {classes[answers[0]]} for every validation image{hint}."
    commonest = int(matrix.sum(1).argmax())
    accuracy, baseline = np.trace(matrix) / total, matrix[commonest].sum() / total
    if accuracy <= baseline:
        return (f"Its {accuracy:.1%} is no better than always answering the commonest class, class "
                f"{classes[commonest]} ({baseline:.1%}){hint}.")
    return None


def validation_ahead_note(epochs: list[dict]) -> str | None:
    """Why validation can score above training (early epochs, most often), for a run whose epoch records show it;
    None when training is ahead or level every epoch."""
    ahead = [e["epoch"] for e in epochs
             if e.get("val_acc") is not None and e.get("acc") is not None and e["val_acc"] > e["acc"]]
    if not ahead:
        return None
    when = ("every epoch" if len(ahead) == len(epochs) else f"epoch {ahead[0]}" if len(ahead) == 1
            else f"{len(ahead)} of {len(epochs)} epochs")
    return (f"Validation scores above training ({when}): the training figures are averaged over the epoch "
            "while the weights were still improving, on augmented images and with dropout on where the network has "
            "it; validation is measured after the epoch, on plain images. It is no sign of a wrong split.")


@dataclass(frozen=True)
class RunResult:
    """A finished run: final validation accuracy, per-class accuracy, confusion matrix, where it was saved."""

    config: RunConfig
    classes: tuple[str, ...]
    val_acc: float
    confusion: tuple[tuple[int, ...], ...]
    train_time_s: float
    params_trainable: int
    params_frozen: int
    device: str
    history: tuple[EpochMetrics, ...] = ()
    val_loss: float | None = None
    checkpoint: str | None = None
    out_dir: str | None = None
    feature_cache: str | None = None
    skipped: tuple[str, ...] = ()
    stopped: bool = False
    world_size: int = 1
    training_macs_per_image: int | None = None
    total_macs: int | None = None

    @property
    def per_class_acc(self) -> dict[str, float]:
        matrix = np.asarray(self.confusion)
        totals = matrix.sum(1)
        return {name: float(matrix[i, i] / totals[i]) if totals[i] else float("nan")
                for i, name in enumerate(self.classes)}

    def to_json(self) -> dict:
        """The result as JSON: `weights` names those loaded ('default' resolved), `config` keeps what was asked."""
        c = self.config
        return {"strategy": c.strategy, "arch": c.arch, "dataset": c.dataset, "weights": resolve_weights(c),
                "val_acc": self.val_acc, "val_loss": self.val_loss, "train_time_s": round(self.train_time_s, 3),
                "params_trainable": self.params_trainable, "params_frozen": self.params_frozen,
                "checkpoint": self.checkpoint, "out_dir": self.out_dir, "device": self.device,
                "classes": list(self.classes), "per_class_acc": self.per_class_acc,
                "confusion_matrix": [list(r) for r in self.confusion], "feature_cache": self.feature_cache,
                "epochs": [asdict(m) for m in self.history], "skipped": list(self.skipped),
                "stopped": self.stopped, "world_size": self.world_size,
                "training_macs_per_image": self.training_macs_per_image, "total_macs": self.total_macs,
                "config": c.to_dict()}


@dataclass(frozen=True)
class ProbeRow:
    """Strategy III at one stage: how well its pooled features classify the dataset."""

    stage: int
    layer: str
    dim: int
    train_acc: float
    val_acc: float


@dataclass(frozen=True)
class ProbeResult:
    config: RunConfig
    rows: tuple[ProbeRow, ...]
    time_s: float
    feature_cache: str
    val_size: int
    total_macs: int | None = None  # one forward pass over every image, all stages' features at once

    def to_json(self) -> dict:
        return {"arch": self.config.arch, "dataset": self.config.dataset, "weights": resolve_weights(self.config),
                "classifier": self.config.classifier, "feature_cache": self.feature_cache, "val_size": self.val_size,
                "time_s": round(self.time_s, 3), "total_macs": self.total_macs,
                "stages": [asdict(r) for r in self.rows], "config": self.config.to_dict()}


def _points(difference: float) -> str:
    """A difference of two accuracies in percentage points: '1.7 percentage points'."""
    return f"{difference * 100:.1f} percentage points"


def _chance_gap(accuracies: list[float], images: int) -> float:
    """Twice the standard error of the difference of two accuracies on `images` images, each smoothed as if one
    more image were right and one wrong (Laplace), so that 100% on a handful of images is not read as certain."""
    smoothed = [(a * images + 1) / (images + 2) for a in accuracies]
    return 2 * math.sqrt(sum(p * (1 - p) for p in smoothed) / images)


def probe_reading(stages: list[dict], val_size: int | None, arch: str, weights: str = "default") -> str:
    """What a probe of `arch` with `weights` says per stage, in words, with chance taken into account: the best
    stage beats the last one only when the gap is more than twice its standard error on `val_size` validation
    images (`_chance_gap`). ImageNet is named as what the features learned from only for ImageNet weights (not a
    file or a run)."""
    from cnnlab.weights import WEIGHT_SOURCES

    source = "ImageNet" if weights in WEIGHT_SOURCES else "the data its weights learned from"
    best = max(reversed(stages), key=lambda row: row["val_acc"])  # of stages tied, the latest
    last, first = stages[-1], stages[0]
    label = lambda row: stage_labels(arch)[row["stage"] - 1]
    if len({row["val_acc"] for row in stages}) == 1:
        return (f"Every stage scores {best['val_acc']:.1%}: these data are too easy, or their validation images too "
                "few, to tell general features from specific ones.")
    gap = best["val_acc"] - last["val_acc"]
    noise = _chance_gap([best["val_acc"], last["val_acc"]], val_size or 1)
    best_stage = f"{label(best)} does best ({best['val_acc']:.1%})"
    if best is last:
        text = (f"Accuracy is highest at the last stage, {label(last)}, with {last['val_acc']:.1%}: these data are "
                f"enough like {source} that its most specific features help too.")
    elif not val_size:
        text = (f"{best_stage.capitalize()}, {_points(gap)} above the last one; this run did not record its validation "
                "size, so whether that is more than chance is not known.")
    elif gap > noise:
        text = (f"{best_stage.capitalize()}, {_points(gap)} above the last one, more than chance allows on "
                f"{val_size} validation images (±{noise * 100:.1f}): the last stages are too specific to {source} "
                "for these data, the lecture's general-to-specific claim.")
    else:
        text = (f"{best_stage.capitalize()}, but the last one is within chance of it on {val_size} validation images "
                f"({_points(gap)} apart, ±{noise * 100:.1f}): these data do not show the last stages being too "
                "specific.")
    if first is not best:
        text += (f" Early stages hand the classifier few numbers per image, {first['dim']:,} at "
                 f"{label(first)} with each map averaged, which holds their accuracy "
                 "down as much as how general their features are.")
    return text


class Callback:
    """Receives a run's events; override the ones you need. Raise StopRun to end the run early."""

    def on_run_start(self, event: RunStart) -> None:
        pass

    def on_step(self, event: StepEvent) -> None:
        pass

    def on_message(self, text: str) -> None:
        """A line for the user on what the run is doing (loading, reading features from the cache)."""

    def on_epoch_end(self, metrics: EpochMetrics) -> None:
        pass

    def on_run_end(self, result: RunResult) -> None:
        pass


def _emit(callbacks: Iterable, name: str, event) -> None:
    for callback in callbacks:
        handler = getattr(callback, name, None)
        if handler is not None:
            handler(event)


class ConsoleProgress(Callback):
    """A progress bar (when the stream is a terminal) and Keras-style epoch lines, on stderr by default; the
    closing result line on `result_stream` (default: the same stream)."""

    def __init__(self, stream=None, bar: bool | None = None, result_stream=None):
        self.stream = stream or sys.stderr
        self.result_stream = result_stream or self.stream
        self._reader_gone = False
        self.bar = self.stream.isatty() if bar is None else bar
        self._drawn = 0.0
        self._finished_before = False

    def _write(self, text: str, stream=None) -> None:
        """Write and flush; a reader gone (`| head`) silences this progress, never the run."""
        if self._reader_gone:
            return
        stream = stream or self.stream
        try:
            stream.write(text)
            stream.flush()
        except (BrokenPipeError, ValueError):  # ValueError: the stream was closed
            self._reader_gone = True

    def on_run_start(self, event: RunStart) -> None:
        self._finished_before = event.finished_before
        self._write(event.summary() + "\n")

    def on_step(self, event: StepEvent) -> None:
        now = time.monotonic()
        if not self.bar or (now - self._drawn < 0.1 and event.step < event.steps):
            return
        self._drawn = now
        width = 30
        done = int(width * event.step / event.steps)
        loss = f" - loss: {event.loss:.4f}" if event.loss is not None else ""
        label = f"{event.phase} {event.epoch}/{event.epochs}" if event.phase != "features" else "features"
        self._write(f"\r{label} {event.step}/{event.steps} [{'=' * done}{'.' * (width - done)}]{loss}\033[K")

    def on_message(self, text: str) -> None:
        self._write(("\r\033[K" if self.bar else "") + text + "\n")

    def on_epoch_end(self, metrics: EpochMetrics) -> None:
        self._write(("\r\033[K" if self.bar else "") + metrics.keras_line() + "\n")

    def on_run_end(self, result: RunResult) -> None:
        accuracies = result.per_class_acc
        best = max((a for a in accuracies.values() if not math.isnan(a)), default=0.0)
        worst = sorted(((n, a) for n, a in accuracies.items() if a < best), key=lambda item: item[1])[:3]
        worst_text = f" (weakest classes: {', '.join(f'{n}: {a:.3f}' for n, a in worst)})" if worst else ""
        if self.bar:
            self._write("\r\033[K")
        checkpoint = (f"; checkpoint: {result.checkpoint}" if result.checkpoint else
                      "; no checkpoint kept (no epoch finished): this model is not saved" if result.stopped else "")
        took = (f"trained earlier in {result.train_time_s:.1f}s" if self._finished_before else
                f"after {len(result.history)} of {result.config.epochs} epochs, {result.train_time_s:.1f}s"
                if result.stopped else f"in {result.train_time_s:.1f}s")
        stopped = "stopped early; " if result.stopped else ""
        self._write(f"{stopped}val_acc: {result.val_acc:.4f} {took}{worst_text}{checkpoint}\n", self.result_stream)
        if note := guessing_note(result.confusion, result.classes):
            self._write(f"warning: {note}\n")


# ------------------------------------------------------------------------------------------ the runtime

@dataclass(frozen=True)
class Runtime:
    """Where and how tensors run: device, process group, memory format, bf16 autocast, fused optimizer.

    `make_runtime` turns the last three on for CUDA; tests turn them on for CPU to run the CUDA code paths."""

    device: torch.device
    dist: DistContext = DistContext()
    channels_last: bool = False
    bf16: bool = False
    fused: bool = False

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.preserve_format

    def to_device(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.channels_last and images.dim() == 4:
            images = images.to(self.device, non_blocking=True, memory_format=torch.channels_last)
        else:
            images = images.to(self.device, non_blocking=True)
        return images, labels.to(self.device, non_blocking=True)

    def autocast(self):
        """bf16 autocast on this device when `bf16` is set, else nothing."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else nullcontext()


def available_devices() -> tuple[str, ...]:
    """The device options that can run here: auto and cpu, and cuda where PyTorch sees a GPU."""
    return DEVICES if torch.cuda.is_available() else tuple(d for d in DEVICES if d != "cuda")


def resolve_device(name: str) -> str:
    """'cpu' or 'cuda' for a device option; `auto` picks CUDA when present."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda was asked for, but PyTorch sees no CUDA GPU")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"unknown device {name!r}; choose from: {', '.join(DEVICES)}")
    return name


def make_runtime(device: str, inference: bool = False) -> Runtime:
    """The runtime for a device option; joins the process group when launched by torchrun.

    bf16 autocast and fused AdamW on CUDA only (bf16 is slower than fp32 on most CPUs); channels_last on
    CUDA, and on CPU for inference only (there it speeds up the forward pass of depthwise networks but
    slows down their backward pass)."""
    device_type = resolve_device(device)
    context = distributed.setup(device_type)
    if device_type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")
        return Runtime(torch.device("cuda", context.local_rank), context, channels_last=True, bf16=True, fused=True)
    return Runtime(torch.device("cpu"), context, channels_last=inference)


# ------------------------------------------------------------------------------------------- freezing

def _inside(name: str, path: str) -> bool:
    return name == path or name.startswith(path + ".")


def _layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules that own parameters directly (convolutions, linear and norm layers), in definition order."""
    return [(n, m) for n, m in model.named_modules() if next(m.parameters(recurse=False), None) is not None]


def freeze_layers(model: nn.Module, spec: ArchSpec, freeze: str) -> tuple[str, ...]:
    """Set `requires_grad` by the freeze plan and return the frozen layers' names; the classifier always trains.

    `stage:K` freezes every layer defined up to the end of `spec.stages[K-1]` (stem included);
    `all-but:N` freezes every layer but the last N that own parameters, the new head counted among them (the
    lecture's Keras `conv_base.layers[:-4]` counts the base's layers, pooling included, and adds a new head:
    for VGG-16 that trains block 5, which `stage:4` reproduces);
    `body` freezes all but the classifier; `none` trains everything.
    """
    kind, number = parse_freeze(freeze)
    layers = _layers(model)
    if kind == "none":
        frozen = []
    elif kind == "body":
        frozen = [n for n, _ in layers if not _inside(n, spec.classifier)]
    elif kind == "stage":
        if number > len(spec.stages):
            raise ConfigError(f"{spec.name} has {len(spec.stages)} stages ({', '.join(spec.stages)}); "
                              f"stage:{number} does not exist")
        order = [n for n, _ in model.named_modules()]
        last = max(i for i, n in enumerate(order) if _inside(n, spec.stages[number - 1]))
        upto = set(order[:last + 1])
        frozen = [n for n, _ in layers if n in upto and not _inside(n, spec.classifier)]
    else:
        if number > len(layers):
            raise ConfigError(f"{spec.name} has {len(layers)} layers with parameters; all-but:{number} is too many")
        frozen = [n for n, _ in layers[:-number] if not _inside(n, spec.classifier)]
    frozen_set = set(frozen)
    for name, module in layers:
        for parameter in module.parameters(recurse=False):
            parameter.requires_grad_(name not in frozen_set)
    return tuple(frozen)


def keep_frozen_norms_in_eval(model: nn.Module) -> None:
    """Batch-norm layers whose parameters are frozen keep their running statistics (Keras does the same)."""
    for module in model.modules():
        if isinstance(module, _BatchNorm):
            params = list(module.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                module.eval()


def count_params(model: nn.Module) -> tuple[int, int]:
    """(trainable, frozen) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters()) - trainable


# ------------------------------------------------------------------------------------------- the loop

def classification_loss(output, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on the logits, plus Inception's auxiliary heads (weight 0.4) when the model returns them."""
    loss = F.cross_entropy(logits_of(output).float(), labels)
    if hasattr(output, "_asdict"):
        for name, aux in output._asdict().items():
            if name.startswith("aux") and aux is not None:
                loss = loss + AUX_LOSS_WEIGHT * F.cross_entropy(aux.float(), labels)
    return loss


def _schedule(config: RunConfig, epochs: int, steps_per_epoch: int) -> Callable[[int], float]:
    """A run's learning rate at each step of `epochs` epochs: `cosine_schedule` with its warmup fraction."""
    total_steps = steps_per_epoch * epochs
    return cosine_schedule(config.lr, total_steps, max(1, int(config.warmup_fraction * total_steps)))


def _schedule_change(checkpoint, config: RunConfig, steps_per_epoch: int) -> str | None:
    """What resuming a run for another number of epochs than it was started (or last extended) for does to its
    learning rate, which follows a schedule over all its epochs; None when the number is the same."""
    before = checkpoint.config.get("epochs")
    if not before or before == config.epochs or checkpoint.epoch >= config.epochs:
        return None
    step = checkpoint.epoch * steps_per_epoch
    was = _schedule(config, before, steps_per_epoch)(step)
    now = _schedule(config, config.epochs, steps_per_epoch)(step)
    return (f"This run was set for {before} epoch{'s' if before != 1 else ''} and now trains to {config.epochs}: "
            f"from epoch {checkpoint.epoch + 1} its learning rate follows the {config.epochs}-epoch warmup and cosine, "
            f"at {now:.2g} (the {before}-epoch schedule would be at {was:.2g}).")


def cosine_schedule(base_lr: float, total_steps: int, warmup_steps: int, floor: float = 0.02) -> Callable[[int], float]:
    """Linear warmup to `base_lr`, then cosine decay to `floor * base_lr` at `total_steps`."""
    def lr_at(step: int) -> float:
        if step < warmup_steps:
            return base_lr * (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return base_lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))
    return lr_at


@dataclass(frozen=True)
class PassStats:
    """Totals of one pass over a loader (summed over all ranks)."""

    loss: float
    acc: float
    images: int
    seconds: float
    confusion: np.ndarray | None = field(default=None, repr=False)

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0


LOSS_EVERY_S = 2.0
"""Step events carry the loss every `log_every` steps (reading it waits for a GPU), and also once this many seconds
have passed since the last one: slow steps on a CPU still show a fresh loss."""
LOSS_READINGS = 20


def train_one_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                    lr_at: Callable[[int], float], first_step: int, runtime: Runtime,
                    epoch: int = 1, epochs: int = 1, callbacks: Iterable = (), log_every: int = 10) -> PassStats:
    """One pass over the training data: forward, loss, backward, step, with the scheduled learning rate. The loss is
    read every `log_every` steps, and at least LOSS_READINGS times an epoch when it has that many steps."""
    log_every = max(1, min(log_every, len(loader) // LOSS_READINGS))
    model.train()
    keep_frozen_norms_in_eval(model)
    totals = torch.zeros(3, device=runtime.device)  # loss sum, correct, images
    start = loss_read = time.perf_counter()
    for index, (images, labels) in enumerate(loader):
        lr = lr_at(first_step + index)
        for group in optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        images, labels = runtime.to_device(images, labels)
        with runtime.autocast():
            output = model(images)
        loss = classification_loss(output, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        totals[0] += loss.detach() * len(labels)
        totals[1] += (logits_of(output).argmax(1) == labels).sum()
        totals[2] += len(labels)
        last = index + 1 == len(loader)
        shown = None
        if last or index % log_every == 0 or time.perf_counter() - loss_read > LOSS_EVERY_S:
            shown, loss_read = loss.item(), time.perf_counter()
            if not math.isfinite(shown) and not runtime.dist.enabled:  # (ranks agree only on the epoch's total)
                raise LossNotFinite(shown, epoch, lr, f", step {index + 1} of {len(loader)}")
        _emit(callbacks, "on_step", StepEvent("train", epoch, epochs, index + 1, len(loader), shown, lr))
    loss_sum, correct, seen = distributed.all_reduce_sum(totals, runtime.dist).tolist()
    seen = max(seen, 1)
    if not math.isfinite(loss_sum):
        raise LossNotFinite(loss_sum, epoch, lr_at(first_step + len(loader) - 1))
    return PassStats(loss_sum / seen, correct / seen, int(seen), time.perf_counter() - start)


def evaluate(model: nn.Module, loader: DataLoader, runtime: Runtime, num_classes: int,
             epoch: int = 1, epochs: int = 1, callbacks: Iterable = ()) -> PassStats:
    """Loss, accuracy and confusion matrix (rows: true class, columns: predicted) over `loader`."""
    model.eval()
    loss_sum = torch.zeros((), device=runtime.device)
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=runtime.device)
    start = time.perf_counter()
    with torch.inference_mode():
        for index, (images, labels) in enumerate(loader):
            images, labels = runtime.to_device(images, labels)
            with runtime.autocast():
                logits = logits_of(model(images)).float()
            loss_sum += F.cross_entropy(logits, labels, reduction="sum")
            confusion += torch.bincount(labels * num_classes + logits.argmax(1), minlength=num_classes ** 2)
            _emit(callbacks, "on_step", StepEvent("eval", epoch, epochs, index + 1, len(loader)))
    distributed.all_reduce_sum(loss_sum, runtime.dist)
    distributed.all_reduce_sum(confusion, runtime.dist)
    matrix = confusion.view(num_classes, num_classes).cpu().numpy()
    seen = max(int(matrix.sum()), 1)
    return PassStats(loss_sum.item() / seen, float(np.trace(matrix)) / seen, seen, time.perf_counter() - start, matrix)


def _require_finite_val_loss(metrics: EpochMetrics) -> None:
    """Raise LossNotFinite when an epoch's validation loss is NaN or infinite (a diverged network's huge logits)."""
    if not math.isfinite(metrics.val_loss):
        raise LossNotFinite(metrics.val_loss, metrics.epoch, metrics.lr, ", on the validation images")


def make_optimizer(model: nn.Module, spec: ArchSpec, config: RunConfig, fused: bool = False) -> torch.optim.AdamW:
    """AdamW over the trainable parameters: weight decay on weights, not on biases and norms; the body's
    learning rate scaled by `body_lr_scale` (a group's `lr_scale`)."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            key = (_inside(name.rsplit(".", 1)[0], spec.classifier), parameter.dim() >= 2)
            groups.setdefault(key, []).append(parameter)
    param_groups = [{"params": params, "weight_decay": config.weight_decay if decay else 0.0,
                     "lr_scale": 1.0 if head else config.body_lr_scale}
                    for (head, decay), params in sorted(groups.items())]
    return torch.optim.AdamW(param_groups, lr=config.lr, fused=fused or None)


def _loader(dataset, batch_size: int, runtime: Runtime, workers: int, shuffle: bool = False,
            sampler=None, generator: torch.Generator | None = None, drop_last: bool = False) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
                      num_workers=workers, pin_memory=runtime.cuda, persistent_workers=workers > 0,
                      prefetch_factor=4 if workers else None, generator=generator, drop_last=drop_last)


def _run_dir_config(out_dir: Path | None, config: RunConfig, images: ImageSet, dist: DistContext) -> dict:
    """The config as stored, with the class names and the data's content hash (`data_hash`: the validation split
    can be rebuilt only from the same images); refuses an `out_dir` that holds a different run, or the same run
    whose data changed since it started."""
    stored = {**config.to_dict(), "classes": list(images.classes), "data_hash": images.content_hash}
    if out_dir is None:
        return stored
    existing = out_dir / "config.json"
    if existing.is_file():
        previous = read_json(existing)
        if not _is_run_config(previous):
            raise ConfigError(f"{existing} is not a cnnlab run's config; choose another output folder")
        changed = RunConfig.from_dict(previous).differences(config)
        if previous.get("classes") != list(images.classes):
            changed.append(f"classes {', '.join(images.classes)} (were {', '.join(previous.get('classes') or [])})")
        if changed:
            raise ConfigError(f"{out_dir} holds a different run: {'; '.join(changed)}; run it with its own "
                              "settings to continue it, or choose another output folder")
        if images.differs_from(previous.get("data_hash")):
            raise ConfigError(f"the images of {config.dataset} changed since this run started, so it cannot resume "
                              "on the same training and validation split; start a new run")
    if dist.is_main:
        atomic_write_json(existing, stored)
    return stored


def _is_run_config(data) -> bool:
    try:
        return isinstance(data, dict) and isinstance(RunConfig.from_dict(data), RunConfig)
    except TypeError:
        return False


def _resume_point(out_dir: Path | None, config: RunConfig):
    checkpoint = latest_checkpoint(out_dir) if out_dir else None
    if checkpoint is None:
        return None
    if not checkpoint.has_trainer_state:
        raise ConfigError(f"{checkpoint.path} has no optimizer state to resume from")
    if checkpoint.epoch > config.epochs:
        raise ConfigError(f"{out_dir} already trained {checkpoint.epoch} epochs, more than the {config.epochs} asked for")
    return checkpoint


def fit(config: RunConfig, callbacks: Iterable = (), out_dir: Path | None = None) -> RunResult:
    """Strategies I and II: train the network end to end, resuming from `out_dir`'s last checkpoint if any."""
    started = time.perf_counter()
    callbacks = list(callbacks)
    runtime = make_runtime(config.device)
    torch.manual_seed(config.seed)
    spec = get_spec(config.arch)
    out_dir = Path(out_dir) if out_dir else None

    # data: a stratified split; each rank trains on its share and evaluates its slice of the validation set
    weights = resolve_weights(config)
    images = load_dataset(config.dataset)
    _say_skipped(images, callbacks)
    num_classes = len(images.classes)
    train_idx, val_idx = split_images(images, config.val_fraction, config.seed)
    train_set = TransformedSubset(images, train_idx, transforms_for(spec, True, config.image_size))
    val_set = TransformedSubset(images, distributed.shard(val_idx, runtime.dist),
                                transforms_for(spec, False, config.image_size))
    workers = config.workers if config.workers is not None else worker_count(images, runtime.cuda)
    sampler = (DistributedSampler(train_set, runtime.dist.world_size, runtime.dist.rank, shuffle=True,
                                  seed=config.seed, drop_last=True) if runtime.dist.enabled else None)
    generator = torch.Generator()
    train_loader = _loader(train_set, config.batch_size, runtime, workers, shuffle=True, sampler=sampler,
                           generator=generator, drop_last=len(train_set) > config.batch_size * runtime.dist.world_size)
    val_loader = _loader(val_set, config.batch_size * 2, runtime, workers)

    # model: the new head for this dataset's classes, the freeze plan, the optimizer; resume if saved
    raw_model = fit_head(_create_model(config.arch, weights, num_classes), spec, config.head, num_classes)
    if drop_aux_head_too_small(raw_model, spec, config.image_size):
        _emit(callbacks, "on_message", f"{spec.title}'s auxiliary classifier needs a {spec.image_size} px input; at "
                                       f"{config.image_size} px it is switched off and the run trains on the main "
                                       "loss alone.")
    frozen = freeze_layers(raw_model, spec, config.freeze)
    stored_config = _run_dir_config(out_dir, config, images, runtime.dist)
    params_trainable, params_frozen = count_params(raw_model)
    raw_model.to(runtime.device, memory_format=runtime.memory_format)
    optimizer = make_optimizer(raw_model, spec, config, fused=runtime.fused)
    history: list[EpochMetrics] = []
    earlier_s = 0.0  # the time a resumed run had trained before, up to its checkpoint
    checkpoint = _resume_point(out_dir, config)
    if checkpoint is not None:
        load_checkpoint_weights(raw_model, checkpoint)
        load_trainer_state(checkpoint, optimizer)
        history = [EpochMetrics(**m) for m in checkpoint.metrics.get("history", [])][:checkpoint.epoch]
        earlier_s = checkpoint.metrics.get("train_time_s", sum(m.time_s for m in history))
    start_epoch = len(history)
    model = torch.compile(raw_model) if config.compile else raw_model

    steps_per_epoch = len(train_loader)
    lr_at = _schedule(config, config.epochs, steps_per_epoch)
    if checkpoint is not None and (note := _schedule_change(checkpoint, config, steps_per_epoch)):
        _emit(callbacks, "on_message", note)
    _emit(callbacks, "on_run_start", RunStart(config, str(runtime.device), images.classes, len(train_idx),
                                              len(val_idx), params_trainable, params_frozen, frozen, start_epoch,
                                              runtime.dist.world_size, start_epoch >= config.epochs))
    last_val, stopped, saved = None, False, checkpoint.path if checkpoint else None
    trained_s = earlier_s
    try:
        train_model, phase = None, None
        for epoch in range(start_epoch, config.epochs):
            # fastai's fine_tune: the head alone for `head_epochs`, then the configured freeze plan
            wanted = "body" if epoch < config.head_epochs else config.freeze
            if wanted != phase:
                freeze_layers(raw_model, spec, wanted)
                train_model, phase = _wrap_ddp(model, runtime), wanted
            if sampler is not None:
                sampler.set_epoch(epoch)
            generator.manual_seed(config.seed + epoch)
            train = train_one_epoch(train_model, train_loader, optimizer, lr_at, epoch * steps_per_epoch, runtime,
                                    epoch + 1, config.epochs, callbacks)
            last_val = evaluate(model, val_loader, runtime, num_classes, epoch + 1, config.epochs, callbacks)
            metrics = EpochMetrics(epoch + 1, config.epochs, train.loss, train.acc, last_val.loss, last_val.acc,
                                   train.seconds + last_val.seconds, train.images_per_s,
                                   lr_at((epoch + 1) * steps_per_epoch - 1))
            _require_finite_val_loss(metrics)
            history.append(metrics)
            trained_s = earlier_s + time.perf_counter() - started  # what the checkpoint and the result both say
            if runtime.dist.is_main and out_dir is not None:
                saved = save_checkpoint(out_dir, epoch + 1, raw_model, stored_config,
                                        {"history": [asdict(m) for m in history], "train_time_s": trained_s},
                                        optimizer).path
            _emit(callbacks, "on_epoch_end", metrics)
    except StopRun:
        stopped = True
    if last_val is None:  # nothing trained now (resumed a finished run, or stopped in the first epoch)
        if stopped and checkpoint is not None:  # the result is of the model the run keeps, not of a part-epoch
            load_checkpoint_weights(raw_model, checkpoint)
        last_val = evaluate(model, val_loader, runtime, num_classes)
    freeze_layers(raw_model, spec, config.freeze)
    if stopped:  # (a finished run's rerun keeps its earlier time; one that finished now, its last checkpoint's)
        trained_s = earlier_s + time.perf_counter() - started
    result = RunResult(config, images.classes, last_val.acc, _matrix(last_val.confusion),
                       trained_s, params_trainable, params_frozen,
                       str(runtime.device), tuple(history), last_val.loss, str(saved) if saved else None,
                       str(out_dir) if out_dir else None, skipped=images.skipped, stopped=stopped,
                       world_size=runtime.dist.world_size)
    return _finish(result, len(train_idx), len(val_idx), out_dir, runtime, callbacks)


def _say_skipped(images: ImageSet, callbacks) -> None:
    if images.skipped:
        _emit(callbacks, "on_message", f"skipped {len(images.skipped)} unreadable file"
              f"{'s' if len(images.skipped) > 1 else ''}: {first_names(images.skipped)}")


def _wrap_ddp(model: nn.Module, runtime: Runtime) -> nn.Module:
    if not runtime.dist.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[runtime.device.index] if runtime.cuda else None)


def _matrix(confusion: np.ndarray) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(int(v) for v in row) for row in confusion)


def _finish(result: RunResult, train_size: int, val_size: int, out_dir: Path | None, runtime: Runtime,
            callbacks: list) -> RunResult:
    """The result with what the run cost in MACs (`planner.run_compute`), saved as `metrics.json` in `out_dir`."""
    from cnnlab.planner import run_compute

    cost = run_compute(result.config.to_dict(), len(result.classes), train_size, val_size, len(result.history))
    result = replace(result, **cost)
    if runtime.dist.is_main and out_dir is not None:
        atomic_write_json(out_dir / "metrics.json", result.to_json())
    _emit(callbacks, "on_run_end", result)
    return result


def resolve_weights(config: RunConfig) -> str:
    """The weights a run loads: 'none' for scratch, otherwise pretrained ('default' resolved, offline first)."""
    from cnnlab.weights import default_weights

    if config.weights != "default":
        return config.weights
    with _transfer_weights_errors():
        return default_weights(config.arch, pretrained=True)


@contextmanager
def _transfer_weights_errors():
    """Weights errors worded for a run: random weights are Strategy I there (`WeightsError.for_training`)."""
    from cnnlab.weights import WeightsError

    try:
        yield
    except WeightsError as error:
        raise error.for_training() from None


def keeps_model(strategy: str, tap: str = PENULTIMATE, pooling: str = AVERAGE) -> bool:
    """Whether a run saves a whole model, to predict with, export and look inside: Strategies I and II always;
    Strategy III, whatever its classifier, when it reads the averaged features of the classifier's input, where
    the classifier becomes the network's new head (`heads`); a probe never."""
    if strategy in ("scratch", "finetune"):
        return True
    return strategy == "extract" and tap == PENULTIMATE and pooling == AVERAGE


def preflight(config: RunConfig, check_data: bool = True):
    """What can be checked before a run starts, the way the run would meet it: its device, freeze plan and tap, its
    weights and, unless `check_data` is False (checked already for another run), its dataset (`data.DatasetCheck`,
    returned; WeightsError, ConfigError or DatasetError otherwise). Nothing is downloaded; the network is built on
    the meta device only."""
    from cnnlab.data import check_dataset
    from cnnlab.weights import check_weights

    resolve_device(config.device)
    spec = get_spec(config.arch)
    with torch.device("meta"):
        model = build_model(config.arch)
    if config.strategy in ("scratch", "finetune"):
        freeze_layers(model, spec, config.freeze)
    if config.strategy == "extract":
        _require_tap(model, spec, config.tap)
    with _transfer_weights_errors():
        check_weights(config.arch, resolve_weights(config))
    return check_dataset(config.dataset) if check_data else None


def _require_tap(model: nn.Module, spec: ArchSpec, tap: str) -> None:
    try:
        check_tap(model, spec, tap)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def drop_aux_head_too_small(model: nn.Module, spec: ArchSpec, image_size: int | None) -> bool:
    """Switch off Inception v3's auxiliary classifier where `image_size` leaves its input maps (Mixed_6e's) too
    small for its 5x5 pool and 5x5 convolution; it runs only in training, so only training meets the error. True
    when switched off; the run then trains on the main loss alone."""
    aux = getattr(model, "AuxLogits", None)
    if aux is None or image_size is None or image_size >= spec.image_size:
        return False
    rows = profile_arch(spec.name, image_size).rows
    maps = next(row.output_shape for row in rows if row.name.startswith("Mixed_6e."))
    trial = copy.deepcopy(aux).to("meta").eval()
    try:
        trial(torch.empty(2, aux.conv0.conv.in_channels, *maps[-2:], device="meta"))
        return False
    except RuntimeError:
        model.AuxLogits, model.aux_logits = None, False
        return True


def _create_model(arch: str, weights: str, num_classes: int | None) -> nn.Module:
    from cnnlab.weights import create_model

    with _transfer_weights_errors():
        return create_model(arch, weights, num_classes)


# ------------------------------------------------------------------------------- strategy III and probe

def _feature_keys(model: nn.Module, images: ImageSet, config: RunConfig, weights: str, bf16: bool,
                  taps: list[str]) -> dict[str, str]:
    """The feature cache's key for each tap: this backbone's weights, these images, the run's preprocessing,
    pooling and precision."""
    spec = get_spec(config.arch)
    weights_id = f"{weights}:{model_fingerprint(model)}"
    return {tap: cache_key(config.arch, weights_id, images.content_hash, tap, spec.preprocessing_at(config.image_size),
                           spec.input_size[0], "bfloat16" if bf16 else "float32", config.tap_pooling) for tap in taps}


def _taps(config: RunConfig) -> list[str]:
    return list(get_spec(config.arch).stages) if config.strategy == "probe" else [config.tap]


def features_cached(config: RunConfig, images: ImageSet | None = None) -> bool:
    """Whether a Strategy III run or probe of `config` would find all its features in the cache (an earlier run
    computed them from the same backbone, weights and images), so that it runs no forward pass. Loads the weights,
    offline only, and `images` unless given."""
    if config.strategy not in ("extract", "probe"):
        return False
    images = images if images is not None else load_dataset(config.dataset, download=False)
    weights = resolve_weights(config)
    keys = _feature_keys(_create_model(config.arch, weights, None), images, config, weights,
                         resolve_device(config.device) == "cuda", _taps(config))
    return all(cache_path(key).exists() for key in keys.values())


def _features(model: nn.Module, spec: ArchSpec, images: ImageSet, config: RunConfig, weights: str,
              runtime: Runtime, taps: list[str], callbacks: list) -> tuple[dict[str, np.ndarray], str]:
    """Each tap's features for every image, from the cache where present; also 'hit', 'miss' or 'partial'."""
    keys = _feature_keys(model, images, config, weights, runtime.bf16, taps)
    found = {tap: load_cached(key) for tap, key in keys.items()}
    found = {tap: f for tap, f in found.items() if f is not None and len(f) == len(images)}
    missing = [tap for tap in taps if tap not in found]
    stages = f" at {len(missing)} stages" if len(taps) > 1 else ""
    cached = f" (the other {len(found)} stages' come from the cache)" if found else ""
    _emit(callbacks, "on_message",
          f"features of all {len(images):,} images from the cache (an earlier run computed them with the same "
          "backbone, weights and images): no forward pass needed" if not missing else
          f"computing the features of {len(images):,} images{stages}, one forward pass each{cached}; they are "
          "cached for later runs")
    if missing:
        dataset = TransformedSubset(images, np.arange(len(images)), transforms_for(spec, False, config.image_size))
        workers = config.workers if config.workers is not None else worker_count(images, runtime.cuda)
        loader = _loader(dataset, config.batch_size * 2, runtime, workers)
        progress = lambda step, steps: _emit(callbacks, "on_step", StepEvent("features", 1, 1, step, steps))
        try:
            computed = extract_features(model, spec, loader, missing, runtime.to_device, runtime.autocast, progress,
                                        config.tap_pooling)
        except FeatureSizeError as error:
            raise ConfigError(str(error)) from None
        for tap, features in computed.items():
            store(keys[tap], features)
        found.update(computed)
    status = "hit" if not missing else "miss" if len(missing) == len(taps) else "partial"
    return found, status


def _backbone(config: RunConfig, runtime: Runtime) -> tuple[nn.Module, str]:
    if runtime.dist.enabled:
        raise ConfigError(f"{config.strategy} runs in one process; launch it without torchrun")
    weights = resolve_weights(config)
    model = _create_model(config.arch, weights, None)
    model.to(runtime.device, memory_format=runtime.memory_format)
    return model.requires_grad_(False).eval(), weights


def extract(config: RunConfig, callbacks: Iterable = (), out_dir: Path | None = None) -> RunResult:
    """Strategy III: frozen backbone features (cached) into a classifier. Where the features are the classifier's
    input (see keeps_model), the backbone is saved with the fitted classifier as its head: a whole model."""
    from cnnlab.planner import freeze_plan

    started = time.perf_counter()
    callbacks = list(callbacks)
    runtime = make_runtime(config.device, inference=True)
    torch.manual_seed(config.seed)
    spec = get_spec(config.arch)
    with torch.device("meta"):  # a tap the network lacks fails before anything is read or loaded
        _require_tap(build_model(config.arch), spec, config.tap)
    _emit(callbacks, "on_message", f"reading {config.dataset} and loading {config.arch}")
    images = load_dataset(config.dataset)
    _say_skipped(images, callbacks)
    num_classes = len(images.classes)
    # split first: a class too small to split fails before any feature is computed
    train_idx, val_idx = split_images(images, config.val_fraction, config.seed)
    out_dir = Path(out_dir) if out_dir else None
    model, weights = _backbone(config, runtime)
    stored_config = _run_dir_config(out_dir, config, images, runtime.dist)
    earlier = _saved_classifier(out_dir, config, spec)
    features, cache = _features(model, spec, images, config, weights, runtime, _taps(config), callbacks)
    x = features[config.tap]
    y = images.targets
    head_params = (x.shape[1] + 1) * num_classes if config.classifier in ("logreg", "linear") else 0
    params_frozen = freeze_plan(config.arch, config.strategy, config.freeze, num_classes, config.image_size,
                                config.tap, config.head).params_frozen  # as run_compute asks: one plan, cached
    _emit(callbacks, "on_run_start", RunStart(config, str(runtime.device), images.classes, len(train_idx),
                                              len(val_idx), head_params, params_frozen,
                                              start_epoch=len(earlier.history) if earlier else 0,
                                              finished_before=earlier is not None))
    history: tuple[EpochMetrics, ...] = ()
    val_loss, stopped, saved = None, False, None
    if earlier is not None:  # a finished run again: its saved classifier, on the features
        head, history, saved = earlier.head, earlier.history, str(earlier.checkpoint.path)
        predictions = _predict_with_head(head, x[val_idx])
        val_loss = history[-1].val_loss if history else None
    elif config.classifier == "linear":
        head, history, stopped = _train_linear_head(x, y, train_idx, val_idx, num_classes, config, runtime,
                                                    callbacks)
        predictions = _predict_with_head(head, x[val_idx])
        val_loss = history[-1].val_loss if history else None
    else:
        pipeline = make_classifier(config.classifier, config.seed).fit(x[train_idx], y[train_idx])
        predictions = pipeline.predict(x[val_idx])
        head = None  # made from the pipeline only when it is saved
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (y[val_idx], predictions), 1)
    if saved is None and keeps_model(config.strategy, config.tap, config.tap_pooling) and out_dir is not None:
        if head is None:
            head = classifier_as_head(pipeline, config.classifier, num_classes, x[train_idx], y[train_idx])
        saved = _save_with_head(model, spec, head, out_dir, len(history), stored_config, history)
    train_time_s = earlier.train_time_s if earlier and earlier.train_time_s is not None else \
        time.perf_counter() - started
    result = RunResult(config, images.classes, float(np.trace(confusion) / confusion.sum()), _matrix(confusion),
                       train_time_s, head_params, params_frozen, str(runtime.device), history,
                       val_loss, saved, str(out_dir) if out_dir else None, cache, images.skipped, stopped)
    return _finish(result, len(train_idx), len(val_idx), out_dir, runtime, callbacks)


@dataclass(frozen=True)
class SavedClassifier:
    """The classifier a finished Strategy III run saved as its model's head, with its epochs and training time."""

    head: nn.Module
    checkpoint: Checkpoint
    history: tuple[EpochMetrics, ...]
    train_time_s: float | None


def _saved_classifier(out_dir: Path | None, config: RunConfig, spec: ArchSpec) -> SavedClassifier | None:
    """The classifier a finished earlier run of `config` saved in `out_dir`: fitted, or a linear head trained all
    its epochs. None otherwise; a linear head stopped early, or trained for another number of epochs, is trained
    again from the start (on cached features that takes seconds)."""
    checkpoint = latest_checkpoint(out_dir) if out_dir else None
    if checkpoint is None:
        return None
    history = tuple(EpochMetrics(**m) for m in checkpoint.metrics.get("history", []))
    epochs = config.epochs if config.classifier == "linear" else 0
    if checkpoint.epoch != epochs or len(history) != epochs or any(m.epochs != epochs for m in history):
        return None
    earlier = read_json(out_dir / "metrics.json") if (out_dir / "metrics.json").is_file() else {}
    return SavedClassifier(head_from_checkpoint(checkpoint), checkpoint, history, earlier.get("train_time_s"))


def _train_linear_head(x: np.ndarray, y: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray, num_classes: int,
                       config: RunConfig, runtime: Runtime,
                       callbacks: list) -> tuple[nn.Linear, tuple[EpochMetrics, ...], bool]:
    """A linear layer on centred features scaled by their overall spread, trained with the same loop; returned with
    the scaling folded in, its epochs, and whether a callback stopped it early (StopRun). One scale for all features, not one each: a channel that barely fires in training would
    otherwise be blown up a thousandfold on the validation image where it does, and so would its logits."""
    mean = x[train_idx].mean(0)
    spread = float(x[train_idx].std()) or 1.0
    scale = np.full_like(mean, spread)
    standardized = torch.from_numpy((x - mean) / scale).float()
    labels = torch.from_numpy(y)
    train_set = TensorDataset(standardized[train_idx], labels[train_idx])
    val_set = TensorDataset(standardized[val_idx], labels[val_idx])
    head = nn.Linear(x.shape[1], num_classes).to(runtime.device)
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    for group in optimizer.param_groups:
        group["lr_scale"] = 1.0
    generator = torch.Generator().manual_seed(config.seed)
    train_loader = _loader(train_set, config.batch_size, runtime, 0, shuffle=True, generator=generator)
    val_loader = _loader(val_set, config.batch_size * 4, runtime, 0)
    steps = len(train_loader)
    lr_at = _schedule(config, config.epochs, steps)
    history, stopped = [], False
    try:
        for epoch in range(config.epochs):
            train = train_one_epoch(head, train_loader, optimizer, lr_at, epoch * steps, runtime, epoch + 1,
                                    config.epochs, callbacks)
            val = evaluate(head, val_loader, runtime, num_classes, epoch + 1, config.epochs)
            history.append(EpochMetrics(epoch + 1, config.epochs, train.loss, train.acc, val.loss, val.acc,
                                        train.seconds + val.seconds, train.images_per_s,
                                        lr_at((epoch + 1) * steps - 1)))
            _require_finite_val_loss(history[-1])
            _emit(callbacks, "on_epoch_end", history[-1])
    except StopRun:
        stopped = True
    weight, bias = head.weight.detach().cpu().double().numpy(), head.bias.detach().cpu().double().numpy()
    return linear_from(weight, bias, mean.astype(np.float64), scale.astype(np.float64)), tuple(history), stopped


def _predict_with_head(head: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return head(torch.from_numpy(x).float()).argmax(1).numpy()


def _save_with_head(model: nn.Module, spec: ArchSpec, head: nn.Module, out_dir: Path, epochs: int,
                    stored_config: dict, history: tuple[EpochMetrics, ...]) -> str:
    """Save the backbone with `head` as its classifier: a whole model that `cnnlab export` can take."""
    model.set_submodule(spec.classifier, head.to(next(model.parameters()).device))
    return str(save_checkpoint(out_dir, epochs, model, stored_config, {"history": [asdict(m) for m in history]}).path)


def probe(config: RunConfig, callbacks: Iterable = ()) -> ProbeResult:
    """Strategy III at every stage of the backbone: validation accuracy of pooled features, stem to top."""
    started = time.perf_counter()
    callbacks = list(callbacks)
    runtime = make_runtime(config.device, inference=True)
    spec = get_spec(config.arch)
    _emit(callbacks, "on_message", f"reading {config.dataset} and loading {config.arch}")
    images = load_dataset(config.dataset)
    _say_skipped(images, callbacks)
    train_idx, val_idx = split_images(images, config.val_fraction, config.seed)
    model, weights = _backbone(config, runtime)
    taps = _taps(config)
    features, cache = _features(model, spec, images, config, weights, runtime, taps, callbacks)
    y = images.targets
    rows = []
    for index, tap in enumerate(taps, start=1):
        x = features[tap]
        pipeline = make_classifier(config.classifier, config.seed).fit(x[train_idx], y[train_idx])
        rows.append(ProbeRow(index, tap, x.shape[1], float(pipeline.score(x[train_idx], y[train_idx])),
                             float(pipeline.score(x[val_idx], y[val_idx]))))
    from cnnlab.planner import run_compute

    as_extract = {**config.to_dict(), "strategy": "extract", "tap": PENULTIMATE}  # the same pass Strategy III makes
    cost = run_compute(as_extract, len(images.classes), len(train_idx), len(val_idx), 1)
    return ProbeResult(config, tuple(rows), time.perf_counter() - started, cache, len(val_idx), cost["total_macs"])


def run(config: RunConfig, callbacks: Iterable = (), out_dir: Path | None = None) -> RunResult | ProbeResult:
    """Run `config` with its strategy; the process group (under torchrun) is left at the end, even on error."""
    try:
        if config.strategy in ("scratch", "finetune"):
            return fit(config, callbacks, out_dir)
        if config.strategy == "extract":
            return extract(config, callbacks, out_dir)
        return probe(config, callbacks)
    finally:
        distributed.teardown()


def default_run_dir(config: RunConfig) -> Path:
    """`data_dir()/torchrun/<time>-<strategy>-<arch>-<dataset>` for a torchrun job with no output folder given
    (outside the run store's `data_dir()/runs`)."""
    from cnnlab.paths import data_dir

    dataset = "".join(ch if ch.isalnum() else "-" for ch in Path(config.dataset.split(":", 1)[-1]).name or config.dataset)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return data_dir() / "torchrun" / f"{stamp}-{config.strategy}-{config.arch}-{dataset}"


__all__ = ["RunConfig", "make_config", "config_in_use", "unused_fields", "ConfigError", "StopRun",
           "Callback", "ConsoleProgress", "features_cached", "RunStart", "StepEvent", "EpochMetrics", "RunResult", "guessing_note",
           "ProbeRow", "ProbeResult", "Runtime",
           "make_runtime", "freeze_layers", "parse_freeze", "count_params", "train_one_epoch", "evaluate",
           "fit", "extract", "probe", "run", "default_run_dir", "preflight"]
