"""Feature maps: every layer's output for one image, as plain numpy arrays with per-layer statistics.

A *layer* is a module whose output the lab shows: a leaf module, or a module that holds parameters of its own
together with its children (timm's `BatchNormAct2d`: batch norm and its activation, one layer), plus each of
the architecture's stages (`spec.stages`), whose output is often more than any one leaf's (an Inception
module's concatenation, a residual sum). Pass-through modules (Identity, Dropout in eval mode, DropPath) are
left out: their output is their input.

Outputs are read with forward hooks that are removed in a `finally`, under `torch.no_grad` (never inference
mode, whose tensors have no version counter). A later in-place
operation (ReLU(inplace=True), a residual `+=`) would overwrite an output kept by reference, so such outputs
are copied as they are produced: which ones is learnt from the tensors' version counters on the first pass
through an architecture (which copies everything) and checked on every pass after (a pass that finds a new
one runs again, copying everything). Copying only those keeps extraction close to the cost of a forward.
A module that runs more than once gives one layer per call (`call_name`). The model is never switched to
training mode or changed in any way, and the hooks record only the calling thread's forward pass, so a model
shared between threads (a dashboard's cached model) can serve other forward passes meanwhile.
"""
from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from types import MappingProxyType
from typing import Iterable, Mapping

import numpy as np
import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from cnnlab.hooks import forward_hooks
from cnnlab.registry import ArchSpec, assign_stages, logits_of, stage_labels

HEAD = "head"
CALL_MARK = "#"
PASS_THROUGH_TYPES = ("Identity", "DropPath", "DropBlock2d")


@dataclass(frozen=True)
class LayerInfo:
    """One layer's output for one image: where it sits, its shape (without the batch) and statistics.

    `stage` is the spec stage the layer belongs to (the stage whose output it precedes or is), `HEAD` after the
    last stage; `stage_index` counts stages from 0 (the head is `len(spec.stages)`); `stage_label` is the stage as
    every page names it (`registry.stage_labels`: 'stage 1 (conv_stem … blocks.0)'), or 'head'."""

    index: int
    name: str
    type: str
    stage: str
    stage_index: int
    shape: tuple[int, ...]
    stage_label: str = HEAD

    @property
    def channels(self) -> int:
        return self.shape[0]

    @property
    def spatial(self) -> tuple[int, int] | None:
        """(height, width) of a map-shaped output; None for a vector, and for a 1x1 map per channel (a global
        pool's output): one number per channel is a vector too."""
        return tuple(self.shape[-2:]) if len(self.shape) == 3 and self.shape[-2:] != (1, 1) else None

    @property
    def label(self) -> str:
        """'  3 · blocks.0.0.conv_dw (Conv2d) 32x112x112 · stage 1 (conv_stem … blocks.0)': the layer first, its
        stage last, where a narrow box cuts it."""
        shape = "x".join(map(str, self.shape))
        return f"{self.index:>3} · {self.name} ({self.type}) {shape} · {self.stage_label}"


