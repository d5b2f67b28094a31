"""Before a run: which strategy suits the data (the lecture's "when to use what" quadrant), and what a
freeze plan trains: stage by stage, the trainable parameters and the training MACs per image.

Training cost per image, counted from the profiler's per-layer MACs (backward of a conv or linear layer
costs one forward's MACs for the gradient of its input and one for the gradient of its weights):

    training MACs = forward MACs
                  + sum of MACs of the weighted layers that run after the first trainable one (input gradients)
                  + sum of MACs of the trainable weighted layers (weight gradients)

Frozen layers before the first trainable one need no backward at all; that is what freezing saves.
Strategy III runs the backbone forward once per image (features are cached), then fits the classifier.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import torch

from cnnlab.hooks import forward_hooks
from cnnlab.naming import AVERAGE, LECTURE_HEAD, OWN_HEAD, PENULTIMATE
from cnnlab.profiling import profile_model
from cnnlab.registry import (build_model, example_input, fit_head, get_spec, registry,
                             assign_stages, stage_labels)

WEIGHTED_TYPES = frozenset({"Conv1d", "Conv2d", "Conv3d", "Linear", "ConvTranspose2d"})


@dataclass(frozen=True)
class Suggestion:
    """The strategy the lecture's quadrant suggests, with the reason."""

    strategy: str
    freeze: str
    why: str


def suggest_strategy(large_dataset: bool, similar_to_imagenet: bool, arch: str) -> Suggestion:
    """The "when to use what" quadrant (Pedro Marcelino, "Transfer learning from pre-trained models"): dataset
    size against similarity to ImageNet, with a freeze plan for `arch` where the strategy fine-tunes. Large and
    similar data trains only the top of the network; small, different data has to go deeper."""
    stages = len(get_spec(arch).stages)
    if large_dataset and not similar_to_imagenet:
        return Suggestion("scratch", "none", "Plenty of data unlike ImageNet: train the whole network. Pretrained "
                                             "weights are still a good start, so fine-tuning everything is an option.")
    if large_dataset:
        return Suggestion("finetune", f"stage:{max(1, stages - 1)}",
                          "Plenty of data like ImageNet: the pretrained features mostly fit, so freeze all but the "
                          "last stage and train it with the new classifier. Any strategy works here; this one is "
                          "the cheapest that still adapts the network.")
    if not similar_to_imagenet:
        return Suggestion("finetune", f"stage:{max(1, stages // 2)}",
                          "Little data unlike ImageNet: the hardest case. Keep the general early features frozen and "
                          "fine-tune deeper than with similar data (the later half of the stages), with augmentation; "
                          "too deep overfits, too shallow learns nothing new.")
    return Suggestion("extract", "body", "Little data like ImageNet: the pretrained features already fit; freeze "
                                         "the whole backbone and train only a classifier on its features.")


@dataclass(frozen=True)
class StagePlan:
    """One part of the network under a freeze plan."""

    name: str
    params: int
    trainable_params: int
    runs: bool = True  # False past Strategy III's tap: the forward pass stops there

    @property
    def state(self) -> str:
        if not self.runs:
            return "not run"
        if self.trainable_params == 0:
            return "frozen"
        return "trained" if self.trainable_params == self.params else "partly trained"


@dataclass(frozen=True)
class FreezePlan:
    """What a run trains, counted before it starts (per image, at the run's input size)."""

    arch: str
    strategy: str
    freeze: str
    num_classes: int
    parts: tuple[StagePlan, ...]
    params_trainable: int
    params_frozen: int
    forward_macs: int
    input_grad_macs: int
    weight_grad_macs: int

    @property
    def training_macs(self) -> int:
        """MACs of one training step per image: forward + input gradients + weight gradients."""
        return self.forward_macs + self.input_grad_macs + self.weight_grad_macs

    @property
    def stages_without_params(self) -> list[str]:
        """The stages `parts` leaves out for having no parameters (LeNet-5's pooling stages)."""
        listed = {part.name for part in self.parts}
        return [label for label in stage_labels(self.arch) if label not in listed]

    @property
    def formula(self) -> str:
        return (f"{self.forward_macs:,} forward + {self.input_grad_macs:,} input gradients + "
                f"{self.weight_grad_macs:,} weight gradients = {self.training_macs:,} MACs per image")


