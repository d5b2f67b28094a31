"""1x1 reductions: the lecture's numbers, module analysis cross-checked against the profiler, CLI and page."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from cnnlab.cli import main
from cnnlab.profiling import human, profile_arch, profile_model
from cnnlab.reductions import (
    AFTER_REDUCTION, EXPANSION, FACTORIZATION_EXAMPLE, GAP, FLATTEN, LECTURE_COMPRESSION_EXAMPLE,
    LECTURE_INCEPTION_EXAMPLE, OWN_BRANCH, POOL_PROJECTION, REDUCTION, SHORTCUT, ConvSetup, FactorizationSetup,
    asymmetric_factorization, compare_reduction, factorizations, head_comparisons, network_reductions,
    receptive_field, reduction_archs, reduction_sweep, vgg_stack)
from cnnlab.registry import arch_names, build_model

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def _conv_rows_under(profile, path: str):
    return [r for r in profile.rows if r.name.startswith(path + ".")]


def _module(network, path: str):
    return next(m for m in network.modules if m.path == path)


# --- calculator -------------------------------------------------------------------------------------------

def test_lecture_inception_slide_numbers_exactly():
    result = compare_reduction(LECTURE_INCEPTION_EXAMPLE)
    assert result.naive.formula == "(14x14x48) x (5x5x480) = 112.9M"
    assert result.reduce.formula == "(14x14x16) x (1x1x480) = 1.5M"
    assert result.conv.formula == "(14x14x48) x (5x5x16) = 3.8M"
    assert result.total_formula == "1.5M + 3.8M = 5.3M"
    assert result.total_macs == result.reduce_macs + result.conv.macs
    assert round(result.ratio, 1) == 21.4


@pytest.mark.parametrize("setup", [LECTURE_INCEPTION_EXAMPLE, ConvSetup(9, 7, 30, 12, kernel=4, reduce_to=8)],
                         ids=["lecture", "even kernel"])
def test_calculator_agrees_with_profiled_same_padding_convolutions(setup):
    result = compare_reduction(setup)
    example = torch.empty(1, setup.in_channels, setup.height, setup.width, device="meta")
    with torch.device("meta"):
        naive = nn.Conv2d(setup.in_channels, setup.out_channels, setup.kernel, padding="same")
        reduced = nn.Sequential(nn.Conv2d(setup.in_channels, setup.reduce_to, 1),
                                nn.Conv2d(setup.reduce_to, setup.out_channels, setup.kernel, padding="same"))
    naive_profile, reduced_profile = profile_model(naive, example), profile_model(reduced, example)
    assert naive_profile.output_shape == reduced_profile.output_shape == (1, setup.out_channels, setup.height,
                                                                           setup.width)
    assert (naive_profile.macs, naive_profile.params) == (result.naive.macs, result.naive.params)
    assert (reduced_profile.macs, reduced_profile.params) == (result.total_macs, result.total_params)
    assert [r.macs for r in reduced_profile.rows] == [result.reduce.macs, result.conv.macs]


def test_lecture_compression_example_runs_on_a_real_tensor():
    setup = LECTURE_COMPRESSION_EXAMPLE
    result = compare_reduction(setup)
    assert result.reduce is None and result.total_macs == result.naive.macs
    assert result.naive.formula == "(64x64x20) x (1x1x100) = 8.2M"
    conv = nn.Conv2d(setup.in_channels, setup.out_channels, 1)
    features = torch.rand(1, 100, 64, 64)
    assert conv(features).shape == (1, 20, 64, 64)
    assert profile_model(conv, features).macs == result.naive.macs
    assert sum(p.numel() for p in conv.parameters()) == result.naive.params


@pytest.mark.parametrize("fields", [
    dict(height=0), dict(width=-3), dict(in_channels=2.5), dict(kernel=True), dict(reduce_to=0),
])
def test_setup_rejects_anything_but_positive_whole_numbers(fields):
    values = {**vars(LECTURE_INCEPTION_EXAMPLE), **fields}
    with pytest.raises(ValueError, match="whole number|greater than zero"):
        ConvSetup(**values)


def test_sweep_grows_with_the_reduction_width_and_stops_paying_at_full_width():
    sweep = reduction_sweep(LECTURE_INCEPTION_EXAMPLE, range(1, 481, 40))
    totals = [r.total_macs for r in sweep]
    assert totals == sorted(totals) and len(set(totals)) == len(totals)
    assert sweep[0].ratio > 1
    assert compare_reduction(ConvSetup(14, 14, 480, 48, 5, 480)).ratio < 1


# --- factorized convolutions ------------------------------------------------------------------------------

C = 64  # channels in and out for the C^2 identities: C^2 = 4096


@pytest.mark.parametrize("kernel, layers, stack_params, single_params", [
    (5, 2, 18 * 4096, 25 * 4096),  # two 3x3 = 18C^2 = 73,728 against one 5x5 = 25C^2 = 102,400
    (7, 3, 27 * 4096, 49 * 4096),  # three 3x3 = 27C^2 = 110,592 against one 7x7 = 49C^2 = 200,704
])
def test_vgg_stack_has_the_papers_c_squared_counts(kernel, layers, stack_params, single_params):
    result = vgg_stack(FactorizationSetup(14, 14, C, C, kernel), bias=False)
    assert [layer.kernel for layer in result.layers] == [(3, 3)] * layers
    assert (result.params, result.single.params) == (stack_params, single_params)
    assert result.c_squared_coefficients == (single_params // C ** 2, stack_params // C ** 2)
    assert result.receptive_field == (kernel, kernel) == (1 + 2 * layers, 1 + 2 * layers)
    assert result.single.params_formula == f"({kernel}x{kernel}x{C}) x {C} = {human(single_params)}"


def test_seven_by_seven_has_81_percent_more_weights_than_three_3x3():
    result = vgg_stack(FactorizationSetup(14, 14, C, C, 7), bias=False)
    assert round(result.params_ratio - 1, 2) == 0.81 and round(result.ratio - 1, 2) == 0.81
    assert result.single.macs == 14 * 14 * 49 * C ** 2 == 39_337_984
    assert result.macs == 3 * 14 * 14 * 9 * C ** 2 == 21_676_032
    assert result.formula == "7,225,344 + 7,225,344 + 7,225,344 = 21,676,032", "7.2M x 3 would not add up to 21.7M"
    assert result.single.formula == "(14x14x64) x (7x7x64) = 39.3M"


def test_macs_are_h_times_w_times_the_parameters_of_one_output_position():
    setup = FactorizationSetup(height=28, width=17, in_channels=48, out_channels=80, kernel=7)
    for result in factorizations(setup, bias=False):
        for layer in (result.single, *result.layers):
            assert layer.output_hw == (28, 17)
            assert layer.macs == 28 * 17 * layer.params
        assert result.macs == 28 * 17 * result.params
    vgg, asymmetric = factorizations(setup, bias=False)
    assert [(layer.in_channels, layer.out_channels) for layer in vgg.layers] == [(48, 80), (80, 80), (80, 80)]
    assert [(layer.kernel, layer.in_channels, layer.out_channels) for layer in asymmetric.layers] == [
        ((1, 7), 48, 80), ((7, 1), 80, 80)]
    assert vgg.macs == 28 * 17 * (9 * 48 * 80 + 2 * 9 * 80 * 80) == 71_285_760


def test_bias_adds_one_parameter_per_filter_and_no_macs():
    with_bias, without = vgg_stack(FACTORIZATION_EXAMPLE), vgg_stack(FACTORIZATION_EXAMPLE, bias=False)
    assert with_bias.params - without.params == 2 * 192 and with_bias.macs == without.macs == 520_224_768
    assert with_bias.single.params == 5 * 5 * 192 * 192 + 192 == 921_792
    assert with_bias.layers[0].params_formula == "(3x3x192 + 1) x 192 = 332.0K"
    assert with_bias.params_formula == "331,968 + 331,968 = 663,936", "not 332.0K + 332.0K = 663.9K"
    assert without.params_formula == "331.8K + 331.8K = 663.6K"


def test_factorizations_agree_with_profiled_same_padding_chains():
    setup = FACTORIZATION_EXAMPLE
    example = torch.empty(1, setup.in_channels, setup.height, setup.width, device="meta")
    for result in factorizations(setup):
        with torch.device("meta"):
            chain = _real_chain(result, bias=True)
        profile = profile_model(chain, example)
        assert profile.output_shape == (1, 192, 28, 28)
        assert (profile.macs, profile.params) == (result.macs, result.params)
        assert [r.formula for r in profile.rows] == [layer.formula for layer in result.layers]


def _real_chain(result, bias: bool = False) -> nn.Sequential:
    return nn.Sequential(*(nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel, padding="same", bias=bias)
                           for layer in result.layers))


@pytest.mark.parametrize("kernel", [3, 5, 7, 9, 11])
def test_receptive_field_is_what_one_output_pixel_sees_through_the_real_chain(kernel):
    for result in factorizations(FactorizationSetup(1, 1, 1, 1, kernel)):
        chain = _real_chain(result)
        for conv in chain:
            nn.init.ones_(conv.weight)
        image = torch.zeros(1, 1, 25, 25, requires_grad=True)
        chain(image)[0, 0, 12, 12].backward()
        rows, columns = image.grad[0, 0].nonzero().unbind(1)
        seen = (int(rows.max() - rows.min()) + 1, int(columns.max() - columns.min()) + 1)
        assert seen == result.receptive_field == (kernel, kernel)
    assert receptive_field([(3, 3)] * ((kernel - 1) // 2)) == (kernel, kernel)


def test_receptive_field_of_kernels_one_after_another():
    assert [receptive_field([(3, 3)] * n) for n in (1, 2, 3, 5)] == [(3, 3), (5, 5), (7, 7), (11, 11)]
    assert receptive_field([(1, 7)]) == (1, 7) and receptive_field([(1, 7), (7, 1)]) == (7, 7)


def test_1x3_then_3x1_saves_a_third_of_a_3x3():
    result = asymmetric_factorization(FactorizationSetup(8, 8, C, C, 3), bias=False)
    assert [layer.kernel for layer in result.layers] == [(1, 3), (3, 1)]
    assert (result.params, result.single.params) == (6 * 4096, 9 * 4096) == (24_576, 36_864)
    assert (result.macs, result.single.macs) == (8 * 8 * 24_576, 8 * 8 * 36_864)
    assert result.saving == pytest.approx(1 / 3) and result.ratio == pytest.approx(1.5)
    assert result.receptive_field == (3, 3)
    assert vgg_stack(FactorizationSetup(8, 8, C, C, 3), bias=False).ratio == 1.0  # one 3x3 is its own stack


def test_1x7_then_7x1_against_7x7_and_inception_v3s_17x17_module():
    result = asymmetric_factorization(FactorizationSetup(17, 17, 128, 128, 7), bias=False)
    assert result.c_squared_coefficients == (49, 14) and result.ratio == pytest.approx(3.5)
    assert result.params == 14 * 128 ** 2 == 229_376 and result.macs == 17 * 17 * 229_376
    mixed_6b = _module(network_reductions("inception_v3"), "Mixed_6b")
    built = next(c.built for c in mixed_6b.convs if c.path == "branch7x7_2.conv")
    first = result.layers[0]
    assert (built.kernel, built.output_hw) == (first.kernel, first.output_hw) == ((1, 7), (17, 17))
    assert (built.macs, built.params, built.formula) == (first.macs, first.params, first.formula)


@pytest.mark.parametrize("fields, message", [
    (dict(kernel=4), "kernel must be odd"), (dict(kernel=2), "at least 3"), (dict(kernel=1), "at least 3"),
    (dict(kernel=0), "kernel must be greater than zero"), (dict(kernel=2.5), "kernel must be a whole number"),
    (dict(kernel=True), "whole number"), (dict(height=0), "height must be greater than zero"),
    (dict(out_channels=-8), "out channels must be greater than zero"),
])
def test_factorization_setup_rejects_even_small_and_non_positive_input(fields, message):
    with pytest.raises(ValueError, match=message):
        FactorizationSetup(**{**vars(FACTORIZATION_EXAMPLE), **fields})


# --- real modules -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", reduction_archs())
def test_module_totals_equal_what_the_profiler_measures(arch):
    network = network_reductions(arch)
    profile = profile_arch(arch)
    assert network.modules
    assert (network.network_macs, network.network_params) == (profile.macs, profile.params)
    for module in network.modules:
        rows = _conv_rows_under(profile, module.path)
        assert module.built_macs == sum(r.macs for r in rows), module.path
        assert module.built_params == sum(r.params for r in rows if r.type == "Conv2d"), module.path
        assert len(module.convs) == sum(r.type == "Conv2d" for r in rows)
        conv_rows = {r.name: r for r in rows if r.type == "Conv2d"}
        for conv in module.convs:
            row = conv_rows[f"{module.path}.{conv.path}"]
            assert tuple(row.output_shape[-2:]) == conv.built.output_hw
            assert row.formula == conv.built.formula


def test_googlenet_has_nine_modules_with_two_reductions_one_branch_and_one_pool_projection_each():
    network = network_reductions("googlenet")
    assert [m.path for m in network.modules] == [f"inception{n}" for n in
                                                  ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b")]
    for module in network.modules:
        assert [c.path for c in module.with_role(REDUCTION)] == ["branch2.0.conv", "branch3.0.conv"]
        assert [c.path for c in module.with_role(OWN_BRANCH)] == ["branch1.conv"]
        assert [c.path for c in module.with_role(POOL_PROJECTION)] == ["branch4.1.conv"]
        assert module.ratio > 1.5
    assert network.without_macs > 2 * network.built_macs


def test_googlenet_with_the_papers_5x5_kernels_saves_what_the_slide_counts(capsys):
    built, paper = network_reductions("googlenet"), network_reductions("googlenet", paper_kernels=True)
    inception4a = next(m for m in paper.modules if m.path == "inception4a")
    third = {c.path: c for c in inception4a.convs}["branch3.1.conv"].built
    assert third.kernel == (5, 5) and third.macs == 14 * 14 * 48 * 5 * 5 * 16, "the slide's 3.8M after the 1.5M"
    assert paper.ratio > built.ratio and round(inception4a.ratio, 2) == 4.25
    with pytest.raises(ValueError, match="only GoogLeNet"):
        network_reductions("resnet50", paper_kernels=True)
    assert main(["reduce", "--arch", "googlenet", "--paper-kernels", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["totals"]["ratio"] == pytest.approx(paper.ratio, abs=1e-3)


def test_the_lecture_slide_is_googlenet_inception4a_third_branch():
    module = _module(network_reductions("googlenet"), "inception4a")
    reduction, conv = (c for c in module.convs if c.branch == "branch3")
    assert (reduction.role, conv.role) == (REDUCTION, AFTER_REDUCTION)
    setup = ConvSetup(*conv.built.output_hw, reduction.built.in_channels, conv.built.out_channels,
                      conv.built.kernel[0], reduction.built.out_channels)
    assert setup == ConvSetup(14, 14, 480, 48, 3, 16)
    with_paper_kernel = compare_reduction(ConvSetup(14, 14, 480, 48, 5, 16))
    assert with_paper_kernel.total_formula == "1.5M + 3.8M = 5.3M"
    as_built = compare_reduction(setup, bias=False)
    assert as_built.total_macs == reduction.built.macs + conv.built.macs
    assert as_built.naive.macs == conv.without.macs


class InceptionWithoutReductions(nn.Module):
    """A torchvision GoogLeNet Inception module with its 1x1 reductions removed: the second convolutions of
    branches 2 and 3 take the module's full input."""

    def __init__(self, inception: nn.Module):
        super().__init__()
        full_input = inception.branch1.conv.in_channels
        self.branch1 = copy.deepcopy(inception.branch1)
        self.branch2 = self._on_full_input(inception.branch2[1].conv, full_input)
        self.branch3 = self._on_full_input(inception.branch3[1].conv, full_input)
        self.branch4 = copy.deepcopy(inception.branch4)

    @staticmethod
    def _on_full_input(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
        return nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                         bias=conv.bias is not None)

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class BottleneckWithoutReduction(nn.Module):
    """A torchvision ResNet bottleneck without its first 1x1: the 3x3 takes the block's full input."""

    def __init__(self, block: nn.Module):
        super().__init__()
        conv2 = block.conv2
        self.conv2 = nn.Conv2d(block.conv1.in_channels, conv2.out_channels, conv2.kernel_size, conv2.stride,
                               conv2.padding, bias=False)
        self.conv3 = copy.deepcopy(block.conv3)
        self.downsample = copy.deepcopy(block.downsample)

    def forward(self, x):
        shortcut = self.downsample(x) if self.downsample is not None else x
        return self.conv3(self.conv2(x)) + shortcut


