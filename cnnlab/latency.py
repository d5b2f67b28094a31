"""Measured forward latency: median of repeated runs after warm-up, cached on disk per device and threads."""
from __future__ import annotations

import fcntl
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from cnnlab.data import ImageSet, TransformedSubset, transforms_for, validation_size, worker_count
from cnnlab.jobs import in_words
from cnnlab.naming import fitted_at_once
from cnnlab.paths import atomic_write_bytes, data_dir
from cnnlab.planner import tap_features
from cnnlab.profiling import profile_arch
from cnnlab.registry import build_model, example_input, fit_head, get_spec, logits_of
from cnnlab.runstore import RunStore
from cnnlab.training import drop_aux_head_too_small, freeze_layers, resolve_device


NOISY_SPREAD = 2.0


@dataclass(frozen=True)
class Latency:
    """One measurement: `median_ms` per forward of a `batch`, on `device_name` with `threads` CPU threads."""

    arch: str
    device: str
    device_name: str
    threads: int
    batch: int
    median_ms: float
    min_ms: float
    repeats: int
    torch_version: str
    measured_at: float

    @property
    def images_per_s(self) -> float:
        return 1000.0 * self.batch / self.median_ms

    @property
    def noisy(self) -> bool:
        """Whether the passes varied so much (the median over NOISY_SPREAD times the fastest, and by more than a
        millisecond: a tiny network's passes jitter by fractions of one) that other work on the machine, not the
        network, set the median."""
        return self.median_ms > NOISY_SPREAD * self.min_ms and self.median_ms - self.min_ms > 1.0

    @property
    def label(self) -> str:
        """'cpu, 2 threads' or 'cuda (NVIDIA H100)'."""
        return f"{self.device}, {self.threads} threads" if self.device == "cpu" else f"{self.device} ({self.device_name})"


def device_name(device: torch.device) -> str:
    """Human name of the device: the GPU model, or the CPU's architecture and core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{os.uname().machine} CPU, {os.cpu_count()} cores"


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_latency(arch: str, batch: int = 1, device: str = "auto", warmup: int = 3, repeats: int = 10,
                    progress: Callable[[float], None] | None = None) -> Latency:
    """Time `repeats` forward passes of a randomly initialised `arch` (weights do not change the speed); a batch
    too large for the GPU's memory is a ValueError. `progress` hears the fraction done after each pass."""
    spec = get_spec(arch)
    target = torch.device(resolve_device(device))
    try:
        times = _forward_times(build_model(arch).to(target), example_input(spec, batch=batch, device=target),
                               warmup, repeats, progress=progress)
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        raise ValueError(f"{spec.title} at batch {batch} does not fit in the memory of {device_name(target)}; "
                         "measure a smaller batch") from None
    return Latency(arch, target.type, device_name(target), torch.get_num_threads(), batch,
                   statistics.median(times), min(times), repeats, torch.__version__, time.time())


def _step_times(step, device: torch.device, warmup: int, repeats: int, budget_s: float = 0.0,
                progress: Callable[[float], None] | None = None) -> list[float]:
    """Milliseconds of each of `repeats` calls of `step` on `device` (waited for on a GPU), after `warmup` untimed;
    with a `budget_s`, more calls (up to 5 times `repeats`) while the timed ones have taken less than that.
    `progress` hears, after each call, the share of the `warmup + repeats` calls made so far."""
    times: list[float] = []
    for index in range(warmup + 5 * repeats):
        _synchronize(device)
        start = time.perf_counter()
        step()
        _synchronize(device)
        if progress is not None:
            progress(min(1.0, (index + 1) / (warmup + repeats)))
        if index >= warmup:
            times.append((time.perf_counter() - start) * 1000)
            if len(times) >= repeats and sum(times) >= budget_s * 1000:
                break
    return times


def _forward_times(model: torch.nn.Module, example: torch.Tensor, warmup: int, repeats: int,
                   budget_s: float = 0.0, progress: Callable[[float], None] | None = None) -> list[float]:
    """Milliseconds of each of at least `repeats` forward passes of `model` on random data (see `_step_times`)."""
    x = torch.randn_like(example)
    with torch.inference_mode():
        return _step_times(lambda: model(x), example.device, warmup, repeats, budget_s, progress)


