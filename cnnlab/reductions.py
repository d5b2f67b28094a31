"""1x1 reductions: what Inception's bottlenecks save, as a calculator and module by module in real networks.

The calculator counts a k x k convolution ("same" padding, stride 1, so the output keeps the input's H x W)
with and without a 1x1 reduction in front, in the lecture's form `(H x W x Cout) x (k x k x Cin)`.

The module analysis reads everything from the built model: one forward pass on meta tensors records each
convolution's output H x W and, tensor by tensor, which convolutions (or the module's input, possibly
through a pooling) feed it. A 1x1 convolution on the module's input whose output feeds another convolution
is a *reduction*; one whose output goes straight to the module's output is a branch of its own; one after
a pooling is a pool projection. "Without reductions" removes every reduction and feeds the convolutions it
fed the module's full input instead, each keeping its own output H x W. Parameters here are convolution
weights and biases (batch norm is left out).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from cnnlab.hooks import forward_hooks
from cnnlab.profiling import COUNTING_LOCK, conv_formula, flop_counter, human, human_value
from cnnlab.registry import arch_names, build_model, example_input, get_spec

REDUCTION = "reduction"
OWN_BRANCH = "own branch"
SHORTCUT = "projection shortcut"
POOL_PROJECTION = "pool projection"
EXPANSION = "expansion"
PROJECTION = "projection"
AFTER_REDUCTION = "after reduction"
FULL_INPUT = "on the full input"
LATER = "later in branch"

ROLE_DESCRIPTIONS = {
    REDUCTION: "1x1 on the module's input that feeds a larger convolution: the bottleneck being counted (where "
               "it has more output channels than input, as in DenseNet's first layers, it widens and costs more "
               "than it saves)",
    OWN_BRANCH: "1x1 branch of its own: its output goes to the module's output, not into a larger convolution "
                "(Inception's 1x1 branch)",
    SHORTCUT: "1x1 on a residual block's shortcut: it matches the input's channels and size to the block's output "
              "so that the two can be added (ResNet's y = F(x) + Wx); not a branch of the block's own work",
    POOL_PROJECTION: "1x1 after the pooling branch's pool, setting that branch's width",
    EXPANSION: "1x1 on the branches' outputs that widens them again (ResNet's last 1x1, Inception-ResNet's "
               "1x1 before the residual addition)",
    PROJECTION: "1x1 on the branches' outputs that does not widen them",
    AFTER_REDUCTION: "k x k convolution fed by a reduction: without reductions it takes the module's full input",
    FULL_INPUT: "k x k convolution that already takes the module's full input",
    LATER: "k x k convolution fed by another k x k convolution",
}

_INPUT = "<input>"
_TAG = "_cnnlab_sources"


def _check_positive(**values: int | None) -> None:
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name.replace('_', ' ')} must be a whole number, not {value!r}")
        if value <= 0:
            raise ValueError(f"{name.replace('_', ' ')} must be greater than zero, not {value}")


@dataclass(frozen=True)
class ConvSetup:
    """The calculator's input: H x W x C_in, a k x k convolution to C_out, optionally a 1x1 reduction to C_red
    in front. Raises ValueError for anything but positive whole numbers."""

    height: int
    width: int
    in_channels: int
    out_channels: int
    kernel: int
    reduce_to: int | None = None

    def __post_init__(self):
        _check_positive(height=self.height, width=self.width, in_channels=self.in_channels,
                        out_channels=self.out_channels, kernel=self.kernel, reduce_to=self.reduce_to)


LECTURE_INCEPTION_EXAMPLE = ConvSetup(height=14, width=14, in_channels=480, out_channels=48, kernel=5, reduce_to=16)
"""The lecture's 'Improved Inception Module' slide: 112.9M naive; 1.5M + 3.8M = 5.3M with the reduction."""
LECTURE_COMPRESSION_EXAMPLE = ConvSetup(height=64, width=64, in_channels=100, out_channels=20, kernel=1)
"""The lecture's '1x1 Convolution' slide: 20 1x1 filters compress 64x64x100 to 64x64x20."""


