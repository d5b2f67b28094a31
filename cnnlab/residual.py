"""Skip connections: a plain network against the same network with ResNet's identity shortcuts.

He et al. 2015, "Deep Residual Learning for Image Recognition" (arXiv:1512.03385): deeper plain networks
train *worse* (the degradation problem); a block that outputs y = F(x) + x keeps dy/dx = dF/dx + I, a path of
gradient 1 around every block. This module builds a tiny family of such networks on scikit-learn's 8x8 digits
(1x8x8 tensors): a stem convolution, `depth` blocks of two 3x3 convolutions (optionally with batch norm),
with or without the identity shortcut, global average pooling and a linear head. Both variants have the same
parameters, so the same seed gives them the same initial weights.

`gradient_profile` measures the gradient norm per block at initialization on one real batch;
`train_comparison` trains both variants a few epochs with the training engine's loop.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cnnlab.data import load_dataset, stratified_split
from cnnlab.hooks import forward_hooks
from cnnlab.registry import INIT_LOCK
from cnnlab.training import (
    Callback,
    Runtime,
    StepEvent,
    classification_loss,
    cosine_schedule,
    evaluate,
    train_one_epoch,
)

VARIANTS = ("plain", "residual")
OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True)
class NetConfig:
    """One member of the family: `depth` blocks of two 3x3 convolutions with `channels` channels each."""

    depth: int = 20
    channels: int = 16
    batch_norm: bool = False
    seed: int = 0


@dataclass(frozen=True)
class GradientProfile:
    """Gradient norms at initialization, one per block (first block, nearest the input, first).

    `weights`: the norm of the loss's gradient over the block's parameters (what the optimizer sees);
    `activations`: the norm of the loss's gradient over the block's output."""

    variant: str
    config: NetConfig
    loss: float
    weights: tuple[float, ...]
    activations: tuple[float, ...]

    def first_to_last(self, quantity: str = "weights") -> float:
        """The first block's gradient norm over the last block's, of `quantity` ('weights' or 'activations'): near 0
        when the gradient vanishes."""
        norms = getattr(self, quantity)
        return norms[0] / norms[-1]


@dataclass(frozen=True)
class TrainSettings:
    """The short training run both variants get: same data split, optimizer, schedule and seed."""

    epochs: int = 5
    batch_size: int = 64
    lr: float = 3e-3
    optimizer: str = "adam"
    val_fraction: float = 0.2


@dataclass(frozen=True)
class EpochPoint:
    epoch: int
    loss: float
    val_acc: float


@dataclass(frozen=True)
class TrainCurve:
    """One variant's per-epoch training loss and validation accuracy."""

    variant: str
    history: tuple[EpochPoint, ...]
    seconds: float

    @property
    def final_loss(self) -> float:
        """Training loss after the last epoch."""
        return self.history[-1].loss

    @property
    def final_val_acc(self) -> float:
        """Validation accuracy after the last epoch."""
        return self.history[-1].val_acc


# ------------------------------------------------------------------------------------------- the networks

class Block(nn.Module):
    """Pre-activation block (He et al. 2016): F(x) = conv(relu(bn(conv(relu(bn(x)))))); y = F(x) + x with the
    skip, y = F(x) without it. Without batch norm the norms are identities."""

    def __init__(self, channels: int, batch_norm: bool, skip: bool):
        super().__init__()
        norm = (lambda: nn.BatchNorm2d(channels)) if batch_norm else nn.Identity
        self.skip = skip
        self.body = nn.Sequential(norm(), nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1),
                                  norm(), nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return out + x if self.skip else out


