"""Strategy III's features: computed once through a frozen backbone, cached on disk, fed to a classifier.

A tap is where features are read: `penultimate` (the input of the classifier layer: the pooled
features, or AlexNet's 4096-d fc7) or any module path (a stage such as `blocks.2`); feature maps are
global-average-pooled to one vector per image, or flattened whole (the lecture's VGG16 recipe:
7 x 7 x 512 = 25,088 features). The cache key covers the architecture, the weights, the dataset's
content hash, the tap, its pooling, the preprocessing and the precision, so any change computes afresh.
"""
from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from cnnlab.hooks import forward_hooks
from cnnlab.naming import AVERAGE, PENULTIMATE
from cnnlab.paths import atomic_write_bytes, data_dir
from cnnlab.registry import ArchSpec, Preprocessing

CACHE_VERSION = 1
MAX_FEATURE_BYTES = 4 * 2**30


def check_tap(model: nn.Module, spec: ArchSpec, tap: str) -> None:
    """ValueError unless `tap` is `penultimate` or a module of `model`."""
    path = spec.classifier if tap == PENULTIMATE else tap
    try:
        if not path.strip():
            raise AttributeError(path)  # get_submodule('') is the whole model: its logits are no tap
        model.get_submodule(path)
    except AttributeError:
        raise ValueError(f"{spec.name} has no layer {tap!r}; use {PENULTIMATE}, a stage ({', '.join(spec.stages)}) "
                         f"or a layer that `cnnlab features IMAGE --arch {spec.name} --layer list` lists") from None


def cache_key(arch: str, weights: str, dataset_hash: str, tap: str, prep: Preprocessing, channels: int,
              precision: str = "float32", pooling: str = AVERAGE) -> str:
    """The hex key under which one tap's features for one dataset, pooled by `pooling` and computed at
    `precision`, are cached."""
    fields = {"version": CACHE_VERSION, "arch": arch, "weights": weights, "dataset": dataset_hash, "tap": tap,
              "channels": channels, "preprocessing": asdict(prep), "precision": precision, "pooling": pooling}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:24]


def cache_path(key: str, root: Path | None = None) -> Path:
    """Where the features for `key` live: `data_dir()/features/KEY.npz`."""
    return (root or data_dir() / "features") / f"{key}.npz"


def _pool(tensor: torch.Tensor, pooling: str = AVERAGE) -> torch.Tensor:
    tensor = tensor.float()  # average in float32, also under bf16 autocast
    if tensor.dim() > 2 and pooling == AVERAGE:
        tensor = tensor.flatten(2).mean(-1)
    return tensor.flatten(1)


class FeatureSizeError(ValueError):
    """Flattened features too large to keep in memory."""


def _check_size(features: torch.Tensor, images: int, tap: str) -> None:
    size = features.shape[1] * images * 4
    if size > MAX_FEATURE_BYTES:
        raise FeatureSizeError(f"{tap} flattened gives {features.shape[1]:,} features per image, {size / 2**30:.1f} GB "
                         f"for {images:,} images (limit {MAX_FEATURE_BYTES / 2**30:.0f} GB): tap a later layer, a "
                         "smaller input size, or average pooling")


class _TapsCaptured(Exception):
    """Raised by the last tap's hook to end a forward pass early."""


def extract_features(model: nn.Module, spec: ArchSpec, loader: DataLoader, taps: list[str],
                     to_device: Callable, autocast: Callable, on_batch: Callable[[int, int], None] | None = None,
                     pooling: str = AVERAGE) -> dict[str, np.ndarray]:
    """One pass of `loader` through `model` (eval, no grad) capturing each tap as an (N, D) float32 array:
    feature maps averaged over their positions, or flattened whole with `pooling='flatten'` (FeatureSizeError
    when that would pass MAX_FEATURE_BYTES). Each forward pass stops once every tap is captured: an early tap
    does not pay for the rest of the network."""
    captured: dict[str, list[torch.Tensor]] = {tap: [] for tap in taps}
    image_count = len(loader.dataset)
    this_batch: set[str] = set()

    def keep(tap: str, tensor: torch.Tensor) -> None:
        features = _pool(tensor, pooling).cpu()
        if not captured[tap]:
            _check_size(features, image_count, tap)
        captured[tap].append(features)
        this_batch.add(tap)
        if len(this_batch) == len(taps):
            raise _TapsCaptured  # the layers after the last tap would compute nothing that is kept

    before_head = [(model.get_submodule(spec.classifier), lambda module, args, tap=tap: keep(tap, args[0]))
                   for tap in taps if tap == PENULTIMATE]
    after_layer = [(model.get_submodule(tap), lambda module, args, output, tap=tap: keep(tap, output))
                   for tap in taps if tap != PENULTIMATE]
    model.eval()
    with forward_hooks(before_head, pre=True), forward_hooks(after_layer), torch.inference_mode():
        for index, (images, labels) in enumerate(loader):
            images, _ = to_device(images, labels)
            this_batch.clear()
            try:
                with autocast():
                    model(images)
            except _TapsCaptured:
                pass
            if on_batch:
                on_batch(index + 1, len(loader))
    return {tap: torch.cat(parts).numpy() for tap, parts in captured.items()}


def load_cached(key: str, root: Path | None = None) -> np.ndarray | None:
    """Cached features for `key`, or None."""
    path = cache_path(key, root)
    if not path.is_file():
        return None
    try:
        with np.load(path) as stored:
            return stored["features"]
    except (OSError, ValueError, KeyError):
        return None


def store(key: str, features: np.ndarray, root: Path | None = None) -> Path:
    """Write features for `key` atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, features=features)
    return atomic_write_bytes(cache_path(key, root), buffer.getvalue())


def make_classifier(kind: str, seed: int = 0):
    """An unfitted scikit-learn classifier on standardized features: logreg, svm (RBF) or knn (k=5)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    makers = {
        "logreg": lambda: LogisticRegression(max_iter=2000, random_state=seed),
        "svm": lambda: SVC(kernel="rbf", random_state=seed),
        "knn": lambda: KNeighborsClassifier(n_neighbors=5),
    }
    if kind not in makers:
        raise ValueError(f"unknown scikit-learn classifier {kind!r}; choose from: {', '.join(makers)}")
    return make_pipeline(StandardScaler(), makers[kind]())


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 of a model's weights and buffers, in order (16 hex characters): which weights made the features."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def linear_from(weight: np.ndarray, bias: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> nn.Linear:
    """An `nn.Linear` computing `weight @ ((x - mean) / scale) + bias` on raw features `x`."""
    folded = weight / scale
    layer = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(folded))
        layer.bias.copy_(torch.from_numpy(bias - folded @ mean))
    return layer


def logreg_as_linear(pipeline, num_classes: int) -> nn.Linear:
    """Fold a fitted StandardScaler + LogisticRegression into one `nn.Linear` with the same argmax."""
    scaler, logreg = pipeline[0], pipeline[-1]
    coef, intercept = logreg.coef_, logreg.intercept_
    if coef.shape[0] == 1 and num_classes == 2:  # binary: one score for class 1 against 0
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.concatenate([[0.0], intercept])
    return linear_from(coef, intercept, scaler.mean_, scaler.scale_)