@dataclass(frozen=True)
class ConvCost:
    """One convolution's multiply-accumulates and parameters for one image, with their formulas."""

    label: str
    kernel: tuple[int, int]
    in_channels: int
    out_channels: int
    output_hw: tuple[int, int]
    stride: tuple[int, int]
    macs: int
    params: int
    formula: str
    params_formula: str

    def as_dict(self) -> dict:
        return dict(vars(self))


def conv_cost(conv: nn.Conv2d, output_hw: tuple[int, int], label: str | None = None) -> ConvCost:
    """The cost of `conv` producing an `output_hw` map, counted with `cnnlab.profiling.conv_formula`."""
    formula, macs = conv_formula(conv, tuple(output_hw))
    kh, kw = conv.kernel_size
    cin = conv.in_channels // conv.groups
    params = sum(p.numel() for p in conv.parameters())
    weights = f"{kh}x{kw}x{cin}"
    params_text = f"({weights} + 1) x {conv.out_channels}" if conv.bias is not None else f"({weights}) x {conv.out_channels}"
    return ConvCost(label or f"{kh}x{kw}", (kh, kw), conv.in_channels, conv.out_channels, tuple(output_hw),
                    tuple(conv.stride), macs, params, formula, f"{params_text} = {human(params)}")


def _meta_conv(in_channels: int, out_channels: int, kernel: tuple[int, int], stride=(1, 1), bias: bool = True):
    return nn.Conv2d(in_channels, out_channels, kernel, stride, bias=bias, device="meta")


@dataclass(frozen=True)
class ReductionComparison:
    """The calculator's answer: the naive k x k convolution against 1x1 reduction + k x k convolution."""

    setup: ConvSetup
    naive: ConvCost
    reduce: ConvCost | None
    conv: ConvCost

    @property
    def reduce_macs(self) -> int:
        return self.reduce.macs if self.reduce else 0

    @property
    def reduce_params(self) -> int:
        return self.reduce.params if self.reduce else 0

    @property
    def total_macs(self) -> int:
        return self.reduce_macs + self.conv.macs

    @property
    def total_params(self) -> int:
        return self.reduce_params + self.conv.params

    @property
    def ratio(self) -> float:
        """How many times fewer MACs the reduced path needs (below 1: it costs more)."""
        return self.naive.macs / self.total_macs

    @property
    def params_ratio(self) -> float:
        return self.naive.params / self.total_params

    @property
    def total_formula(self) -> str:
        """'1.5M + 3.8M = 5.3M', as on the slide."""
        if self.reduce is None:
            return f"{human(self.conv.macs)}"
        return f"{human(self.reduce.macs)} + {human(self.conv.macs)} = {human(self.total_macs)}"

    def as_dict(self) -> dict:
        """Plain numbers for JSON: `naive_macs`, `reduce_macs`, `conv_macs`, `total_macs`, `ratio`, the same
        for params, and the formulas."""
        return {
            **vars(self.setup),
            "naive_macs": self.naive.macs, "reduce_macs": self.reduce_macs, "conv_macs": self.conv.macs,
            "total_macs": self.total_macs, "ratio": self.ratio,
            "naive_params": self.naive.params, "reduce_params": self.reduce_params, "conv_params": self.conv.params,
            "total_params": self.total_params, "params_ratio": self.params_ratio,
            "formulas": {"naive": self.naive.formula, "reduce": self.reduce.formula if self.reduce else None,
                         "conv": self.conv.formula, "total": self.total_formula},
            "params_formulas": {"naive": self.naive.params_formula,
                                "reduce": self.reduce.params_formula if self.reduce else None,
                                "conv": self.conv.params_formula},
        }


