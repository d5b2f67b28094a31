"""Profiling: parameters, multiply-accumulates, output shapes and depth, total and per layer.

Operations are counted by `torch.utils.flop_counter.FlopCounterMode` (which counts 2 FLOPs per
multiply-accumulate); depth is the longest chain of conv/linear layers from input to output (and, apart,
with pooling layers counted too), tracked tensor by tensor. Models can live on the meta device, which makes profiling nearly free.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode
from torch.utils.module_tracker import ModuleTracker

from cnnlab.hooks import forward_hooks
from cnnlab.registry import build_model, example_input, get_spec

COUNTING_LOCK = threading.Lock()
"""Held while operations are counted, so that two counts never share the process-wide module hooks."""


class _ThisThreadModuleTracker(ModuleTracker):
    """FlopCounterMode's module tracker, blind to modules that other threads run meanwhile. Its hooks are
    process-wide: another dashboard session's forward pass (Predict, Look inside) would otherwise enter and
    leave module names while this thread counts, and its operations would be booked to the wrong modules."""

    def __init__(self) -> None:
        super().__init__()
        self._thread = threading.get_ident()

    def _fw_pre_hook(self, mod, input) -> None:
        if threading.get_ident() == self._thread:
            super()._fw_pre_hook(mod, input)

    def _fw_post_hook(self, mod, input, output) -> None:
        if threading.get_ident() == self._thread:
            super()._fw_post_hook(mod, input, output)


def flop_counter() -> FlopCounterMode:
    """A FlopCounterMode that books operations only to the modules this thread runs."""
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _ThisThreadModuleTracker()
    return counter

WEIGHTED_OPS = frozenset({"conv1d", "conv2d", "conv3d", "linear", "conv_transpose1d", "conv_transpose2d"})
POOLING_OPS = frozenset({"max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
                         "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_avg_pool1d", "adaptive_avg_pool2d",
                         "max_pool2d_with_indices", "adaptive_max_pool2d_with_indices"})


@dataclass(frozen=True)
class LayerRow:
    """One module's share: its own parameters, the MACs of its calls, and its last output shape."""

    name: str
    type: str
    output_shape: tuple[int, ...] | None
    params: int
    trainable_params: int
    macs: int
    calls: int
    formula: str | None = None

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def type_label(self) -> str:
        """The type, and how often the module ran where it ran more than once ('ReLU (runs 3x)': one module
        reused, shown with its last output)."""
        return self.type + (f" (runs {self.calls}x)" if self.calls > 1 else "")


@dataclass(frozen=True)
class ModelProfile:
    """Totals and per-layer rows for one model at one input shape (rows sum to the totals)."""

    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    params: int
    trainable_params: int
    macs: int
    depth: int
    size_mb: float
    rows: tuple[LayerRow, ...] = field(repr=False)
    depth_with_pooling: int = 0

    @property
    def flops(self) -> int:
        """FLOPs, counted as 2 x MACs."""
        return 2 * self.macs

    @property
    def frozen_params(self) -> int:
        return self.params - self.trainable_params


HUMAN_UNITS = (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3))


def human(number: float) -> str:
    """12_900_000 -> '12.9M', the way the lecture writes counts."""
    for unit, scale in HUMAN_UNITS:
        if abs(number) >= scale:
            return f"{number / scale:.1f}{unit}"
    return f"{number:g}"


def human_value(number: float) -> float:
    """The value `human(number)` reads as: 331,968 -> 332,000.0."""
    scale = next((scale for _, scale in HUMAN_UNITS if abs(number) >= scale), None)
    return round(number / scale, 1) * scale if scale else float(number)


def conv_formula(module: nn.Conv2d, output_shape: tuple[int, ...]) -> tuple[str, int]:
    """The lecture's form `(H x W x Cout) x (k x k x Cin)` for one image, and the MACs it gives."""
    height, width = output_shape[-2:]
    kh, kw = module.kernel_size
    cin = module.in_channels // module.groups
    macs = height * width * module.out_channels * kh * kw * cin
    return f"({height}x{width}x{module.out_channels}) x ({kh}x{kw}x{cin}) = {human(macs)}", macs


def linear_formula(module: nn.Linear) -> tuple[str, int]:
    """`out x in` MACs of a dense layer for one input vector."""
    macs = module.out_features * module.in_features
    return f"{module.out_features} x {module.in_features} = {human(macs)}", macs


class _DepthMode(TorchFunctionMode):
    """Tags every tensor with the number of conv/linear layers on the longest path that produced it, and apart
    from that with the number of conv/linear/pooling layers on the longest such path."""

    def __init__(self) -> None:
        super().__init__()
        self.depth = self.depth_with_pooling = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        depth = max((getattr(t, "_cnnlab_depth", 0) for t in tensors), default=0)
        pooled = max((getattr(t, "_cnnlab_depth_pool", 0) for t in tensors), default=0)
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        depth += name in WEIGHTED_OPS
        pooled += name in WEIGHTED_OPS or name in POOLING_OPS
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor) and not isinstance(tensor, nn.Parameter):
                tensor._cnnlab_depth = max(depth, getattr(tensor, "_cnnlab_depth", 0))
                tensor._cnnlab_depth_pool = max(pooled, getattr(tensor, "_cnnlab_depth_pool", 0))
        self.depth, self.depth_with_pooling = max(self.depth, depth), max(self.depth_with_pooling, pooled)
        return out