class SmallNet(nn.Module):
    """Stem conv, blocks, a final norm and ReLU, global average pooling, a linear head over 10 classes."""

    def __init__(self, config: NetConfig, skip: bool, in_channels: int = 1, num_classes: int = 10):
        super().__init__()
        c = config.channels
        self.stem = nn.Conv2d(in_channels, c, 3, padding=1)
        self.blocks = nn.Sequential(*(Block(c, config.batch_norm, skip) for _ in range(config.depth)))
        self.head = nn.Sequential(nn.BatchNorm2d(c) if config.batch_norm else nn.Identity(), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


def build_net(config: NetConfig, variant: str) -> SmallNet:
    """The network `variant` ('plain' or 'residual') of `config`, initialized from `config.seed`: both variants
    of one config start from the same weights."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from: {', '.join(VARIANTS)}")
    if config.depth < 1 or config.channels < 1:
        raise ValueError("depth and channels must be at least 1")
    with INIT_LOCK, torch.random.fork_rng(devices=[]):  # leaves the shared global generator as it was
        torch.manual_seed(config.seed)
        return SmallNet(config, skip=variant == "residual")


_FLUSHING = threading.Lock()
_flushing_runs = 0


@contextmanager
def _denormals_flushed() -> Iterator[None]:
    """Flush denormal floats to zero while any training of this module runs (a process-wide switch, so counted):
    the plain net's vanishing activations are denormals, slow on a CPU."""
    global _flushing_runs
    with _FLUSHING:
        _flushing_runs += 1
        torch.set_flush_denormal(True)
    try:
        yield
    finally:
        with _FLUSHING:
            _flushing_runs -= 1
            if not _flushing_runs:
                torch.set_flush_denormal(False)


# ------------------------------------------------------------------------------------------------- data

@lru_cache(maxsize=1)
def digits_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    """The digits as standardized float images (N, 1, 8, 8) and int64 labels (N,)."""
    digits = load_dataset("digits")
    images = torch.stack([torch.as_tensor(digits[i][0]) for i in range(len(digits))]).float() / 255
    images = (images - images.mean()) / images.std()
    return images, torch.from_numpy(digits.targets)


def digits_split(seed: int, val_fraction: float = 0.2) -> tuple[TensorDataset, TensorDataset]:
    """Train and validation sets from the project's stratified split."""
    images, labels = digits_tensors()
    train_idx, val_idx = stratified_split(labels.numpy(), val_fraction, seed)
    train, val = torch.from_numpy(train_idx), torch.from_numpy(val_idx)
    return TensorDataset(images[train], labels[train]), TensorDataset(images[val], labels[val])


def one_batch(seed: int, batch_size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of real training digits drawn with `seed`."""
    train, _ = digits_split(seed)
    picked = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:batch_size]
    return train.tensors[0][picked], train.tensors[1][picked]


# --------------------------------------------------------------------------------------------- gradients

def _norm(tensors) -> float:
    return float(torch.sqrt(sum((t.detach().double() ** 2).sum() for t in tensors)))


def gradient_profile(config: NetConfig, variant: str, batch_size: int = 128) -> GradientProfile:
    """Gradient norms per block of a freshly initialized network after one backward pass on real digits.

    Batch norm runs in training mode (batch statistics), as in the first training step."""
    model = build_net(config, variant).train()
    images, labels = one_batch(config.seed, batch_size)
    outputs: list[torch.Tensor] = []

    def keep(_module, _inputs, output):
        output.retain_grad()
        outputs.append(output)

    with forward_hooks((block, keep) for block in model.blocks):
        loss = classification_loss(model(images), labels)
    loss.backward()
    weights = tuple(_norm(p.grad for p in block.parameters()) for block in model.blocks)
    return GradientProfile(variant, config, loss.item(), weights, tuple(_norm([o.grad]) for o in outputs))


def gradient_profiles(config: NetConfig) -> dict[str, GradientProfile]:
    """`gradient_profile` for both variants, by variant name."""
    return {variant: gradient_profile(config, variant) for variant in VARIANTS}


# ---------------------------------------------------------------------------------------------- training

def _optimizer(model: nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
    groups = [{"params": list(model.parameters()), "lr_scale": 1.0}]  # train_one_epoch reads lr_scale
    if settings.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=settings.lr, momentum=0.9)
    if settings.optimizer == "adam":
        return torch.optim.Adam(groups, lr=settings.lr)
    raise ValueError(f"unknown optimizer {settings.optimizer!r}; choose from: {', '.join(OPTIMIZERS)}")


class _StepReporter(Callback):
    def __init__(self, variant: str, on_step: Callable[[str, StepEvent], None]):
        self.variant, self.report = variant, on_step

    def on_step(self, event: StepEvent) -> None:
        self.report(self.variant, event)


def train_variant(config: NetConfig, variant: str, settings: TrainSettings = TrainSettings(),
                  on_step: Callable[[str, StepEvent], None] | None = None) -> TrainCurve:
    """Train one variant for `settings.epochs` on the digits; `on_step(variant, event)` after each training batch
    (`training.StepEvent`: epoch and step of how many)."""
    runtime = Runtime(torch.device("cpu"))
    model = build_net(config, variant)
    optimizer = _optimizer(model, settings)
    train_set, val_set = digits_split(config.seed, settings.val_fraction)
    generator = torch.Generator().manual_seed(config.seed)
    train_loader = DataLoader(train_set, settings.batch_size, shuffle=True, generator=generator)
    val_loader = DataLoader(val_set, 512)
    steps = len(train_loader)
    lr_at = cosine_schedule(settings.lr, steps * settings.epochs, max(1, steps // 2))
    history, start = [], time.perf_counter()
    callbacks = (_StepReporter(variant, on_step),) if on_step else ()
    with _denormals_flushed():
        for epoch in range(settings.epochs):
            train = train_one_epoch(model, train_loader, optimizer, lr_at, epoch * steps, runtime, epoch + 1,
                                    settings.epochs, callbacks)
            val = evaluate(model, val_loader, runtime, 10, epoch + 1, settings.epochs)
            history.append(EpochPoint(epoch + 1, train.loss, val.acc))
    return TrainCurve(variant, tuple(history), time.perf_counter() - start)


def train_comparison(config: NetConfig, settings: TrainSettings = TrainSettings(),
                     on_step: Callable[[str, StepEvent], None] | None = None) -> dict[str, TrainCurve]:
    """Train the plain and the residual variant of `config` with the same settings, by variant name."""
    return {variant: train_variant(config, variant, settings, on_step) for variant in VARIANTS}


def curves_as_histories(curves: dict[str, TrainCurve]) -> dict[str, list[dict]]:
    """Curves in the shape `cnnlab.charts.run_curves` draws: label -> [{epoch, loss, val_acc}, ...]."""
    return {variant: [{"epoch": p.epoch, "loss": p.loss, "val_acc": p.val_acc} for p in curve.history]
            for variant, curve in curves.items()}