def _parts_by_order(model, spec) -> dict[str, str]:
    """Module name to the part of the network it is counted in: stage k holds every module defined after
    stage k-1 and up to the end of stage k (as `stage:K` freezes), then what follows, then the classifier."""
    order = [name for name, _ in model.named_modules()]
    index, _ = assign_stages(order, spec.stages)
    labels = [*stage_labels(spec.name), "after the last stage"]
    return {name: "classifier" if name == spec.classifier or name.startswith(spec.classifier + ".") else labels[k]
            for name, k in zip(order, index)}


@cache  # a frozen result: a Strategy III run asks for its plan twice (frozen parameters, then its cost)
def freeze_plan(arch: str, strategy: str, freeze: str, num_classes: int, image_size: int | None = None,
                tap: str = PENULTIMATE, head: str = OWN_HEAD) -> FreezePlan:
    """Count what `strategy` with `freeze` trains for `arch` with a new `num_classes` head (`head`: see
    `registry.fit_head`); built on the meta device, so nothing is allocated. For Strategy III the backbone is
    frozen and only the head trains, and the forward pass stops at `tap`: what comes after it is not run and not
    counted, in MACs or in frozen parameters."""
    from cnnlab.training import freeze_layers

    spec = get_spec(arch)
    with torch.device("meta"):
        model = fit_head(build_model(arch, num_classes), spec, head, num_classes)
    freeze_layers(model, spec, "body" if strategy == "extract" else "none" if strategy == "scratch" else freeze)
    profile = profile_model(model, example_input(spec, image_size, device="meta"))
    part_of = _parts_by_order(model, spec)
    totals: dict[str, list[int]] = {}
    first_trainable, input_grad, weight_grad = None, 0, 0
    for index, row in enumerate(profile.rows):
        part = totals.setdefault(part_of.get(row.name, "after the last stage"), [0, 0])
        part[0] += row.params
        part[1] += row.trainable_params
        if row.type not in WEIGHTED_TYPES:
            continue
        if row.trainable_params and first_trainable is None:
            first_trainable = index
        if first_trainable is not None and index > first_trainable:
            input_grad += row.macs
        if row.trainable_params:
            weight_grad += row.macs
    forward_macs, unused = profile.macs, set()
    if strategy == "extract":
        input_grad = weight_grad = 0  # features are computed once; the head trains on them, not the network
        if tap != PENULTIMATE:
            last = max(i for i, row in enumerate(profile.rows) if row.calls  # (modules never called come last)
                       and (row.name == tap or row.name.startswith(tap + ".")))
            forward_macs = sum(row.macs for row in profile.rows[:last + 1])
            reached = {part_of.get(row.name, "after the last stage") for row in profile.rows[:last + 1]}
            unused = set(totals) - reached
    parts = tuple(StagePlan(name, *counts, runs=name not in unused) for name, counts in totals.items() if counts[0])
    order = [*stage_labels(arch), "after the last stage", "classifier"]
    parts = tuple(sorted(parts, key=lambda part: order.index(part.name)))
    frozen = sum(params - trainable for name, (params, trainable) in totals.items() if name not in unused)
    return FreezePlan(arch, strategy, freeze, num_classes, parts, profile.trainable_params, frozen, forward_macs,
                      input_grad, weight_grad)


@dataclass(frozen=True)
class TapFeatures:
    """What Strategy III's classifier sees per image at one tap: the tap's output shape and the feature count."""

    tap: str
    pooling: str
    shape: tuple[int, ...]

    @property
    def count(self) -> int:
        """Channels when feature maps are averaged over their positions, every value when flattened."""
        return self.shape[0] if self.pooling == AVERAGE else math.prod(self.shape)

    @property
    def formula(self) -> str:
        if len(self.shape) == 1 or self.pooling == AVERAGE:
            return f"{self.count:,}"
        return f"{' x '.join(map(str, self.shape))} = {self.count:,}"


def tap_features(arch: str, tap: str = PENULTIMATE, pooling: str = AVERAGE,
                 image_size: int | None = None) -> TapFeatures:
    """The shape of one image's features at `tap` (the classifier's input for `penultimate`), found on the meta
    device, so nothing is computed."""
    spec = get_spec(arch)
    with torch.device("meta"):
        model = build_model(arch)
    shapes = []
    module = model.get_submodule(spec.classifier if tap == PENULTIMATE else tap)
    record = lambda _module, args, output: shapes.append((args[0] if tap == PENULTIMATE else output).shape[1:])
    with forward_hooks([(module, record)]), torch.no_grad():
        model(example_input(spec, image_size, device="meta"))
    return TapFeatures(tap, pooling, tuple(shapes[-1]))