@pytest.mark.parametrize("arch, variant", [("googlenet", InceptionWithoutReductions),
                                           ("resnet50", BottleneckWithoutReduction)])
def test_without_reductions_variant_built_and_profiled_matches_the_formula(arch, variant):
    network = network_reductions(arch)
    with torch.device("meta"):
        model = build_model(arch)
        built = dict(model.named_modules())
        for module in network.modules:
            without = variant(built[module.path])
            profile = profile_model(without, torch.empty(1, *module.input_shape))
            assert profile.output_shape[1:] == module.output_shape, module.path
            assert profile.macs == module.without_macs, module.path
            conv_params = sum(r.params for r in profile.rows if r.type == "Conv2d")
            assert conv_params == module.without_params, module.path
            assert profile.macs > module.built_macs or module.path == "layer1.0"


def test_roles_follow_the_data_flow():
    mixed_7b = _module(network_reductions("inception_v3"), "Mixed_7b")
    fed_by_reduction = [c.path for c in mixed_7b.convs if "branch3x3_1.conv" in c.fed_by]
    assert fed_by_reduction == ["branch3x3_2a.conv", "branch3x3_2b.conv"]
    assert {c.role for c in mixed_7b.convs if c.path in fed_by_reduction} == {AFTER_REDUCTION}

    block35 = _module(network_reductions("inception_resnet_v2"), "repeat.0")
    roles = {c.path: c.role for c in block35.convs}
    assert roles["branch0.conv"] == OWN_BRANCH and roles["conv2d"] == EXPANSION
    assert roles["branch1.0.conv"] == roles["branch2.0.conv"] == REDUCTION

    first_block = _module(network_reductions("resnet50"), "layer2.0")
    roles = {c.path: c.role for c in first_block.convs}
    assert roles == {"conv1": REDUCTION, "conv2": AFTER_REDUCTION, "conv3": EXPANSION, "downsample.0": SHORTCUT}
    assert first_block.convs[1].built.stride == (2, 2)