@dataclass(frozen=True)
class Activations:
    """The layers of one forward pass, in the order their outputs were produced, and their maps.

    `maps[name]` is a read-only float32 array of shape (C, H, W) (or (F,) for a vector); `logits` is the
    model's output for the image."""

    arch: str
    input_shape: tuple[int, ...]
    layers: tuple[LayerInfo, ...]
    maps: Mapping[str, np.ndarray]
    logits: np.ndarray

    def info(self, name: str) -> LayerInfo:
        """The LayerInfo of `name`; KeyError naming where to look otherwise."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"{self.arch} has no extracted layer {name!r}")

    @property
    def names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    def stage_outputs(self) -> list[LayerInfo]:
        """For each stage that was extracted, its output layer (the stage module itself), stem to last."""
        stages = {layer.stage for layer in self.layers}
        return [layer for layer in self.layers if layer.name == layer.stage and layer.name in stages]



def layer_statistics(activations: Activations) -> list[dict]:
    """One plain dict per layer, in order: where it sits, its size, its mean activation and its share of exact
    zeros (what a ReLU leaves behind). Kept apart from `extract`, which stays close to the cost of a forward."""
    rows = []
    for layer in activations.layers:
        values = activations.maps[layer.name]
        height, width = layer.spatial or (1, 1)
        rows.append({"index": layer.index, "layer": layer.name, "type": layer.type, "stage": layer.stage,
                     "stage_index": layer.stage_index, "stage_label": layer.stage_label,
                     "shape": "x".join(map(str, layer.shape)),
                     "channels": layer.channels, "height": height, "width": width,
                     "mean": float(values.mean()),
                     "zero_fraction": 1.0 - np.count_nonzero(values) / values.size})
    return rows


def _is_pass_through(module: nn.Module) -> bool:
    return type(module).__name__ in PASS_THROUGH_TYPES or isinstance(module, nn.modules.dropout._DropoutNd)


def layer_modules(model: nn.Module, spec: ArchSpec) -> dict[str, nn.Module]:
    """The modules whose outputs count as layers (see the module docstring), by module path, in the order
    the model registers them."""
    stages = set(spec.stages)
    chosen: dict[str, nn.Module] = {}
    inside: str | None = None
    for name, module in model.named_modules():
        if not name or (inside is not None and name.startswith(inside)):
            continue
        inside = None
        has_children = next(module.children(), None) is not None
        has_own_params = next(module.parameters(recurse=False), None) is not None
        if has_children and has_own_params:
            inside = f"{name}."
        if name in stages or (not (has_children and not has_own_params) and not _is_pass_through(module)):
            chosen[name] = module
    missing = stages - set(chosen)
    if missing:
        raise ValueError(f"{spec.name}'s stage {sorted(missing)[0]!r} is not a module of {type(model).__name__}")
    return chosen


def _first_tensor(output) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    return next((t for t in tree_flatten(output)[0] if isinstance(t, torch.Tensor)), None)


def call_name(module_path: str, call: int) -> str:
    """The layer name of a module's `call`-th output (from 1): the path, then `path#2`, `path#3`... for a
    module that runs more than once (a ResNet block's ReLU, once before and once after the residual sum)."""
    return module_path if call == 1 else f"{module_path}{CALL_MARK}{call}"


def module_path(layer_name: str) -> str:
    """The module path of a layer name (see `call_name`)."""
    return layer_name.split(CALL_MARK, 1)[0]


def extract(model: nn.Module, batch: torch.Tensor, spec: ArchSpec, layers: Iterable[str] | None = None) -> Activations:
    """Run `model` once on `batch` (one image) and return every layer's output (or only `layers`).

    The model must be in eval mode; it is not changed and no hook stays behind. ValueError for a batch of
    more than one image, a model in training mode or an unknown layer name."""
    if model.training:
        raise ValueError("extract needs a model in eval mode; cached models must never be switched to training")
    if batch.ndim != 4 or batch.shape[0] != 1:
        raise ValueError(f"extract takes a batch of one image (1 x C x H x W), not {tuple(batch.shape)}")
    _keep_freed_memory()
    modules = _layer_modules_of(model, spec)
    wanted = None
    if layers is not None:
        wanted = frozenset(layers)
        unknown = sorted(n for n in wanted if module_path(n) not in modules)
        if unknown:
            raise ValueError(f"{spec.name} has no layer {unknown[0]!r}; `cnnlab features IMAGE --arch {spec.name} "
                             "--layer list` lists its layers")
    key = (type(model).__qualname__, spec.name, tuple(modules))
    known = _OVERWRITTEN.get(key)
    run = _run(model, batch, modules, copy=known, keep=wanted)
    if known is None or run.overwritten - known:
        _OVERWRITTEN[key] = run.overwritten | (known or frozenset())
        if known is not None:
            run = _run(model, batch, modules, copy=None, keep=wanted)
    if wanted is not None:
        missing = sorted(wanted - set(run.outputs))
        if missing:
            raise ValueError(f"layer {missing[0]!r} of {spec.name} did not run (its module ran fewer times)")
    return _package(spec, batch, run, modules)


_OVERWRITTEN: dict[tuple, frozenset[str]] = {}
_LAYER_MODULES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _layer_modules_of(model: nn.Module, spec: ArchSpec) -> dict[str, nn.Module]:
    """`layer_modules`, remembered per model object (a model's structure never changes once built)."""
    found = _LAYER_MODULES.get(model)
    if found is None or found[0] != spec.name:
        found = _LAYER_MODULES[model] = (spec.name, layer_modules(model, spec))
    return found[1]
_MALLOC_TUNED = False


def _keep_freed_memory() -> None:
    """Ask glibc's malloc to keep freed memory for reuse instead of handing it back to the system.

    Kept outputs make every layer allocate fresh memory; with glibc's defaults large blocks are mmap'ed and
    unmapped each time, so each pass pays page faults on tens of megabytes. Keeping freed memory in the heap
    makes extraction much cheaper (ResNet-18: 1.45x a plain forward down to 1.2x). No effect off glibc."""
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return
    _MALLOC_TUNED = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 512 << 20)
        libc.mallopt(m_trim_threshold, 1 << 30)
    except (OSError, AttributeError):
        pass


