"""Class activation maps: where in the image the evidence for a class lies, at one layer of the network.

Two methods, one line apart:

- Grad-CAM (Selvaraju et al. 2017, https://arxiv.org/abs/1610.02391) weights each channel of the layer's
  maps A by its gradient dy/dA averaged over the whole map, sums the weighted maps and keeps the positive part.
- HiResCAM (Draelos & Carin 2020, https://arxiv.org/abs/2011.08891) multiplies gradient and maps element by
  element before summing over channels. cnnlab uses it by default because it is faithful to the model: for a
  network that ends in global average pooling and a linear classifier (every one here but AlexNet, VGG and
  LeNet, whose flattened maps feed dense layers) its map at the last stage, before the positive part is
  taken and summed over positions, is the class score less the classifier's bias, so it shows exactly the
  locations the score came from. Grad-CAM's spatial averaging of
  the gradient can highlight locations the model did not use; at the last stage of such a network the
  gradient is the same at every position, and the two maps coincide (both are Zhou et al.'s original CAM).

Gradients are taken with respect to the layer's output, never the parameters: the output is detached and made
to require a gradient inside a forward hook, so the map is the same whether the backbone is frozen
(`requires_grad=False`) or not, no parameter's `.grad` is touched, the model stays in eval mode and the hook
is removed in a `finally`. The hook acts only on the calling thread's forward pass, so other threads can use a
shared model meanwhile.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cache

import numpy as np
import torch
from torch import nn

from cnnlab.hooks import forward_hooks
from cnnlab.registry import ArchSpec, build_model, example_input, get_spec, logits_of

HIRESCAM = "hirescam"
GRADCAM = "gradcam"
METHODS = {HIRESCAM: "HiResCAM", GRADCAM: "Grad-CAM"}


@dataclass(frozen=True)
class ClassActivationMap:
    """A class activation map for one image: `low_res` at the layer's resolution, `heatmap` upsampled to the
    network's input; both scaled to [0, 1] (all zeros when nothing speaks for the class)."""

    arch: str
    layer: str
    method: str
    class_index: int
    logit: float
    probability: float
    low_res: np.ndarray
    heatmap: np.ndarray


@cache
def stage_shapes(arch: str) -> dict[str, tuple[int, ...]]:
    """The output shape of each of `arch`'s stages at its own input size (found on the meta device)."""
    spec = get_spec(arch)
    shapes: dict[str, tuple[int, ...]] = {}
    with torch.device("meta"):
        model = build_model(arch)

    def record(stage: str):
        def hook(_module, _inputs, output):
            shapes.setdefault(stage, tuple(output.shape))
        return hook

    with forward_hooks((model.get_submodule(stage), record(stage)) for stage in spec.stages), torch.no_grad():
        model(example_input(spec, device="meta"))
    return shapes


def default_cam_layer(spec: ArchSpec) -> str:
    """The last stage whose output is still a map larger than 1x1: the usual Grad-CAM layer, where features
    are most about the class while keeping some spatial resolution."""
    shapes = stage_shapes(spec.name)
    for stage in reversed(spec.stages):
        shape = shapes.get(stage, ())
        if len(shape) == 4 and shape[2] * shape[3] > 1:
            return stage
    raise ValueError(f"{spec.name} has no stage with spatial maps for a class activation map")


def class_activation_map(model: nn.Module, batch: torch.Tensor, spec: ArchSpec, class_index: int | None = None,
                         layer: str | None = None, method: str = HIRESCAM) -> ClassActivationMap:
    """The class activation map of `class_index` (the top prediction when None) at `layer` (the spec's
    default when None) for the first image of `batch`. See the module docstring for the methods.

    ValueError for a model in training mode, an unknown layer or method, a layer without spatial maps, a class
    index out of range or a head without a gradient (k nearest neighbours)."""
    if method not in METHODS:
        raise ValueError(f"unknown CAM method {method!r}; choose from: {', '.join(METHODS)}")
    if model.training:
        raise ValueError("class_activation_map needs a model in eval mode; it never switches a model's mode")
    head = model.get_submodule(spec.classifier)
    if not getattr(head, "differentiable", True):
        raise ValueError(f"this model's {type(head).__name__} head votes among its nearest training examples: its "
                         "scores have no gradient, so there is no class activation map to draw")
    layer = layer or default_cam_layer(spec)
    try:
        target = model.get_submodule(layer)
    except AttributeError:
        raise ValueError(f"{spec.name} has no layer {layer!r}") from None
    maps, gradient, scores, index, binary = _maps_and_gradient(model, target, batch, class_index)
    if maps.ndim != 4:
        raise ValueError(f"layer {layer} of {spec.name} gives shape {tuple(maps.shape)}, not spatial maps")
    weights = gradient if method == HIRESCAM else gradient.mean(dim=(2, 3), keepdim=True)
    cam = (weights * maps).sum(dim=1, keepdim=True).clamp(min=0)
    cam = cam / cam.max() if cam.max() > 0 else cam
    heatmap = nn.functional.interpolate(cam, size=batch.shape[-2:], mode="bilinear", align_corners=False)
    probability = float(torch.sigmoid(scores[index]) if binary else scores.float().softmax(-1)[index])
    return ClassActivationMap(spec.name, layer, method, index, float(scores[index]), probability,
                              cam[0, 0].float().cpu().numpy(), heatmap[0, 0].clamp(0, 1).float().cpu().numpy())


def _maps_and_gradient(model: nn.Module, target: nn.Module, batch: torch.Tensor, class_index: int | None):
    """Forward the first image of `batch` with `target`'s (last) output made a leaf that requires a gradient
    (the hook is removed after), and differentiate the class score with respect to it. Returns the maps,
    their gradient, every class score (detached), the class index and whether the model has a single
    (sigmoid) output."""
    captured: list[torch.Tensor] = []
    caller = threading.get_ident()

    def as_leaf(_module, _inputs, output):
        if threading.get_ident() != caller:
            return None
        if not isinstance(output, torch.Tensor):
            raise ValueError(f"{type(target).__name__} returns {type(output).__name__}, not a tensor")
        leaf = output.detach().requires_grad_(True)
        captured.append(leaf)
        return leaf.clone()

    with forward_hooks([(target, as_leaf)]), torch.inference_mode(False), torch.enable_grad():
        output = model(batch[:1].detach().clone())
        logits = logits_of(output)
        scores = _class_scores(logits[0])
        index = int(scores.argmax()) if class_index is None else class_index
        if not 0 <= index < scores.numel():
            raise ValueError(f"class index {index} is out of range for {scores.numel()} classes")
        if not captured:
            raise ValueError(f"{type(target).__name__} did not run in the forward pass")
        gradient, = torch.autograd.grad(scores[index], captured[-1])
    return captured[-1].detach(), gradient.detach(), scores.detach(), index, logits[0].numel() == 1


def _class_scores(logits: torch.Tensor) -> torch.Tensor:
    """One score per class. A single-output (sigmoid) model has two classes, as `cnnlab.predict` reads it:
    0 (negative, score -logit) and 1 (positive, score logit)."""
    return torch.cat([-logits, logits]) if logits.numel() == 1 else logits