def test_densenet_bottleneck_widens_in_the_first_layer_and_saves_in_the_last():
    network = network_reductions("densenet121")
    first, last = network.modules[0], network.modules[-1]
    assert len(network.modules) == 6 + 12 + 24 + 16
    assert first.input_shape[0] < first.with_role(REDUCTION)[0].built.out_channels
    assert first.ratio < 1 < last.ratio


def test_network_without_reductions_rejects_other_networks():
    with pytest.raises(ValueError, match="no Inception modules"):
        network_reductions("vgg16")


# --- global average pooling -------------------------------------------------------------------------------

def test_every_architecture_has_a_head_comparison():
    assert [c.arch for c in head_comparisons()] == arch_names()


@pytest.mark.parametrize("arch, head, feature_shape, width", [
    ("vgg16", FLATTEN, (512, 7, 7), 4096),
    ("lecture_cnn", FLATTEN, (128, 9, 9), 512),
    ("googlenet", GAP, (1024, 7, 7), 1000),
    ("inception_v3", GAP, (2048, 8, 8), 1000),
    ("efficientnet_b0", GAP, (1280, 7, 7), 1000),
])
def test_head_comparison_reads_the_built_head(arch, head, feature_shape, width):
    comparison = next(c for c in head_comparisons() if c.arch == arch)
    assert (comparison.built_head, comparison.feature_shape, comparison.width) == (head, feature_shape, width)
    profile = profile_arch(arch)
    dense_row = next(r for r in profile.rows if r.name == comparison.dense_path)
    assert dense_row.params == comparison.built_params
    assert comparison.model_params == profile.params
    channels, height, width_ = feature_shape
    assert comparison.flatten_params - comparison.gap_params == channels * (height * width_ - 1) * width