def compare_reduction(setup: ConvSetup, bias: bool = True) -> ReductionComparison:
    """Naive versus reduced cost of `setup`'s convolution ('same' padding: output H x W = input H x W)."""
    hw, k = (setup.height, setup.width), (setup.kernel, setup.kernel)
    naive = conv_cost(_meta_conv(setup.in_channels, setup.out_channels, k, bias=bias), hw, "naive")
    if setup.reduce_to is None:
        return ReductionComparison(setup, naive, None, naive)
    reduce = conv_cost(_meta_conv(setup.in_channels, setup.reduce_to, (1, 1), bias=bias), hw, "1x1")
    conv = conv_cost(_meta_conv(setup.reduce_to, setup.out_channels, k, bias=bias), hw, f"{k[0]}x{k[1]}")
    return ReductionComparison(setup, naive, reduce, conv)


def reduction_sweep(setup: ConvSetup, widths: list[int] | range) -> list[ReductionComparison]:
    """`compare_reduction` for each reduction width in `widths` (the rest of `setup` fixed)."""
    fields = {**vars(setup)}
    return [compare_reduction(ConvSetup(**{**fields, "reduce_to": width})) for width in widths]


# --- factorized convolutions ------------------------------------------------------------------------------

VGG_STACK = "VGG: 3x3 convolutions one after another"
ASYMMETRIC = "Inception-v3: 1 x k then k x 1"


def _check_factorizable_kernel(kernel: int) -> None:
    if kernel < 3:
        raise ValueError(f"kernel must be at least 3 to be factorized into smaller convolutions, not {kernel}")
    if kernel % 2 == 0:
        raise ValueError(f"kernel must be odd (each 3x3 in a stack widens the receptive field by 2), not {kernel}")


@dataclass(frozen=True)
class FactorizationSetup:
    """H x W x C_in into one large k x k convolution to C_out ('same' padding, stride 1), to be replaced by a
    chain of smaller convolutions. Raises ValueError as `ConvSetup` does, and for an even k or a k below 3."""

    height: int
    width: int
    in_channels: int
    out_channels: int
    kernel: int

    def __post_init__(self):
        _check_positive(height=self.height, width=self.width, in_channels=self.in_channels,
                        out_channels=self.out_channels, kernel=self.kernel)
        _check_factorizable_kernel(self.kernel)


FACTORIZATION_EXAMPLE = FactorizationSetup(height=28, width=28, in_channels=192, out_channels=192, kernel=5)
"""A 28x28x192 map kept at 192 channels (GoogLeNet's inception3a input) through a 5x5 convolution."""


def receptive_field(kernels: list[tuple[int, int]] | tuple[tuple[int, int], ...]) -> tuple[int, int]:
    """Receptive field (rows, columns) of stride-1 convolutions applied one after another: each kh x kw
    kernel widens it by kh - 1 and kw - 1, so n 3x3 layers see 1 + 2n."""
    return 1 + sum(kh - 1 for kh, _ in kernels), 1 + sum(kw - 1 for _, kw in kernels)