def run_compute(config: dict, num_classes: int, train_images: int, val_images: int, epochs: int) -> dict:
    """What a finished run cost in multiply-accumulates, from its freeze plan: per training image, and in all
    (training steps and validation passes of its `epochs` finished epochs for I and II, None when it finished
    none; one forward pass over every image for III)."""
    plan = freeze_plan(config["arch"], config["strategy"], config.get("freeze", "none"), num_classes,
                       config.get("image_size"), config.get("tap") or PENULTIMATE, config.get("head", OWN_HEAD))
    if config["strategy"] == "extract":
        total = plan.forward_macs * (train_images + val_images)
    elif not epochs:  # stopped inside its first epoch: how far it got is not known here
        total = None
    else:
        total = (plan.training_macs * train_images + plan.forward_macs * val_images) * epochs
    return {"training_macs_per_image": plan.training_macs, "total_macs": total}


def default_freeze(arch: str) -> str:
    """The freeze plan Launch starts from: the lecture's for its network, else the middle stage."""
    spec = get_spec(arch)
    return spec.lecture_freeze or f"stage:{max(1, len(spec.stages) // 2)}"


def freeze_choices(arch: str) -> list[str]:
    """The freeze plans a user can pick for `arch`: nothing, each stage boundary, or all but the head; the last
    stage is left out where freezing through it is freezing all but the head (EfficientNet's bn2, ResNet's layer4)."""
    spec = get_spec(arch)
    stages = len(spec.stages) - (_last_stage_is_body(arch) and spec.lecture_freeze != f"stage:{len(spec.stages)}")
    return ["none", *(f"stage:{k}" for k in range(1, stages + 1)), "body"]


@cache
def _last_stage_is_body(arch: str) -> bool:
    from cnnlab.training import freeze_layers

    spec = get_spec(arch)
    with torch.device("meta"):
        model = build_model(arch)
    return set(freeze_layers(model, spec, f"stage:{len(spec.stages)}")) == set(freeze_layers(model, spec, "body"))


def head_choices(arch: str, strategy: str) -> list[str]:
    """The heads a user can pick for `arch` under `strategy` (see `registry.fit_head`): the network's own and,
    where the lecture gives a recipe for it, the lecture's; none to pick for Strategy III or a probe."""
    if strategy not in ("scratch", "finetune") or not get_spec(arch).lecture_head_width:
        return []
    return [OWN_HEAD, LECTURE_HEAD]


def default_head(arch: str, strategy: str) -> str:
    """The lecture's head for a fine-tune of the network its recipe is for, else the network's own."""
    return LECTURE_HEAD if strategy == "finetune" and get_spec(arch).lecture_head_width else OWN_HEAD


def describe_head(arch: str, head: str) -> str:
    """A head in words: the network's own classifier layers, or the lecture's new ones for `lecture`."""
    spec = get_spec(arch)
    if head == LECTURE_HEAD:
        return (f"the lecture's new head: flatten, Dense({spec.lecture_head_width:,}, ReLU), Dropout(0.5), "
                "Dense(classes)")
    return f"{spec.title}'s own classifier layers, the last one new for your classes"


def describe_freeze(arch: str, freeze: str) -> str:
    """A freeze plan in words, naming the stage it freezes through."""
    spec = get_spec(arch)
    kind, _, number = freeze.partition(":")
    if kind == "none":
        return "train every layer"
    if kind == "body":
        return "freeze the whole backbone, train the head only"
    if kind == "stage":
        recipe = f": {spec.lecture_freeze_note}" if freeze == spec.lecture_freeze else ""
        return f"freeze every layer through {stage_labels(arch)[int(number) - 1]}{recipe}"
    return f"train only the last {number} layers with parameters"


__all__ = ["Suggestion", "suggest_strategy", "StagePlan", "FreezePlan", "freeze_plan", "TapFeatures",
           "tap_features", "freeze_choices", "default_freeze", "describe_freeze", "head_choices", "default_head", "describe_head",
           "run_compute"]