class LatencyCache:
    """Measurements kept in a JSON file, one per (arch, device name, threads, batch)."""

    def __init__(self, path: Path | None = None):
        self.path = path or data_dir() / "latency.json"

    @staticmethod
    def key(arch: str, device_name: str, threads: int, batch: int) -> str:
        return f"{arch}|{device_name}|{threads}|{batch}"

    def load(self) -> dict[str, Latency]:
        """All stored measurements; an unreadable file counts as empty."""
        try:
            raw = json.loads(self.path.read_text())
            return {k: Latency(**v) for k, v in raw.items()}
        except (FileNotFoundError, json.JSONDecodeError, TypeError):
            return {}

    def save(self, result: Latency) -> None:
        """Add or replace one measurement, writing atomically; two sessions saving at once both keep theirs."""
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            entries = {k: asdict(v) for k, v in self.load().items()}
            entries[self.key(result.arch, result.device_name, result.threads, result.batch)] = asdict(result)
            atomic_write_bytes(self.path, json.dumps(entries, indent=1).encode())

    def for_device(self, device: str = "auto") -> dict[tuple[str, int], Latency]:
        """Measurements on this machine's `device` with the current thread count, by (arch, batch)."""
        target = torch.device(resolve_device(device))
        name, threads = device_name(target), torch.get_num_threads()
        return {(r.arch, r.batch): r for r in self.load().values()
                if r.device_name == name and r.threads == threads}

    def measure(self, arch: str, batch: int = 1, device: str = "auto", **kwargs) -> Latency:
        """Measure and store."""
        result = measure_latency(arch, batch, device, **kwargs)
        self.save(result)
        return result


@dataclass(frozen=True)
class RunEstimate:
    """How long a run's own work should take here, from timing a few of its steps at `batch`: `seconds` in all, from
    the milliseconds per image of a training step (forward, backward), of an evaluation forward pass and of
    reading and preparing an image for each (`data_ms_per_image` with augmentation, `eval_data_ms_per_image`), and
    for Strategy III with a scikit-learn classifier, the seconds of fitting it and classifying the validation
    images (`classifier_s`, included in `seconds`)."""

    seconds: float
    train_ms_per_image: float
    forward_ms_per_image: float
    device: str
    batch: int
    data_ms_per_image: float = 0.0
    eval_data_ms_per_image: float = 0.0
    classifier_s: float = 0.0

    def describe(self) -> str:
        """'about 22 min on cpu, 2 threads' (loading data and weights not counted)."""
        return f"about {in_words(self.seconds)} on {self.device}"


BUSY_LOAD = 0.8
"""Above this CPU load (the last minute's load average per core), timings here read long."""


def cpu_load() -> float:
    """The machine's load average over the last minute, per core (1.0: every core busy)."""
    return os.getloadavg()[0] / (os.cpu_count() or 1)


def busy_reason(store=None) -> str | None:
    """Why timings made now would read long: a run of `store` (the default RunStore) training on this machine, or
    other work keeping its processors busy; None when idle."""
    if any(run.status == "running" for run in (store or RunStore()).runs()):
        return "A run is training on this machine now, sharing its processor with these timings"
    if (load := cpu_load()) > BUSY_LOAD:
        return f"This machine is busy (its processors {min(load, 1):.0%} loaded over the last minute)"
    return None


ESTIMATE_BATCH_MACS = 4e9
"""The most multiply-accumulates one forward of the estimate's batch may cost (EfficientNet-Lite0 at 224: a batch
of 10; LeNet-5: the run's own batch, whose per-step overhead a smaller batch would overstate)."""


CLASSIFIER_SAMPLE = 1000
"""The made-up feature vectors a scikit-learn classifier's fit is timed on, at most (fewer for a smaller dataset)."""
LOGREG_ITERATIONS = 25
"""The iterations logistic regression's solver (L-BFGS) takes to converge on a network's features: 19 to 23 on
EfficientNet-Lite0's of the digits at 64 to 224 px. On made-up features it takes about 55, so its fit is timed per
iteration there and counted at this many."""
FIT_GROWTH = {"logreg": 1.0, "svm": 1.75, "knn": 1.0}
"""How a classifier's fit time grows with its training images n: as n to this power. The RBF SVM's fit (libsvm's
solver) grows faster than n: on EfficientNet-Lite0's 1,280 features of the digits, resampled with noise, it took
0.44 s for 1,438 images, 4.8 s for 5,000 and 39 s for 20,000 (n^1.5 to n^1.9)."""