@dataclass(frozen=True)
class Factorization:
    """One k x k convolution against a chain of smaller ones ('same' padding, stride 1) with the same
    receptive field: the chain's first layer maps C_in to C_out, the others C_out to C_out."""

    method: str
    setup: FactorizationSetup
    single: ConvCost
    layers: tuple[ConvCost, ...]

    @property
    def unchanged(self) -> bool:
        """True when the chain is the single convolution itself (VGG's stack for a 3x3: one 3x3)."""
        return len(self.layers) == 1 and self.layers[0].kernel == self.single.kernel

    @property
    def receptive_field(self) -> tuple[int, int]:
        """The chain's receptive field, (k, k) like the single convolution's."""
        return receptive_field([layer.kernel for layer in self.layers])

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers)

    @property
    def ratio(self) -> float:
        """How many times fewer MACs the chain needs than the single k x k convolution."""
        return self.single.macs / self.macs

    @property
    def params_ratio(self) -> float:
        return self.single.params / self.params

    @property
    def saving(self) -> float:
        """The share of the single convolution's MACs the chain saves (1/3 for 1x3 + 3x1 against 3x3)."""
        return 1 - self.macs / self.single.macs

    @property
    def c_squared_coefficients(self) -> tuple[int, int]:
        """(k x k, sum of the chain's kh x kw): with C_in = C_out = C and no bias the single convolution has the
        first times C^2 parameters and the chain the second (25 and 18 for 5x5 against two 3x3)."""
        return self.setup.kernel ** 2, sum(kh * kw for kh, kw in (layer.kernel for layer in self.layers))

    @property
    def formula(self) -> str:
        """The chain's MACs as a sum, '2.6M + 2.6M = 5.2M'."""
        return _sum_formula([layer.macs for layer in self.layers])

    @property
    def params_formula(self) -> str:
        return _sum_formula([layer.params for layer in self.layers])

    def as_dict(self) -> dict:
        """Plain numbers for JSON: the single convolution, each layer of the chain, totals and ratios."""
        return {"method": self.method, **vars(self.setup), "receptive_field": list(self.receptive_field),
                "single": self.single.as_dict(), "layers": [layer.as_dict() for layer in self.layers],
                "macs": self.macs, "params": self.params, "ratio": self.ratio, "params_ratio": self.params_ratio,
                "saving": self.saving, "formula": self.formula, "params_formula": self.params_formula}


def _sum_formula(numbers: list[int]) -> str:
    """'1.2M + 3.4M = 4.6M'; in whole numbers where the rounded parts would not add up to the rounded sum
    ('331,968 + 331,968 = 663,936', not '332.0K + 332.0K = 663.9K')."""
    if len(numbers) == 1:
        return human(numbers[0])
    if abs(sum(map(human_value, numbers)) - human_value(sum(numbers))) > 1e-6 * sum(numbers):
        return f"{' + '.join(f'{n:,}' for n in numbers)} = {sum(numbers):,}"
    return f"{' + '.join(human(n) for n in numbers)} = {human(sum(numbers))}"


def _factorize(method: str, setup: FactorizationSetup, kernels: list[tuple[int, int]], bias: bool) -> Factorization:
    hw, k = (setup.height, setup.width), setup.kernel
    single = conv_cost(_meta_conv(setup.in_channels, setup.out_channels, (k, k), bias=bias), hw, f"{k}x{k}")
    channels = [setup.in_channels] + [setup.out_channels] * len(kernels)
    layers = tuple(conv_cost(_meta_conv(channels[i], channels[i + 1], kernel, bias=bias), hw,
                             f"{kernel[0]}x{kernel[1]} #{i + 1}") for i, kernel in enumerate(kernels))
    return Factorization(method, setup, single, layers)