# --- CLI --------------------------------------------------------------------------------------------------

LECTURE_ARGS = ["reduce", "--size", "14", "--in-channels", "480", "--out-channels", "48", "--kernel", "5",
                "--reduce-to", "16"]


def test_cli_reduce_json_has_the_calculator_numbers(capsys):
    assert main(LECTURE_ARGS + ["--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    expected = compare_reduction(LECTURE_INCEPTION_EXAMPLE)
    assert data["naive_macs"] == expected.naive.macs
    assert (data["reduce_macs"], data["conv_macs"]) == (expected.reduce.macs, expected.conv.macs)
    assert data["total_macs"] == data["reduce_macs"] + data["conv_macs"]
    assert data["ratio"] == pytest.approx(data["naive_macs"] / data["total_macs"])
    assert data["total_params"] == data["reduce_params"] + data["conv_params"] < data["naive_params"]
    assert data["formulas"]["total"] == "1.5M + 3.8M = 5.3M"


def test_cli_reduce_text_and_two_sizes(capsys):
    assert main(LECTURE_ARGS) == 0
    out = capsys.readouterr().out
    assert "(14x14x48) x (5x5x480) = 112.9M" in out and "1.5M + 3.8M = 5.3M" in out
    assert "ratio: 21.43x fewer MACs" in out
    assert main(["reduce", "--size", "14", "--in-channels", "16", "--out-channels", "48", "--kernel", "5",
                 "--reduce-to", "64"]) == 0
    assert "4.05x more MACs" in capsys.readouterr().out  # a 'reduction' wider than its input costs more
    assert main(["reduce", "--size", "14", "--in-channels", "480", "--out-channels", "48", "--kernel", "5"]) == 0
    out = capsys.readouterr().out
    assert "total_macs: 112896000" in out and "ratio" not in out and "--reduce-to C counts" in out
    assert main(["reduce", "--size", "64", "32", "--in-channels", "100", "--out-channels", "20", "--kernel", "1",
                 "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["height"], data["width"], data["reduce_macs"]) == (64, 32, 0)
    assert data["naive_macs"] == data["total_macs"] == compare_reduction(ConvSetup(64, 32, 100, 20, 1)).naive.macs


def test_cli_reduce_arch_prints_the_module_table(capsys):
    assert main(["reduce", "--arch", "googlenet"]) == 0
    out = capsys.readouterr().out
    assert all(f"inception{n}" in out for n in ("3a", "4a", "5b"))
    assert main(["reduce", "--arch", "googlenet", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    network = network_reductions("googlenet")
    assert len(data["modules"]) == 9
    assert data["totals"]["macs"] == network.built_macs and data["totals"]["macs_without"] == network.without_macs


FACTORIZE_ARGS = ["--factorize", "--size", "28", "--in-channels", "192", "--out-channels", "192", "--kernel", "7"]


def test_cli_reduce_factorize_json_has_both_chains(capsys):
    assert main(["reduce", *FACTORIZE_ARGS, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    vgg, asymmetric = data["vgg_stack"], data["asymmetric"]
    assert vgg["single"]["macs"] == asymmetric["single"]["macs"] == 28 * 28 * 49 * 192 ** 2 == 1_416_167_424
    assert [layer["kernel"] for layer in vgg["layers"]] == [[3, 3]] * 3 and vgg["receptive_field"] == [7, 7]
    assert vgg["macs"] == 3 * 28 * 28 * 9 * 192 ** 2 == 780_337_152
    assert [layer["kernel"] for layer in asymmetric["layers"]] == [[1, 7], [7, 1]]
    assert asymmetric["macs"] == 28 * 28 * 14 * 192 ** 2 == 404_619_264 and asymmetric["ratio"] == pytest.approx(3.5)
    assert vgg["params"] == 3 * (9 * 192 + 1) * 192 == 995_904  # the calculator counts biases
    expected = vgg_stack(FactorizationSetup(28, 28, 192, 192, 7)).as_dict()
    assert data["vgg_stack"] == json.loads(json.dumps(expected))


def test_cli_reduce_factorize_text(capsys):
    assert main(["reduce", *FACTORIZE_ARGS]) == 0
    out = capsys.readouterr().out
    assert "(28x28x192) x (7x7x192) = 1.4G" in out and "260.1M + 260.1M + 260.1M = 780.3M" in out
    assert "receptive_field: 7x7 (one 7x7: 7x7)" in out
    assert "1.81x fewer MACs" in out and "3.50x fewer MACs" in out and "(71% of its MACs saved)" in out
    assert main(["reduce", *FACTORIZE_ARGS[:-1], "3"]) == 0
    out = capsys.readouterr().out
    assert "one 3x3 is the chain itself: nothing to factorize, nothing saved" in out and "0% of" not in out
    assert "1.50x fewer MACs" in out


@pytest.mark.parametrize("args, message", [
    (["--size", "0", "--in-channels", "4", "--out-channels", "4", "--kernel", "3"], "greater than zero"),
    (["--size", "8", "--in-channels", "-4", "--out-channels", "4", "--kernel", "3"], "greater than zero"),
    (["--size", "8", "--in-channels", "4", "--out-channels", "4.5", "--kernel", "3"], "not a whole number"),
    (["--size", "8", "--in-channels", "4", "--out-channels", "4", "--kernel", "3", "--reduce-to", "0"],
     "greater than zero"),
    (["--size", "8", "8", "8", "--in-channels", "4", "--out-channels", "4", "--kernel", "3"], "H or H W"),
    (["--size", "8"], "needs --in-channels"),
    (["--arch", "googlenet", "--kernel", "3"], "cannot be combined"),
    (["--arch", "vgg16"], "no Inception modules"),
    (FACTORIZE_ARGS[:-1] + ["4"], "kernel must be odd"),
    (FACTORIZE_ARGS[:-1] + ["1"], "kernel must be at least 3"),
    (FACTORIZE_ARGS + ["--reduce-to", "16"], "--factorize cannot be combined with --reduce-to"),
    (["--factorize", "--size", "28"], "needs --in-channels"),
    (["--arch", "googlenet", "--factorize"], "cannot be combined with --factorize"),
])
def test_cli_reduce_bad_input_exits_2_with_one_line(capsys, args, message):
    assert main(["reduce", *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("cnnlab: error:") and message in captured.err
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err


# --- page -------------------------------------------------------------------------------------------------

def _reductions_page():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.switch_page("pages/reductions.py")
    at.run()
    assert not at.exception
    return at


def _calculator_text(at) -> str:
    return next(m.value for m in at.markdown if "Number of operations" in m.value).replace("\u00a0", " ")


def _metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_page_calculator_starts_on_the_slide_and_follows_the_inputs():
    at = _reductions_page()
    text = _calculator_text(at)
    assert "(14x14x48) x (5x5x480) = 112.9M" in text and "1.5M + 3.8M = 5.3M" in text
    assert _metrics(at)["Naive MACs"] == "112.9M" and _metrics(at)["MACs with reduction"] == "5.3M"

    at.number_input(key="calc_in_channels_number").set_value(240).run()
    assert not at.exception
    assert at.selectbox(key="calc_preset").value == "Your own numbers", "no longer the lecture's example"
    halved = compare_reduction(ConvSetup(14, 14, 240, 48, 5, 16))
    assert halved.naive.formula in _calculator_text(at) and halved.total_formula in _calculator_text(at)
    assert at.slider(key="calc_in_channels_slider").value == 240
    assert _metrics(at)["Fewer MACs"] == f"{halved.ratio:.1f}x"

    at.slider(key="calc_kernel_slider").set_value(3).run()
    assert at.number_input(key="calc_kernel_number").value == 3
    assert compare_reduction(ConvSetup(14, 14, 240, 48, 3, 16)).conv.formula in _calculator_text(at)

    at.number_input(key="calc_in_channels_number").set_value(4000).run()
    assert at.slider(key="calc_in_channels_slider").value == 2048
    assert "x (3x3x4000)" in _calculator_text(at)

    at.checkbox(key="calc_reduce").uncheck().run()
    assert "Total number of operations" not in _calculator_text(at)

    preset = at.selectbox(key="calc_preset")
    preset.set_value(preset.options[1]).run()
    assert not at.exception
    assert "(64x64x20) x (1x1x100) = 8.2M" in _calculator_text(at)
    assert _metrics(at)["Output"] == "64x64x20" and _metrics(at)["MACs"] == "8.2M"
    assert "calc_sweep_chart" not in str(at.get("plotly_chart"))  # no reduction: no chart of its width
    assert any("compresses depth (here 100 channels to 20), not space" in c.value for c in at.caption)
    at.number_input(key="calc_in_channels_number").set_value(256).run()
    preset = at.selectbox(key="calc_preset")
    preset.set_value(preset.options[0]).run()  # back to the slide, from wherever the inputs went
    assert _metrics(at)["Naive MACs"] == "112.9M" and _metrics(at)["MACs with reduction"] == "5.3M"
    at.number_input(key="calc_reduce_to_number").set_value(600).run()  # wider than the 480 input: no saving
    wider = compare_reduction(ConvSetup(14, 14, 480, 48, 5, 600))
    assert "Fewer MACs" not in _metrics(at) and _metrics(at)["More MACs"] == f"{1 / wider.ratio:.1f}x"
    assert any("C_red = 600 is more channels than the input's 480" in w.value for w in at.warning)


def test_page_factorized_convolutions_show_the_chains_and_reject_an_even_kernel():
    at = _reductions_page()
    vgg_table, asymmetric_table, by_kernel = (at.dataframe[i].value for i in range(3))
    assert list(vgg_table["Convolution"]) == ["one 5x5", "3x3 #1", "3x3 #2"]
    assert list(vgg_table["Receptive field so far"]) == ["5x5", "3x3", "5x5"]
    assert list(vgg_table["MACs"]) == [722_534_400, 260_112_384, 260_112_384]
    assert vgg_table["MACs formula"][1] == "(28x28x192) x (3x3x192) = 260.1M"
    assert list(asymmetric_table["Kernel"]) == ["5x5", "1x5", "5x1"]
    assert list(asymmetric_table["MACs"]) == [722_534_400, 144_506_880, 144_506_880]
    assert list(by_kernel["k"]) == [3, 5, 7, 9, 11] and list(by_kernel["3x3 layers"]) == [1, 2, 3, 4, 5]
    assert list(by_kernel["1xk + kx1: fewer (x)"]) == [1.5, 2.5, 3.5, 4.5, 5.5]
    metrics = _metrics(at)
    assert metrics["VGG: receptive field"] == "5x5" and metrics["VGG: fewer MACs"] == "1.39x"
    assert metrics["VGG: MACs of the chain"] == "520.2M" and metrics["Inception-v3: fewer MACs"] == "2.50x"
    assert metrics["Fewer MACs"] == "21.4x", "the calculator's metric keeps its own label"
    assert r"= 18\,C^2" in at.latex[0].value and r"= 25\,C^2" in at.latex[0].value

    at.number_input(key="factor_kernel").set_value(7).run()
    at.checkbox(key="factor_bias").uncheck().run()
    assert not at.exception
    assert _metrics(at)["VGG: fewer MACs"] == "1.81x" and _metrics(at)["Inception-v3: fewer MACs"] == "3.50x"
    vgg_table = at.dataframe[0].value
    assert list(vgg_table["Params"]) == [49 * 192 ** 2, 9 * 192 ** 2, 9 * 192 ** 2, 9 * 192 ** 2]
    assert r"= 27\,C^2" in at.latex[0].value and r"= 49\,C^2" in at.latex[0].value

    at.number_input(key="factor_kernel").set_value(4).run()
    assert not at.exception
    assert [e.value for e in at.error] == ["Kernel must be odd (each 3x3 in a stack widens the receptive field by 2), "
                                           "not 4."]
    assert "VGG: fewer MACs" not in _metrics(at) and "9 modules, as built" in _metrics(at)

    at.number_input(key="factor_kernel").set_value(3).run()
    assert "a 3x3 is already its layer, so there is nothing to factorize" in at.info[0].value
    assert "VGG: fewer MACs" not in _metrics(at) and _metrics(at)["Inception-v3: fewer MACs"] == "1.50x"


@pytest.mark.parametrize("arch", reduction_archs())
def test_page_real_modules_draw_every_network_with_a_colour_per_role(arch):
    at = _reductions_page()
    at.selectbox(key="reductions_arch").set_value(arch).run()
    assert not at.exception, at.exception
    network = network_reductions(arch)
    assert f"{len(network.modules)} modules, as built" in _metrics(at)
    if len(network.modules) <= 16:  # stacked by role: each role its own colour
        chart = next(spec for spec in (json.loads(c.proto.spec) for c in at.get("plotly_chart"))
                     if spec["layout"].get("legend", {}).get("title", {}).get("text") == "Convolution")
        roles = {c.role for m in network.modules for c in m.convs}
        names = {trace["name"] for trace in chart["data"]}
        assert len(names) == len(roles) and roles - {AFTER_REDUCTION} <= names
        if AFTER_REDUCTION in roles:  # the same convolutions take the full input in the 'without' bars
            assert "without': on the full input" in (names - roles).pop()
        assert len({trace["marker"]["color"] for trace in chart["data"]}) == len(roles)


def test_page_real_modules_switch_network():
    at = _reductions_page()
    assert "9 modules, as built" in _metrics(at)
    at.toggle(key="reductions_paper_kernels").set_value(True).run()
    assert _metrics(at)["Saved"] == f"{network_reductions('googlenet', paper_kernels=True).ratio:.2f}x" == "3.58x"
    assert any(c.value.endswith("These are the paper's modules, 5x5 in that branch, as the slide counts them.")
               for c in at.caption)
    at.selectbox(key="reductions_arch").set_value("resnet50").run()
    assert not at.exception and not at.get("toggle"), "only GoogLeNet has the paper's kernels to restore"
    assert f"{len(network_reductions('resnet50').modules)} modules, as built" in _metrics(at)
    at.selectbox(key="reductions_module").set_value("layer3.0").run()
    assert not at.exception
    branches = at.dataframe[-2].value
    assert list(branches["Convolution"]) == ["conv1", "conv2", "conv3", "downsample.0"]
    at.selectbox(key="reductions_arch").set_value("densenet121").run()
    assert not at.exception
    table = next(d for d in at.dataframe if "Module" in d.value.columns)
    modules = table.value
    assert list(modules["#"]) == list(range(1, 59)), "numbered as the chart numbers its 58 pairs of bars"
    module_column = json.loads(table.proto.columns)["Module"]
    assert module_column["width"] >= 8 * len("features.denseblock4.denselayer16") and not module_column["pinned"], \
        "DenseNet's long module names whole, scrolling away on a phone"
    chart = next(spec for spec in (json.loads(c.proto.spec) for c in at.get("plotly_chart"))
                 if spec["layout"].get("xaxis", {}).get("title", {}).get("text", "").startswith("Module"))
    assert [trace["x"][:3] for trace in chart["data"]] == [[1, 2, 3], [1, 2, 3]]
    assert chart["data"][0]["customdata"][0] == modules["Module"][0]