@dataclass(frozen=True)
class _Run:
    outputs: dict[str, torch.Tensor]
    logits: torch.Tensor
    overwritten: frozenset[str]
    order: tuple[str, ...]


def _run(model, batch, modules, copy: frozenset[str] | None, keep: frozenset[str] | None = None) -> _Run:
    """One forward pass with hooks on `modules`: copy the outputs named in `copy` (all when None) and keep the
    others by reference; with `keep`, store only those layers (every layer still counts in `order`, the names of
    all layers in the order their outputs were produced). Also the layers whose original output was overwritten
    in place during the pass (seen by each tensor's version counter)."""
    order: list[str] = []
    outputs: dict[str, torch.Tensor] = {}
    calls: dict[str, int] = {}
    originals: dict[str, tuple[torch.Tensor, int]] = {}

    caller, thread = threading.get_ident(), threading.get_ident

    def record(path: str):
        def hook(_module, _inputs, output):  # kept lean: it runs once per layer on every pass
            tensor = output if type(output) is torch.Tensor else _first_tensor(output)
            if tensor is None or thread() != caller:
                return
            call = calls[path] = calls.get(path, 0) + 1
            name = call_name(path, call)
            order.append(name)
            if keep is not None and name not in keep:
                return
            outputs[name] = tensor.clone() if copy is None or name in copy else tensor
            originals[name] = (tensor, tensor._version)
        return hook

    with forward_hooks((module, record(path)) for path, module in modules.items()):
        with torch.inference_mode(False), torch.no_grad():
            logits = logits_of(model(batch))
    overwritten = frozenset(name for name, (tensor, version) in originals.items() if tensor._version != version)
    return _Run(outputs, logits, overwritten, tuple(order))


def _package(spec: ArchSpec, batch: torch.Tensor, run: _Run, modules: dict[str, nn.Module]) -> Activations:
    infos, maps = [], {}
    stage_of, _ = assign_stages(list(run.order), spec.stages)
    labels = (*stage_labels(spec.name), HEAD)
    for index, (name, stage_index) in enumerate(zip(run.order, stage_of)):
        if name not in run.outputs:
            continue
        array = run.outputs[name].detach().float().cpu().numpy()[0]
        array.setflags(write=False)
        maps[name] = array
        stage = spec.stages[stage_index] if stage_index < len(spec.stages) else HEAD
        infos.append(LayerInfo(index=index, name=name, type=type(modules[module_path(name)]).__name__, stage=stage,
                               stage_index=stage_index, shape=tuple(array.shape),
                               stage_label=labels[stage_index]))
    logits = run.logits[0].detach().float().cpu().numpy()
    logits.setflags(write=False)
    return Activations(spec.name, tuple(batch.shape), tuple(infos), MappingProxyType(maps), logits)


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    """The model's first 2-D convolution (its path and module): the one whose filters look at pixels."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    raise ValueError(f"{type(model).__name__} has no 2-D convolution")
