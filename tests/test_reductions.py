"""1x1 reductions: the lecture's numbers, module analysis cross-checked against the profiler, CLI and page."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from cnnlab.cli import main
from cnnlab.profiling import profile_arch, profile_model
from cnnlab.reductions import (
    AFTER_REDUCTION, EXPANSION, GAP, FLATTEN, LECTURE_COMPRESSION_EXAMPLE, LECTURE_INCEPTION_EXAMPLE, OWN_BRANCH,
    POOL_PROJECTION, REDUCTION, ConvSetup, compare_reduction, head_comparisons, network_reductions,
    reduction_archs, reduction_sweep)
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


def test_calculator_agrees_with_profiled_same_padding_convolutions():
    setup = LECTURE_INCEPTION_EXAMPLE
    result = compare_reduction(setup)
    example = torch.empty(1, setup.in_channels, setup.height, setup.width, device="meta")
    with torch.device("meta"):
        naive = nn.Conv2d(setup.in_channels, setup.out_channels, setup.kernel, padding="same")
        reduced = nn.Sequential(nn.Conv2d(setup.in_channels, setup.reduce_to, 1),
                                nn.Conv2d(setup.reduce_to, setup.out_channels, setup.kernel, padding="same"))
    naive_profile, reduced_profile = profile_model(naive, example), profile_model(reduced, example)
    assert naive_profile.output_shape == reduced_profile.output_shape == (1, 48, 14, 14)
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
    assert roles == {"conv1": REDUCTION, "conv2": AFTER_REDUCTION, "conv3": EXPANSION, "downsample.0": OWN_BRANCH}
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
    return next(m.value for m in at.markdown if "Number of operations" in m.value)


def _metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_page_calculator_starts_on_the_slide_and_follows_the_inputs():
    at = _reductions_page()
    text = _calculator_text(at)
    assert "(14x14x48) x (5x5x480) = 112.9M" in text and "1.5M + 3.8M = 5.3M" in text
    assert _metrics(at)["Naive MACs"] == "112.9M" and _metrics(at)["MACs with reduction"] == "5.3M"

    at.number_input(key="calc_in_channels_number").set_value(240).run()
    assert not at.exception
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
    assert _metrics(at)["Output"] == "64x64x20"


def test_page_real_modules_switch_network():
    at = _reductions_page()
    assert "9 modules, as built" in _metrics(at)
    at.selectbox(key="reductions_arch").set_value("resnet50").run()
    assert not at.exception
    assert f"{len(network_reductions('resnet50').modules)} modules, as built" in _metrics(at)
    at.selectbox(key="reductions_module").set_value("layer3.0").run()
    assert not at.exception
    branches = at.dataframe[-2].value
    assert list(branches["Convolution"]) == ["conv1", "conv2", "conv3", "downsample.0"]