def _own_params(module: nn.Module) -> tuple[int, int]:
    params = list(module.parameters(recurse=False))
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def _module_macs(counter: FlopCounterMode) -> dict[str, int]:
    """MACs per module path ('' is the root), from FlopCounterMode's 'Root.path' keys."""
    macs = {}
    for key, per_op in counter.get_flop_counts().items():
        if key == "Global":
            continue
        path = key.split(".", 1)[1] if "." in key else ""
        macs[path] = sum(per_op.values()) // 2
    return macs


def profile_model(model: nn.Module, example: torch.Tensor) -> ModelProfile:
    """Profile `model` on `example` (one batch) in eval mode, restoring the model's mode and hooks after.

    Rows are leaf modules in the order they start to run; where a parent module holds parameters or does work
    outside its children (timm's BatchNormAct2d: the batch norm before its activation child), a row for the
    parent itself, just before its children; last, modules that never ran (an auxiliary classifier in eval
    mode). So rows follow the data and always sum to the totals.
    """
    modules = dict(model.named_modules())
    started: dict[str, int] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    calls: dict[str, int] = {}

    def note_start(name: str):
        def hook(_module, _inputs):
            started.setdefault(name, len(started))
        return hook

    def record(name: str):
        def hook(_module, _inputs, output):
            calls[name] = calls.get(name, 0) + 1
            tensors = [t for t in tree_flatten(output)[0] if isinstance(t, torch.Tensor)]
            if tensors:
                shapes[name] = tuple(tensors[0].shape)
        return hook

    counter, depth_mode = flop_counter(), _DepthMode()
    with COUNTING_LOCK:
        was_training = model.training
        model.eval()
        try:
            with (forward_hooks(((m, note_start(n)) for n, m in modules.items()), pre=True),
                  forward_hooks((m, record(n)) for n, m in modules.items()), torch.no_grad(), counter, depth_mode):
                output = model(example)
        finally:
            model.train(was_training)

    module_macs = _module_macs(counter)
    batch = example.shape[0]
    in_order = sorted(started, key=started.get) + [n for n in modules if n not in started]
    rows = []
    for name in in_order:
        module = modules[name]
        if not list(module.children()):
            if name:
                rows.append(_leaf_row(name, module, shapes.get(name), module_macs.get(name, 0), calls.get(name, 0),
                                      batch))
        elif (own := _parent_row(name, module, module_macs, shapes.get(name), calls.get(name, 0))) is not None:
            rows.append(own)

    output_tensor = tree_flatten(output)[0][0]
    params = sum(p.numel() for p in model.parameters())
    stored = params + sum(b.numel() for b in model.buffers())
    return ModelProfile(
        input_shape=tuple(example.shape),
        output_shape=tuple(output_tensor.shape),
        params=params,
        trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        macs=module_macs.get("", counter.get_total_flops() // 2),
        depth=depth_mode.depth,
        depth_with_pooling=depth_mode.depth_with_pooling,
        size_mb=stored * example.element_size() / 2**20,
        rows=tuple(rows),
    )


def _leaf_row(name: str, module: nn.Module, shape, macs: int, calls: int, batch: int) -> LayerRow:
    params, trainable = _own_params(module)
    formula = None
    if shape is not None and calls == 1 and batch == 1:
        if isinstance(module, nn.Conv2d):
            formula = conv_formula(module, shape)[0]
        elif isinstance(module, nn.Linear) and math.prod(shape[:-1]) == 1:
            formula = linear_formula(module)[0]
    return LayerRow(name, type(module).__name__, shape, params, trainable, macs, calls, formula)


def _parent_row(name: str, module: nn.Module, module_macs: dict[str, int], shape, calls: int) -> LayerRow | None:
    """The row for parameters and work that belong to a parent module itself, not to any child; None if none."""
    prefix = f"{name}." if name else ""
    children = dict(module.named_children())
    own_macs = module_macs.get(name, 0) - sum(module_macs.get(prefix + child, 0) for child in children)
    params, trainable = _own_params(module)
    if not (own_macs or params):
        return None
    return LayerRow(name or "(model)", f"{type(module).__name__} (own)", shape, params, trainable, own_macs, calls)


def profile_arch(name: str, input_size: int | None = None, batch: int = 1) -> ModelProfile:
    """Profile a registered architecture at its own input size (or a square `input_size`), on the meta
    device: no weights are allocated and nothing is computed, so even VGG-19 takes well under a second."""
    spec = get_spec(name)
    if input_size is not None:
        spec.check_input_size(input_size)
    with torch.device("meta"):
        model = build_model(name)
    return profile_model(model, example_input(spec, input_size, batch, device="meta"))