MADE_UP_LATENT = 32
"""Made-up features vary along this many directions, a cluster per class, as a network's features vary along few of
theirs: isotropic noise in all 1,280 made every vector a support vector and the SVM's fit 2.5 times slower than on
real features. Like this (clusters 1.5 apart, noise 0.3 in every feature) an RBF SVM fits 1,438 of them in the 0.4 s
it takes on EfficientNet-Lite0's features of the digits, keeping a like share of support vectors (1,055; 944)."""


def made_up_features(count: int, centres: np.ndarray, directions: np.ndarray,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`count` made-up feature vectors and their labels, the classes in turn: each a point of its class's cluster
    (`centres`, one row per class, in MADE_UP_LATENT dimensions), spread 1.5, mapped into the features by
    `directions` (latent x features), plus noise 0.3 in every feature."""
    labels = np.arange(count) % len(centres)
    latent = centres[labels] + rng.normal(scale=1.5, size=(count, centres.shape[1]))
    noise = rng.normal(scale=0.3, size=(count, directions.shape[1]))
    return (latent @ directions + noise).astype(np.float32), labels


def classifier_seconds(kind: str, train_images: int, val_images: int, features: int, num_classes: int,
                       sample: int = CLASSIFIER_SAMPLE, seed: int = 0) -> float:
    """Seconds that fitting Strategy III's scikit-learn classifier `kind` (featurecache.make_classifier) on
    `train_images` vectors of `features` features and classifying `val_images` should take here: timed on up to
    `sample` made-up vectors (see MADE_UP_LATENT: about as hard to tell apart as real features) and scaled
    to the run's numbers (logistic regression's fit counted at LOGREG_ITERATIONS), the fit by `FIT_GROWTH`, the
    classifying by the validation images times, for the SVM and k-NN, which compare each with the training vectors
    they keep, the training images."""
    from cnnlab.featurecache import make_classifier

    rng, latent = np.random.default_rng(seed), min(MADE_UP_LATENT, features)
    centres, directions = rng.normal(size=(num_classes, latent)), rng.normal(size=(latent, features)) / latent ** 0.5
    made_up = lambda n: made_up_features(n, centres, directions, rng)
    fitted, held_out = made_up(max(num_classes, min(train_images, sample))), made_up(max(1, min(val_images, sample)))
    make_classifier(kind, seed).fit(*made_up(2 * num_classes))  # untimed: the first fit loads its libraries
    start = time.perf_counter()
    classifier = make_classifier(kind, seed).fit(*fitted)
    fit_s = time.perf_counter() - start
    if kind == "logreg":
        fit_s *= LOGREG_ITERATIONS / max(1, int(np.max(classifier[-1].n_iter_)))
    start = time.perf_counter()
    classifier.predict(held_out[0])
    predict_s = time.perf_counter() - start
    growth = train_images / len(fitted[0])
    compared = growth if kind in ("svm", "knn") else 1.0
    return fit_s * growth ** FIT_GROWTH[kind] + predict_s * val_images / len(held_out[0]) * compared


TIMED_IMAGES = 500
"""About how many images an estimate passes through the network to time it (a few batches forward and back)."""


def images_passed(config, images: ImageSet) -> int:
    """How many images the run passes through its network in all: every training and validation image each epoch
    for Strategies I and II, every image once for III and the probe."""
    return len(images) * (config.epochs if config.strategy in ("scratch", "finetune") else 1)


def too_small_to_time(config, images: ImageSet) -> bool:
    """Whether the run passes fewer images through its network than timing it would: launching it is as quick as
    estimating it."""
    return images_passed(config, images) <= TIMED_IMAGES


def estimate_run(config, images: ImageSet, steps: int = 3, budget_s: float = 2.0) -> RunEstimate:
    """Time training steps and evaluation passes of the network `config` builds (random weights, its head, its
    freeze plan, its input size, its batch or as much of it as `ESTIMATE_BATCH_MACS` allows), one untimed of each,
    then at least `steps` and more while they took under `budget_s` seconds (the median of more steps shrugs off a
    busy moment); time the data pipeline on a few of the run's own images (`data_preparation_ms`); and scale both
    to the run's epochs and its dataset `images` (loaded), split as the run splits them: Strategies I and II train
    every epoch and validate after it, III passes every image forward once, then fits its scikit-learn classifier
    (`classifier_seconds`; a linear layer's epochs cost next to nothing), and a probe fits one at every stage.
    Loading weights is not counted."""
    spec, num_classes = get_spec(config.arch), len(images.classes)
    target = torch.device(resolve_device(config.device))
    model = fit_head(build_model(config.arch, num_classes), spec, config.head, num_classes).to(target).eval()
    drop_aux_head_too_small(model, spec, config.image_size)  # as the run itself does
    macs = profile_arch(config.arch, config.image_size).macs
    batch = max(2, min(config.batch_size, int(ESTIMATE_BATCH_MACS / macs)))
    x = torch.randn_like(example_input(spec, config.image_size, batch, target))
    labels = torch.arange(batch, device=target) % num_classes
    forward_ms = statistics.median(_forward_times(model, x, 1, steps, budget_s)) / batch
    train_data_ms, eval_data_ms, workers = data_preparation_ms(config, images, target.type == "cuda")
    with_data = lambda compute_ms, data_ms: compute_ms + data_ms if not workers else max(compute_ms, data_ms / workers)
    train_ms = 0.0
    if config.strategy in ("scratch", "finetune"):
        freeze_layers(model, spec, config.freeze)
        model.train()
        def training_step():
            F.cross_entropy(logits_of(model(x)), labels).backward()

        train_ms = statistics.median(_step_times(training_step, target, 1, steps, budget_s)) / batch
        val_images = validation_size(len(images), num_classes, config.val_fraction)
        seconds = config.epochs * ((len(images) - val_images) * with_data(train_ms, train_data_ms)
                                   + val_images * with_data(forward_ms, eval_data_ms)) / 1000
    else:
        seconds = len(images) * with_data(forward_ms, eval_data_ms) / 1000
    fit_s = fit_seconds(config, images)
    label = f"{target.type}, {torch.get_num_threads()} threads" if target.type == "cpu" else device_name(target)
    return RunEstimate(seconds + fit_s, train_ms, forward_ms, label, batch, train_data_ms, eval_data_ms, fit_s)


def fit_seconds(config, images: ImageSet) -> float:
    """The seconds Strategy III's scikit-learn classifier takes to fit on `images`' features and classify the
    validation images (`classifier_seconds`), summed over every stage for a probe; 0 for a linear layer and for
    Strategies I and II."""
    if not fitted_at_once(config.strategy, config.classifier):
        return 0.0
    num_classes = len(images.classes)
    val_images = validation_size(len(images), num_classes, config.val_fraction)
    taps = get_spec(config.arch).stages if config.strategy == "probe" else (config.tap,)
    return sum(classifier_seconds(config.classifier, len(images) - val_images, val_images,
                                  tap_features(config.arch, tap, config.tap_pooling, config.image_size).count,
                                  num_classes, seed=config.seed) for tap in taps)


def probe_estimate(extract: RunEstimate, probe_config, images: ImageSet) -> RunEstimate:
    """A probe's estimate from the Strategy III estimate of the same network, input and images: the same forward
    pass over every image (timed once, for `extract`), then a fit at every stage (`fit_seconds`)."""
    fits = fit_seconds(probe_config, images)
    return replace(extract, seconds=extract.seconds - extract.classifier_s + fits, classifier_s=fits)


def data_preparation_ms(config, images: ImageSet, cuda: bool = False, count: int = 32) -> tuple[float, float, int]:
    """Milliseconds per image that reading and preparing `count` of the run's own `images` takes here, with the
    training transforms (augmentation) and with the evaluation ones, and the DataLoader workers the run would
    spread that work over (none: it adds to the compute)."""
    spec = get_spec(config.arch)
    picked = [int(i) for i in torch.linspace(0, len(images) - 1, min(count, len(images)))]
    times = []
    for train in (True, False):
        subset = TransformedSubset(images, picked, transforms_for(spec, train, config.image_size))
        start = time.perf_counter()
        for index in range(len(subset)):
            subset[index]
        times.append((time.perf_counter() - start) * 1000 / len(subset))
    return times[0], times[1], config.workers if config.workers is not None else worker_count(images, cuda)