def vgg_stack(setup: FactorizationSetup, bias: bool = True) -> Factorization:
    """One k x k convolution against (k - 1) / 2 3x3 convolutions one after another, VGG's replacement for
    AlexNet's large filters: two 3x3 see 5x5 (18C^2 against 25C^2), three see 7x7 (27C^2 against 49C^2)."""
    return _factorize(VGG_STACK, setup, [(3, 3)] * ((setup.kernel - 1) // 2), bias)


def asymmetric_factorization(setup: FactorizationSetup, bias: bool = True) -> Factorization:
    """One k x k convolution against a 1 x k then a k x 1, Inception-v3's factorization into asymmetric
    convolutions (1x3 + 3x1 saves a third of a 3x3; 1x7 + 7x1 are in its 17x17 modules)."""
    k = setup.kernel
    return _factorize(ASYMMETRIC, setup, [(1, k), (k, 1)], bias)


def factorizations(setup: FactorizationSetup, bias: bool = True) -> tuple[Factorization, Factorization]:
    """`vgg_stack` and `asymmetric_factorization` of the same k x k convolution."""
    return vgg_stack(setup, bias), asymmetric_factorization(setup, bias)


@dataclass(frozen=True)
class ConvUse:
    """One convolution inside a module: its place in the data flow, and its cost as built and without
    reductions (`without` is None for a reduction, which that variant removes)."""

    path: str
    branch: str
    role: str
    fed_by: tuple[str, ...]
    built: ConvCost
    without: ConvCost | None

    def as_dict(self) -> dict:
        return {"path": self.path, "branch": self.branch, "role": self.role, "fed_by": list(self.fed_by),
                "built": self.built.as_dict(), "without": self.without.as_dict() if self.without else None}


@dataclass(frozen=True)
class ModuleReductions:
    """One module (Inception module, bottleneck block, dense layer) as built and without its 1x1 reductions."""

    path: str
    type: str
    input_shape: tuple[int, int, int]
    output_shape: tuple[int, int, int]
    convs: tuple[ConvUse, ...]

    @property
    def built_macs(self) -> int:
        return sum(c.built.macs for c in self.convs)

    @property
    def built_params(self) -> int:
        return sum(c.built.params for c in self.convs)

    @property
    def without_macs(self) -> int:
        return sum(c.without.macs for c in self.convs if c.without)

    @property
    def without_params(self) -> int:
        return sum(c.without.params for c in self.convs if c.without)

    @property
    def ratio(self) -> float:
        """MACs without reductions / MACs as built: how many times cheaper the reductions make the module."""
        return self.without_macs / self.built_macs if self.built_macs else 1.0

    def with_role(self, role: str) -> tuple[ConvUse, ...]:
        return tuple(c for c in self.convs if c.role == role)

    def summary(self) -> dict:
        """One table row: counts of each kind of 1x1, MACs and params both ways."""
        return {
            "module": self.path, "type": self.type,
            "input": "x".join(map(str, self.input_shape)), "output": "x".join(map(str, self.output_shape)),
            "reductions": len(self.with_role(REDUCTION)), "own_branch_1x1": len(self.with_role(OWN_BRANCH)),
            "pool_projections": len(self.with_role(POOL_PROJECTION)),
            "macs": self.built_macs, "macs_without": self.without_macs, "ratio": round(self.ratio, 3),
            "params": self.built_params, "params_without": self.without_params,
        }

    def as_dict(self) -> dict:
        return {**self.summary(), "input_shape": list(self.input_shape), "output_shape": list(self.output_shape),
                "convs": [c.as_dict() for c in self.convs]}


@dataclass(frozen=True)
class NetworkReductions:
    """Every analysed module of one network, with the whole network's totals for scale."""

    arch: str
    input_shape: tuple[int, ...]
    modules: tuple[ModuleReductions, ...]
    network_macs: int
    network_params: int

    @property
    def built_macs(self) -> int:
        return sum(m.built_macs for m in self.modules)

    @property
    def without_macs(self) -> int:
        return sum(m.without_macs for m in self.modules)

    @property
    def built_params(self) -> int:
        return sum(m.built_params for m in self.modules)

    @property
    def without_params(self) -> int:
        return sum(m.without_params for m in self.modules)

    @property
    def ratio(self) -> float:
        return self.without_macs / self.built_macs

    def totals(self) -> dict:
        return {"arch": self.arch, "modules": len(self.modules), "macs": self.built_macs,
                "macs_without": self.without_macs, "ratio": round(self.ratio, 3), "params": self.built_params,
                "params_without": self.without_params, "network_macs": self.network_macs,
                "network_params": self.network_params,
                "network_macs_without": self.network_macs - self.built_macs + self.without_macs}

    def as_dict(self) -> dict:
        return {"totals": self.totals(), "modules": [m.as_dict() for m in self.modules]}


class _SourceMode(TorchFunctionMode):
    """Tags every tensor with the set of (source, through_pooling) it was computed from; convolution hooks
    and module pre-hooks set the sources, every other operation passes on the union of its inputs'."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        sources = frozenset().union(*(getattr(t, _TAG, frozenset()) for t in tensors))
        if "pool" in getattr(func, "__name__", ""):
            sources = frozenset((source, True) for source, _ in sources)
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor) and not isinstance(tensor, nn.Parameter):
                setattr(tensor, _TAG, sources)
        return out


def _tag(tensors, sources: frozenset) -> None:
    for tensor in tree_flatten(tensors)[0]:
        if isinstance(tensor, torch.Tensor):
            setattr(tensor, _TAG, sources)


def _sources(tensors) -> frozenset:
    return frozenset().union(*(getattr(t, _TAG, frozenset()) for t in tree_flatten(tensors)[0]
                               if isinstance(t, torch.Tensor)))


@dataclass
class _Trace:
    input_shape: tuple[int, int, int] | None = None
    output_shape: tuple[int, int, int] | None = None
    output_sources: frozenset = frozenset()


def _input_shape(inputs) -> tuple[int, int, int]:
    tensors = [t for t in tree_flatten(inputs)[0] if isinstance(t, torch.Tensor)]
    return (sum(t.shape[1] for t in tensors), *tensors[0].shape[-2:])


def _trace(model: nn.Module, example: torch.Tensor, module_types: tuple[str, ...]):
    """One forward pass recording, for each selected module, its shapes and what feeds each convolution."""
    modules = {n: m for n, m in model.named_modules() if type(m).__name__ in module_types}
    traces = {n: _Trace() for n in modules}
    conv_records: dict[str, dict[str, tuple[frozenset, tuple[int, int]]]] = {n: {} for n in modules}

    def module_pre(name):
        def hook(_module, inputs):
            traces[name].input_shape = _input_shape(inputs)
            _tag(inputs, frozenset({(_INPUT, False)}))
        return hook

    def module_post(name):
        def hook(_module, _inputs, output):
            traces[name].output_shape = tuple(output.shape[1:])
            traces[name].output_sources = _sources(output)
        return hook

    def conv_post(module_name, conv_name):
        def hook(_module, inputs, output):
            conv_records[module_name][conv_name] = (_sources(inputs), tuple(output.shape[-2:]))
            _tag(output, frozenset({(conv_name, False)}))
        return hook

    before = [(module, module_pre(name)) for name, module in modules.items()]
    after = [(module, module_post(name)) for name, module in modules.items()]
    after += [(conv, conv_post(name, conv_name)) for name, module in modules.items()
              for conv_name, conv in module.named_modules() if isinstance(conv, nn.Conv2d)]
    counter = flop_counter()
    with forward_hooks(before, pre=True), forward_hooks(after), COUNTING_LOCK, torch.no_grad(), counter, \
            _SourceMode():
        model(example)
    return modules, traces, conv_records, counter.get_total_flops() // 2


def _branch_name(paths: list[str]) -> str:
    """'branch2' for ['branch2.0.conv', 'branch2.1.conv'], 'branch5x5' for ['branch5x5_1', 'branch5x5_2'],
    'conv1 → conv2' where the names share nothing."""
    heads = list(dict.fromkeys(p.split(".")[0] for p in paths))
    if len(heads) == 1:
        return heads[0]
    prefix = os.path.commonprefix(heads)
    if prefix.endswith("_"):
        return prefix.rstrip("_")
    return " → ".join(heads)


def _roots(name: str, feeders: dict[str, set[str]]) -> frozenset[str]:
    """The convolutions on the module's input that `name` descends from."""
    parents = feeders[name] - {_INPUT}
    if not parents:
        return frozenset({name})
    return frozenset().union(*(_roots(p, feeders) for p in parents))


def _analyse_module(path: str, module: nn.Module, trace: _Trace,
                    records: dict[str, tuple[frozenset, tuple[int, int]]]) -> ModuleReductions:
    convs = {n: m for n, m in module.named_modules() if isinstance(m, nn.Conv2d) and n in records}
    feeders = {n: {source for source, _ in records[n][0]} for n in convs}
    pooled = {n: any(through_pool for _, through_pool in records[n][0]) for n in convs}
    consumers = {n: [c for c in convs if n in feeders[c]] for n in convs}
    reaches_output = {source for source, _ in trace.output_sources}

    def role(name: str) -> str:
        conv, fed = convs[name], feeders[name]
        if conv.kernel_size == (1, 1):
            if fed == {_INPUT} and pooled[name]:
                return POOL_PROJECTION
            if fed == {_INPUT}:
                feeds_larger = any(convs[c].kernel_size != (1, 1) for c in consumers[name])
                is_reduction = feeds_larger and name not in reaches_output and conv.groups == 1
                if is_reduction:
                    return REDUCTION
                return SHORTCUT if any(word in name for word in ("downsample", "shortcut")) else OWN_BRANCH
            return EXPANSION if conv.out_channels > conv.in_channels // conv.groups else PROJECTION
        if fed == {_INPUT}:
            return FULL_INPUT
        return AFTER_REDUCTION if any(roles.get(f) == REDUCTION for f in fed) else LATER

    roles: dict[str, str] = {}
    for name in sorted(convs, key=lambda n: convs[n].kernel_size != (1, 1)):
        roles[name] = role(name)
    groups: dict[frozenset, list[str]] = {}
    for name in convs:
        groups.setdefault(_roots(name, feeders), []).append(name)
    branch_of = {n: _branch_name(members) for members in groups.values() for n in members}

    uses = []
    for name, conv in convs.items():
        output_hw = records[name][1]
        built = conv_cost(conv, output_hw)
        without = None if roles[name] == REDUCTION else _without(conv, output_hw, feeders[name], convs, roles)
        fed_by = tuple(sorted("input" if f == _INPUT else f for f in feeders[name]))
        uses.append(ConvUse(name, branch_of[name], roles[name], fed_by, built, without))
    return ModuleReductions(path, type(module).__name__, trace.input_shape, trace.output_shape, tuple(uses))


def _without(conv: nn.Conv2d, output_hw, fed: set[str], convs: dict[str, nn.Conv2d], roles: dict[str, str]):
    """The cost of `conv` once the reductions feeding it are gone and it takes the module's full input."""
    reductions = [convs[f] for f in fed if roles.get(f) == REDUCTION]
    if not reductions:
        return conv_cost(conv, output_hw)
    full_input = reductions[0].in_channels
    in_channels = conv.in_channels - sum(r.out_channels for r in reductions) + full_input
    stride = tuple(a * b for a, b in zip(conv.stride, reductions[0].stride))
    replacement = _meta_conv(in_channels, conv.out_channels, conv.kernel_size, stride, conv.bias is not None)
    return conv_cost(replacement, output_hw)


def reduction_archs() -> list[str]:
    """The registered networks whose modules `network_reductions` analyses."""
    return [name for name in arch_names() if get_spec(name).reduction_modules]


def _check_reduction_arch(arch: str) -> None:
    if not get_spec(arch).reduction_modules:
        raise ValueError(f"{arch} has no Inception modules, bottlenecks or dense layers to analyse; choose from: "
                         f"{', '.join(reduction_archs())}")


@cache
def network_reductions(arch: str, paper_kernels: bool = False) -> NetworkReductions:
    """Each Inception module / bottleneck / dense layer of `arch` as built and without its 1x1 reductions,
    read from the model built on the meta device at its own input size. ValueError for other networks.

    `paper_kernels`: GoogLeNet with the paper's 5x5 convolutions in the branch where torchvision's has 3x3
    (torchvision issue #906), the network the lecture's slide counts."""
    _check_reduction_arch(arch)
    spec = get_spec(arch)
    with torch.device("meta"):
        model = build_model(arch)
        if paper_kernels:
            _widen_to_paper_kernels(model)
    example = example_input(spec, device="meta")
    modules, traces, records, network_macs = _trace(model, example, spec.reduction_modules)
    analysed = tuple(_analyse_module(path, modules[path], traces[path], records[path])
                     for path in modules if traces[path].input_shape is not None)
    params = sum(p.numel() for p in model.parameters())
    return NetworkReductions(arch, tuple(example.shape), analysed, network_macs, params)


def _widen_to_paper_kernels(model: nn.Module) -> None:
    """In place: every Inception module's third branch gets the paper's 5x5 convolution (same channels)."""
    inceptions = [m for m in model.modules() if type(m).__name__ == "Inception"]
    if not inceptions:
        raise ValueError("only GoogLeNet's Inception modules have a 5x5 branch to restore")
    for module in inceptions:
        conv = module.branch3[1].conv
        module.branch3[1].conv = nn.Conv2d(conv.in_channels, conv.out_channels, 5, padding=2,
                                           bias=conv.bias is not None)


@dataclass(frozen=True)
class HeadComparison:
    """The first dense layer after the last feature map, fed by global average pooling or by a flatten."""

    arch: str
    feature_shape: tuple[int, int, int]
    dense_path: str
    width: int
    built_head: str
    gap_params: int
    flatten_params: int
    gap_formula: str
    flatten_formula: str
    model_params: int

    @property
    def ratio(self) -> float:
        """How many times more parameters the flatten head needs."""
        return self.flatten_params / self.gap_params

    @property
    def built_params(self) -> int:
        return self.gap_params if self.built_head == GAP else self.flatten_params

    @property
    def model_params_other_head(self) -> int:
        """The whole network's parameters with the other kind of head."""
        other = self.flatten_params if self.built_head == GAP else self.gap_params
        return self.model_params - self.built_params + other

    def as_dict(self) -> dict:
        return {**vars(self), "ratio": self.ratio, "model_params_other_head": self.model_params_other_head}


GAP = "global average pooling"
FLATTEN = "flatten"


def _is_global_pool(module: nn.Module, output) -> bool:
    return "Pool" in type(module).__name__ and output.dim() == 4 and output.shape[-2:] == (1, 1)


@cache
def head_comparison(arch: str) -> HeadComparison | None:
    """GAP versus flatten + dense for `arch`'s first dense layer (the lecture's GAP slide), or None where
    that layer is not fed by the last feature map (no dense layer, or something in between)."""
    spec = get_spec(arch)
    with torch.device("meta"):
        model = build_model(arch)
    last_map: list[tuple[int, ...]] = []
    dense: list[tuple[str, nn.Linear]] = []
    pooled = [False]

    def hook(name):
        def record(module, _inputs, output):
            if dense or not isinstance(output, torch.Tensor):
                return
            if isinstance(module, nn.Linear):
                dense.append((name, module))
            elif _is_global_pool(module, output):
                pooled[0] = True
            elif output.dim() == 4 and (output.shape[-2:] != (1, 1) or not pooled[0]):
                last_map[:] = [tuple(output.shape[1:])]
                pooled[0] = False
        return record

    with forward_hooks((m, hook(n)) for n, m in model.named_modules() if n), torch.no_grad():
        model(example_input(spec, device="meta"))
    if not dense or not last_map:
        return None
    (channels, height, width), (path, linear) = last_map[0], dense[0]
    bias = linear.out_features if linear.bias is not None else 0
    bias_text = f" + {linear.out_features}" if bias else ""
    if linear.in_features == channels * height * width:
        built = FLATTEN
    elif linear.in_features == channels:
        built = GAP
    else:
        return None
    gap = channels * linear.out_features + bias
    flatten = channels * height * width * linear.out_features + bias
    return HeadComparison(
        arch=arch, feature_shape=(channels, height, width), dense_path=path, width=linear.out_features,
        built_head=built, gap_params=gap, flatten_params=flatten,
        gap_formula=f"{channels} x {linear.out_features}{bias_text} = {human(gap)}",
        flatten_formula=f"({height}x{width}x{channels}) x {linear.out_features}{bias_text} = {human(flatten)}",
        model_params=sum(p.numel() for p in model.parameters()))


def head_comparisons() -> list[HeadComparison]:
    """`head_comparison` for every registered architecture that has one."""
    return [c for c in (head_comparison(name) for name in arch_names()) if c is not None]
