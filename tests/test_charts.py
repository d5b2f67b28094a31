"""The Plotly figures, built from the registry's real rows and from runs' results."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest

from cnnlab.charts import (BUBBLE_LABEL_PX, CHART_ROLE_NAMES, GRADIENT_QUANTITIES, MANY_MODULES, PHONE_PLOT_PX,
                           REDUCTION_PART_COLORS, ROLE_COLORS, VARIANT_COLORS, LabelledPoint, _label_box, _overlap,
                           accuracy_axis, accuracy_vs_cost, accuracy_vs_operations, bubble_label, bubble_radius,
                           confusion_figure, count_axis, gap_vs_flatten_bars, gradient_norms_figure,
                           layer_statistics_figure, log_axis, metric_bars, module_macs_bars, numbered_module_bars,
                           per_class_bars, place_labels, prediction_bars, probe_figure, reduction_cost_bars,
                           reduction_sweep_figure, run_curves, short_title, step_loss_figure, vector_bars, wrap_label)
from cnnlab.compare import architecture_rows
from cnnlab.reductions import (AFTER_REDUCTION, LECTURE_COMPRESSION_EXAMPLE, LECTURE_INCEPTION_EXAMPLE, REDUCTION,
                               ConvSetup, compare_reduction, head_comparisons, network_reductions)


def test_accuracy_chart_labels_cover_no_other_label_or_bubble_at_a_narrow_width():
    rows = architecture_rows()
    figure = accuracy_vs_operations(rows)
    shown = {label: position for trace in figure.data for label, position in zip(trace.text, trace.textposition)}
    assert set(shown) == {bubble_label(r["title"]) for r in rows if r["top1"] is not None}
    assert "GoogLeNet" in shown and "Inception v3" in shown  # the parenthesis is left to the hover
    assert "EffNet-Lite0" in shown and figure.data[0].textfont.size == BUBBLE_LABEL_PX
    hover = figure.data[0].hovertemplate
    assert "parameters" in hover and "accuracy from" in hover and "=" not in hover, "a hover in words, not field=value"
    titles = {row[0] for trace in figure.data for row in trace.customdata}
    assert "GoogLeNet (Inception v1)" in titles, "the hover names each network in full"
    x_low, x_high = figure.layout.xaxis.range
    y_low, y_high = figure.layout.yaxis.range
    largest = max(r["params"] for r in rows if r["top1"] is not None)
    points = [LabelledPoint((math.log10(r["gmacs"]) - x_low) / (x_high - x_low), (r["top1"] - y_low) / (y_high - y_low),
                            bubble_label(r["title"]), bubble_radius(r["params"], largest))
              for r in rows if r["top1"] is not None]
    for width in (PHONE_PLOT_PX, 520, 900):  # a phone's plot, a laptop's column with the sidebar open, a wide screen's
        boxes = {p.label: _label_box(p, shown[p.label], width, 420, BUBBLE_LABEL_PX) for p in points}
        clashes = [(a, b) for a in boxes for b in boxes if a < b and _overlap(boxes[a], boxes[b]) > 0]
        assert clashes == [], width
        bubbles = {p.label: (p.x * width - p.radius, p.y * 420 - p.radius, p.x * width + p.radius,
                             p.y * 420 + p.radius) for p in points}
        covered = [(a, b) for a in boxes for b in bubbles if a != b and _overlap(boxes[a], bubbles[b]) > 30]
        assert covered == [], width
        outside = [a for a, box in boxes.items() if _overlap(box, (0, 0, width, 420)) < _overlap(box, box) - 1]
        assert outside == [], width


def test_labels_move_aside_only_when_crowded():
    alone = place_labels([LabelledPoint(0.2, 0.5, "a"), LabelledPoint(0.8, 0.5, "b")])
    assert alone == {"a": "top center", "b": "top center"}
    crowded = place_labels([LabelledPoint(0.5, 0.5, "first label"), LabelledPoint(0.52, 0.52, "second label")])
    boxes = [_label_box(p, crowded[p.label], 520, 420) for p in
             (LabelledPoint(0.5, 0.5, "first label"), LabelledPoint(0.52, 0.52, "second label"))]
    assert _overlap(*boxes) == 0
    edge = place_labels([LabelledPoint(0.5, 0.99, "at the top")])
    assert edge == {"at the top": "bottom center"}  # not outside the plot


def test_accuracy_vs_cost_leaves_room_for_the_rightmost_label():
    rows = [{"label": "r1 extract", "run": "r1", "strategy": "extract", "arch": "lite0", "val_acc": 0.97,
             "train_time_s": 52.0, "params_trainable": 12810, "dataset": "digits"},
            {"label": "r2 scratch", "run": "r2", "strategy": "scratch", "arch": "lenet5", "val_acc": 0.98,
             "train_time_s": 9.0, "params_trainable": 61706, "dataset": "digits"}]
    figure = accuracy_vs_cost(rows, "train_time_s", "Training time (s)")
    low, high = figure.layout.xaxis.range
    assert low == 0 and high > 52.0 * 1.2


def test_accuracy_vs_cost_draws_each_run_in_its_colour_with_its_strategys_marker():
    def row(run, strategy, arch, accuracy):
        return {"label": run, "run": run, "strategy": strategy, "arch": arch, "val_acc": accuracy, "train_time_s": 10.0,
                "params_trainable": 1, "dataset": "digits"}

    colors = {"a": "#111111", "b": "#222222", "c": "#333333"}
    runs = [row("b", "extract", "EfficientNet-Lite0", 0.978), row("a", "scratch", "LeNet-5", 0.942),
            row("c", "scratch", "LeNet-5", 0.95)]
    figure = accuracy_vs_cost(runs, "train_time_s", "Training time (s)", colors=colors)
    style = {t.name: (t.marker.color, t.marker.symbol, t.legendgroup) for t in figure.data}
    assert style == {"a": ("#111111", "circle", "scratch"), "c": ("#333333", "circle", "scratch"),
                     "b": ("#222222", "square", "extract")}
    assert [t.legendgrouptitle.text for t in figure.data] == ["I: scratch", None, "III: extract"]
    low, high = figure.layout.yaxis.range
    assert 0.8 < low < 0.942 and high > 0.978  # 94.2% and 97.8% are told apart, not both at the top edge


def test_accuracy_vs_cost_marks_a_run_stopped_early_as_partial():
    rows = [{"label": "r1", "run": "r1", "strategy": "finetune", "arch": "lite0", "val_acc": 0.9, "train_time_s": 50.0,
             "dataset": "digits", "status": "cancelled"},
            {"label": "r2", "run": "r2", "strategy": "finetune", "arch": "lite0", "val_acc": 0.95,
             "train_time_s": 90.0, "dataset": "digits", "status": "succeeded"}]
    figure = accuracy_vs_cost(rows, "train_time_s", "Training time (s)")
    drawn = {t.text[0]: t.marker.symbol for t in figure.data}
    assert drawn == {"r1 (cancelled)": "diamond-open", "r2": "diamond"}


def test_accuracy_vs_cost_says_when_strategy_iii_read_its_features_from_the_cache():
    rows = [{"label": f"{run} · III: extract + logistic regression", "run": run, "strategy": "extract",
             "arch": "lite0", "val_acc": 0.958, "train_time_s": seconds, "dataset": "digits", "feature_cache": cache}
            for run, seconds, cache in (("a1", 95.0, "miss"), ("b2", 0.7, "hit"))]
    traces = accuracy_vs_cost(rows, "train_time_s", "Training time (s)").data
    assert [t.text[0] for t in traces] == ["a1", "b2 (features cached)"], "0.7 s is the cache, not Strategy III"
    assert "features cached" in traces[1].name


def test_accuracy_vs_cost_labels_runs_by_id_and_keeps_twins_apart():
    twins = [{"label": f"{run} · I: scratch · LeNet-5", "run": run, "strategy": "scratch", "arch": "LeNet-5",
              "val_acc": 0.9777, "train_time_s": seconds, "params_trainable": 61706, "dataset": "digits"}
             for run, seconds in (("440933d903a4", 16.6), ("fc765bbfbf5c", 16.9))]
    traces = accuracy_vs_cost(twins, "train_time_s", "Training time (s)").data
    assert [t.text[0] for t in traces] == ["440933d903a4", "fc765bbfbf5c"]
    assert sorted(t.textposition for t in traces) == ["bottom center", "top center"]


def test_run_curves_take_each_runs_own_colour():
    history = [{"epoch": e, "loss": 1.0 / e, "val_loss": 1.0 / e} for e in range(1, 16)]
    colors = {"r1": "#111111", "r2": "#222222"}
    figure = run_curves({"r1": history, "r2": history}, ("loss", "val_loss"), colors)
    assert [trace.line.color for trace in figure.data] == ["#111111", "#111111", "#222222", "#222222"]
    assert list(figure.layout.xaxis.tickvals) == [1, 2, 4, 6, 8, 10, 12, 14], "15 epochs: not fifteen crammed ticks"
    forty = [{"epoch": e, "loss": 1.0 / e} for e in range(1, 41)]
    assert list(run_curves({"r1": forty}, ("loss",)).layout.xaxis.tickvals) == [1, *range(5, 41, 5)], \
        "round steps, ending at the last epoch, none past it"
    assert [t.showlegend for t in figure.data] == [False, True, False, True], "each run named once, on its solid line"
    assert figure.layout.xaxis.title.text == "Epoch (validation solid, training dotted)"
    training = run_curves({"r1": history, "r2": history}, ("loss",), colors)
    assert [t.showlegend for t in training.data] == [True, True], "training curves alone still name their runs"
    assert training.layout.yaxis.title.text == "Training loss" and training.layout.xaxis.title.text == "Epoch"
    single = run_curves({"r1": history[:1]}, ("loss",), colors)
    low, high = single.layout.xaxis.range
    assert 0 < low < 1 < high < 2, "one epoch: no empty epoch 0 or 2 on the axis"


def test_run_curves_dot_training_and_draw_validation_solid():
    history = {"run": [{"epoch": 1, "loss": 2.0, "val_loss": 1.5, "acc": 0.3, "val_acc": 0.5},
                       {"epoch": 2, "loss": 1.0, "val_loss": 0.9, "acc": 0.7, "val_acc": 0.8}]}
    figure = run_curves(history, ("acc", "val_acc"))
    styles = {trace.name: (trace.line.dash, trace.marker.symbol) for trace in figure.data}
    assert styles == {"training accuracy": ("dot", "circle-open"), "validation accuracy": ("solid", "circle")}
    training, validation = figure.data
    assert training.line.color != validation.line.color, "one run: its two curves told apart by colour too"
    assert list(figure.layout.yaxis.range) == [0, 1.02]


def test_step_loss_follows_the_training_steps_in_epochs_done():
    steps = [{"phase": "train", "epoch": 1, "epochs": 2, "step": 5, "steps": 10, "loss": 2.0},
             {"phase": "eval", "epoch": 1, "epochs": 2, "step": 3, "steps": 3, "loss": None},
             {"phase": "train", "epoch": 2, "epochs": 2, "step": 10, "steps": 10, "loss": 1.0}]
    trace = step_loss_figure(steps).data[0]
    assert list(trace.x) == [0.5, 2.0] and list(trace.y) == [2.0, 1.0]
    repeated = [{"phase": "train", "epoch": 1, "epochs": 1, "step": step, "steps": 8, "loss": loss, "loss_at": at}
                for step, loss, at in ((2, 2.0, 0.125), (4, 2.0, 0.125), (6, 1.5, 0.625), (8, 1.2, 1.0))]
    trace = step_loss_figure(repeated).data[0]  # measured every 4 steps, reported every 2: each loss drawn once
    assert list(trace.x) == [0.125, 0.625, 1.0] and list(trace.y) == [2.0, 1.5, 1.2]
    between = [{"phase": "train", "epoch": 1, "epochs": 1, "step": 8, "steps": 8, "loss": 1.2, "loss_at": 1.0,
                "losses": [[0.25, 1.9], [0.5, 1.6], [1.0, 1.2]]}]
    trace = step_loss_figure(between).data[0]  # every reading between two reports, not the last alone
    assert list(trace.x) == [0.25, 0.5, 1.0] and list(trace.y) == [1.9, 1.6, 1.2]
    cancelled = [{"phase": "train", "epoch": 2, "epochs": 5, "step": 8, "steps": 16, "loss": 0.8, "loss_at": 1.5,
                  "losses": [[0.5, 1.9], [1.0, 1.2], [1.25, 1.0], [1.5, 0.8]]}]
    kept, lost = step_loss_figure(cancelled, kept_epochs=1).data  # stopped half-way through epoch 2
    assert list(kept.x) == [0.5, 1.0] and list(lost.x) == [1.0, 1.25, 1.5], "joined at the checkpoint"
    assert lost.name == "after its last checkpoint, not kept" and lost.line.dash == "dot"
    assert len(step_loss_figure(cancelled).data) == 1 and not step_loss_figure(cancelled).layout.showlegend


def test_confusion_matrix_rows_are_true_classes():
    figure = confusion_figure(["0", "1"], [[5, 1], [0, 4]])
    heatmap = figure.data[0]
    assert heatmap.z[0][1] == 1 and list(heatmap.y) == ["0", "1"]
    assert figure.layout.yaxis.title.text == "True" and figure.layout.xaxis.title.text == "Predicted"


def test_per_class_bars_write_every_class_accuracy_a_class_at_zero_too():
    figure = per_class_bars({"cat": 1.0, "dog": 0.83, "fox": 0.0})
    bars = figure.data[0]
    assert list(bars.text) == ["100", "83", "0"] and bars.textposition != "inside"  # a short bar's goes above it
    written_at_zero = [t for t in figure.data[1:] if t.mode == "text"]  # Plotly writes nothing on an empty bar
    assert [(list(t.x), list(t.text)) for t in written_at_zero] == [(["fox"], ["0"])]
    assert per_class_bars({"cat": 1.0, "dog": 0.5}).data[1:] == ()


def test_log_axes_label_every_tick_in_full():
    rows = architecture_rows()
    figure = accuracy_vs_operations(rows)
    assert figure.layout.xaxis.type == "log"
    assert list(figure.layout.xaxis.ticktext) == ["0.3", "1", "3", "10"]  # published accuracies: 0.3 to 15.5 GMACs
    params = metric_bars(rows, "params", "Parameters", log=True)
    assert list(params.layout.xaxis.ticktext) == ["100K", "1M", "10M", "100M"]
    assert {trace.type for trace in params.data} == {"scatter"}, "dots: a bar from a log axis' floor shows no ratio"
    assert params.layout.xaxis.title.text == "Parameters (log scale)"
    assert {trace.type for trace in metric_bars(rows, "depth", "Depth").data} == {"bar"}
    assert list(params.layout.yaxis.categoryarray)[:2] == ["LeNet-5", "Lecture CNN"], "the registry's order, top down"
    assert list(log_axis([0.69, 1.5])["ticktext"]) == ["0.5", "1", "2"]
    vanishing = log_axis([3e-17, 0.05])  # a plain net's gradients against a residual one's: a tick every 2 decades
    assert vanishing["tickvals"][0] <= 3e-17 and vanishing["tickvals"][-1] >= 0.05, "ticks bracket every point"
    assert vanishing["range"] == [math.log10(vanishing["tickvals"][0]), math.log10(vanishing["tickvals"][-1])]


def test_count_axes_step_roundly_from_zero_past_the_top_in_cnnlab_units():
    naive = compare_reduction(ConvSetup(14, 14, 480, 48, 5, reduce_to=16)).naive
    axis = count_axis([naive.params, 26_944])  # the lecture's 5x5 branch: 576K parameters against 26.9K
    assert axis["ticktext"] == ["0", "100K", "200K", "300K", "400K", "500K", "600K"]
    axis = count_axis([naive.macs])  # 112.9M MACs
    assert axis["ticktext"] == ["0", "20M", "40M", "60M", "80M", "100M", "120M"]
    assert count_axis([1_500_000])["ticktext"] == ["0", "500K", "1M", "1.5M"]
    assert count_axis([0]) == {}


def test_probe_figure_reads_stage_by_stage_from_stem_to_top():
    stages = [{"stage": 1, "layer": "blocks.0", "dim": 16, "train_acc": 0.66, "val_acc": 0.68},
              {"stage": 5, "layer": "bn2", "dim": 1280, "train_acc": 1.0, "val_acc": 0.97}]
    figure = probe_figure(stages, "tf_efficientnet_lite0")
    validation = next(t for t in figure.data if t.name == "validation accuracy")
    assert list(validation.x) == ["stage 1 (conv_stem … blocks.0)", "stage 5 (blocks.5 … bn2)"]
    assert list(validation.text) == ["68.0%", "97.0%"]
    assert list(figure.layout.xaxis.ticktext) == ["stage 1", "stage 5"], "short ticks: the hover names the modules"
    assert list(validation.textposition) == ["top center", "bottom center"], "away from the training line"
    low, high = figure.layout.yaxis.range
    assert 0.5 < low < 0.66 and high > 1.0


@pytest.mark.parametrize("low", [0.0, 0.3, 0.55, 0.8, 0.93])
def test_accuracy_axes_leave_room_above_100_percent_but_never_tick_there(low):
    axis = accuracy_axis(low)
    assert axis["range"] == [low, 1.02] and max(axis["tickvals"]) == 1.0 and min(axis["tickvals"]) >= low
    assert len(axis["tickvals"]) >= 3


def test_long_run_labels_wrap_in_the_legend_instead_of_being_cut():
    label = "29e5f3516a3c · III: extract + logistic regression, 128 px · EfficientNet-Lite0 · mypets.zip"
    assert wrap_label(label) == ("29e5f3516a3c<br>III: extract + logistic regression, 128 px<br>"
                                 "EfficientNet-Lite0 · mypets.zip")
    assert wrap_label("a · b") == "a · b"
    history = [{"epoch": 1, "acc": 0.5, "val_acc": 0.6}]
    figure = run_curves({label: history, "short": history}, ("acc", "val_acc"))
    legend = [t.name for t in figure.data if t.showlegend]
    assert legend == [wrap_label(label), "short"], "each run once; dotted and solid are told in the caption"
    assert [t.legendgroup for t in figure.data] == [label, label, "short", "short"]  # a click hides both lines
    def plot_px(figure):
        return figure.layout.height - figure.layout.margin.t - figure.layout.margin.b

    alone = run_curves({"short": history}, ("acc", "val_acc"))
    assert plot_px(figure) == plot_px(alone) and figure.layout.margin.b > alone.layout.margin.b, \
        "the plot keeps its height; the legend gets room of its own below the axis title"


def test_axes_leave_room_above_the_highest_point():
    low, high = log_axis([1e-17, 0.07])["range"]
    assert low < -17 and high > math.log10(0.07) + 0.1  # a marker at either end is whole, not cut by the frame
    figure = run_curves({"plain": [{"epoch": 1, "loss": 2.30}, {"epoch": 2, "loss": 2.31}]}, ("loss",))
    assert figure.layout.yaxis.range == (0, pytest.approx(1.08 * 2.31))


def test_reduction_cost_bars_stack_the_reduced_path_from_its_1x1_and_kxk_parts():
    result = compare_reduction(LECTURE_INCEPTION_EXAMPLE)  # the lecture's 5x5 branch: 112.9M MACs, reduced to 5.3M
    figure = reduction_cost_bars(result, "macs", "Multiply-accumulates")
    bars = {trace.name: (trace.x[0], trace.y[0]) for trace in figure.data}
    assert bars == {"naive": ("naive", result.naive.macs), "1x1 reduction": ("with 1x1 reduction", result.reduce.macs),
                    "k x k convolution": ("with 1x1 reduction", result.conv.macs)}
    assert [t.marker.color for t in figure.data] == [REDUCTION_PART_COLORS[t.name] for t in figure.data]
    assert [t.hovertext[0] for t in figure.data] == [result.naive.formula, result.reduce.formula, result.conv.formula]
    assert [a.text for a in figure.layout.annotations] == ["<b>= 5.3M</b>"], "the stacked bar's total, once"
    assert figure.layout.barmode == "stack" and figure.layout.yaxis.title.text == "Multiply-accumulates"
    assert figure.layout.yaxis.ticktext[-1] == "120M", "the count axis reaches past the naive 112.9M"
    params = reduction_cost_bars(result, "params", "Parameters")
    assert [t.hovertext[0] for t in params.data] == [c.params_formula for c in (result.naive, result.reduce,
                                                                                   result.conv)]
    alone = reduction_cost_bars(compare_reduction(LECTURE_COMPRESSION_EXAMPLE), "macs", "Multiply-accumulates")
    assert [(t.name, t.x[0], t.y[0]) for t in alone.data] == [("naive", "1x1 convolution", 8_192_000)]
    assert not alone.layout.annotations, "one bar: its value inside, no total written over it again"


def test_reduction_sweep_crosses_the_naive_cost_where_the_reduction_stops_paying():
    figure = reduction_sweep_figure(LECTURE_INCEPTION_EXAMPLE)
    reduced, naive, current = figure.data
    assert list(reduced.x) == list(range(1, 481)), "480 input channels: every width from 1 to C_in"
    assert set(naive.y) == {compare_reduction(LECTURE_INCEPTION_EXAMPLE).naive.macs} and naive.line.dash == "dash"
    assert (current.name, list(current.x), list(current.y)) == ("C_red = 16", [16], [5_268_480])
    crossing = next(x for x, y in zip(reduced.x, reduced.y) if y > naive.y[0])
    assert 100 < crossing < 480, "a wide reduction costs more than the 5x5 alone"
    wide = reduction_sweep_figure(ConvSetup(7, 7, 2048, 64, 3, reduce_to=None))
    assert len(wide.data) == 2 and len(wide.data[0].x) == 256 and wide.data[0].x[1] == 9, "about 256 widths"
    widening = reduction_sweep_figure(replace(LECTURE_INCEPTION_EXAMPLE, reduce_to=1000))
    assert widening.data[0].x[-1] >= 990 and widening.data[2].y[0] <= max(widening.data[0].y), "the curve reaches it"


def test_module_bars_pair_each_googlenet_module_built_and_without_its_reductions():
    network = network_reductions("googlenet")
    figure = module_macs_bars(network)
    rows = list(zip(*figure.data[0].y))
    assert len(rows) == 18 and rows[:2] == [("inception3a", "built"), ("inception3a", "without")]
    assert figure.layout.yaxis.autorange == "reversed" and figure.layout.height == 150 + 24 * 18
    names = [t.name for t in figure.data]  # the roles in ROLE_DESCRIPTIONS' order, as the legend reads them
    assert names == [REDUCTION, "own branch", "pool projection", CHART_ROLE_NAMES[AFTER_REDUCTION]]
    assert [t.marker.color for t in figure.data] == [ROLE_COLORS[role] for role in
                                                     (REDUCTION, "own branch", "pool projection", AFTER_REDUCTION)]
    for i, module in enumerate(network.modules):  # the roles' bars add up to each module's totals
        assert sum(t.x[2 * i] for t in figure.data) == module.built_macs
        assert sum(t.x[2 * i + 1] for t in figure.data) == module.without_macs
    reductions = next(t for t in figure.data if t.name == REDUCTION)
    assert all(reductions.x[2 * i + 1] == 0 for i in range(9)), "'without' drops every 1x1 reduction"


def test_a_network_of_many_modules_gets_numbered_columns_named_on_hover():
    network = network_reductions("densenet121")
    assert len(network.modules) == 58 > MANY_MODULES
    figure = module_macs_bars(network)
    assert figure.to_dict() == numbered_module_bars(network).to_dict()
    built, without = figure.data
    assert list(built.x) == list(range(1, 59)) and built.customdata[0] == network.modules[0].path
    assert list(built.y) == [m.built_macs for m in network.modules]
    assert list(without.y) == [m.without_macs for m in network.modules]
    assert without.marker.color == REDUCTION_PART_COLORS["naive"] and figure.layout.barmode == "group"


def test_gap_and_flatten_bars_compare_each_networks_first_dense_layer():
    comparisons = head_comparisons()
    figure = gap_vs_flatten_bars(comparisons)
    gap, flatten = figure.data
    assert (gap.name, flatten.name) == ("global average pooling", "flatten")
    vgg = list(gap.y).index("VGG-16")
    assert flatten.x[vgg] == 7 * 7 * 512 * 4096 + 4096 and gap.x[vgg] == 512 * 4096 + 4096
    assert flatten.hovertext[vgg] == "(7x7x512) x 4096 + 4096 = 102.8M"
    assert list(gap.y) == [short_title(t) for t in gap.y], "short titles, level beside the bars"
    assert figure.layout.height == 160 + 36 * len(comparisons) and figure.layout.xaxis.type == "log"
    assert figure.layout.xaxis.side == "top" and figure.layout.yaxis.autorange == "reversed"
    low, high = figure.layout.xaxis.range
    assert 10 ** low < min(gap.x) and 10 ** high > max(flatten.x)


def test_gradient_norms_draw_plain_and_residual_per_block_from_the_input():
    from cnnlab.residual import NetConfig, gradient_profiles

    profiles = gradient_profiles(NetConfig(depth=6))
    for quantity, title in GRADIENT_QUANTITIES.items():
        figure = gradient_norms_figure(profiles, quantity)
        assert [t.name for t in figure.data] == ["plain", "residual"]
        colors = [t.line.color for t in figure.data]  # the race's curves below take the same colours
        assert colors == [VARIANT_COLORS["plain"], VARIANT_COLORS["residual"]] and colors[0] != colors[1]
        assert [list(t.y) for t in figure.data] == [list(getattr(profiles[v], quantity)) for v in ("plain", "residual")]
        assert list(figure.data[0].x) == [1, 2, 3, 4, 5, 6] and list(figure.layout.xaxis.range) == [0.5, 6.5]
        assert figure.layout.yaxis.title.text == title + " (log)" and figure.layout.yaxis.type == "log"
        low, high = figure.layout.yaxis.range
        norms = [y for t in figure.data for y in t.y]
        assert low < math.log10(min(norms)) and high > math.log10(max(norms))


@pytest.fixture(scope="module")
def lenet_on_the_digit():
    """LeNet-5 (seeded random weights) run on the shipped handwritten digit: every layer's maps."""
    import torch

    from cnnlab.activations import extract
    from cnnlab.images import image_input, sample_images
    from cnnlab.registry import build_model, get_spec

    spec = get_spec("lenet5")
    torch.manual_seed(0)
    return extract(build_model("lenet5"), image_input(sample_images()["digit"], spec).tensor, spec)


def test_layer_statistics_figure_shades_and_names_every_stage(lenet_on_the_digit):
    from cnnlab.activations import layer_statistics

    statistics = tuple(layer_statistics(lenet_on_the_digit))
    figure = layer_statistics_figure(statistics)
    mean, zeros, channels, height = figure.data
    assert list(mean.x) == list(range(len(statistics))) and list(mean.y) == [r["mean"] for r in statistics]
    assert list(channels.y)[:4] == [6, 6, 6, 6] and list(height.y)[3] == 14, "s2 pools 28x28 to 14x14"
    assert (channels.yaxis, height.yaxis) == ("y3", "y4"), "channels and height share the last row, two axes"
    assert mean.text[0] == "c1.0 (Conv2d)<br>6x28x28<br>stage 1 (c1)" and "%{text}" in zeros.hovertemplate
    assert [a.text for a in figure.layout.annotations] == ["stage 1", "stage 2", "stage 3", "stage 4", "stage 5",
                                                           "stage 6", "head"]
    assert [a.yshift for a in figure.layout.annotations][:3] == [0, 16, 0], "neighbours' names on alternate rows"
    shaded = sorted({(s.x0, s.x1) for s in figure.layout.shapes})
    assert shaded == [(-0.5, 2.5), (3.5, 6.5), (7.5, 10.5), (14.5, 15.5)], "stages 1, 3, 5 and the head"
    assert list(figure.layout.yaxis4.tickvals) == [1, 5, 10, 14, 28] and figure.layout.height == 680


def test_vector_bars_put_the_largest_output_on_top(lenet_on_the_digit):
    import numpy as np

    logits = np.ravel(lenet_on_the_digit.maps["output"])
    order = np.argsort(-logits, kind="stable")
    figure = vector_bars(logits[order], [f"{i}" for i in order], "Logit (before softmax)")
    bars = figure.data[0]
    assert bars.y[-1] == str(int(np.argmax(logits))), "Plotly draws the last category on top"
    assert list(bars.x) == sorted(logits.tolist()) and figure.layout.yaxis.type == "category"
    assert figure.layout.height == 84 + 30 * 10 and figure.layout.xaxis.title.text == "Logit (before softmax)"
    assert vector_bars([2.0, 1.0], ["unit 3", "unit 0"]).layout.xaxis.title.text == "Value"


def test_prediction_bars_label_a_thin_bar_beside_it_in_full_size_text():
    from cnnlab.predict import Prediction

    bars = prediction_bars((Prediction(2, "2", 0.496), Prediction(3, "3", 0.354), Prediction(0, "0", 0.048))).data[0]
    assert list(bars.y) == ["0", "3", "2"]  # the most probable on top
    assert list(bars.textposition) == ["outside", "inside", "inside"] and list(bars.text)[0] == "4.8%"
    tiger = prediction_bars((Prediction(282, "tiger cat", 0.39), Prediction(285, "Egyptian cat", 0.17))).data[0]
    assert list(tiger.textposition) == ["outside", "inside"], "17% of a phone's plot is too short for '17.0%'"


def test_prediction_bars_draw_the_shipped_models_guesses_for_the_cat():
    from cnnlab.images import sample_images
    from cnnlab.predict import predict_image

    predictions = predict_image(sample_images()["chelsea"], "tf_efficientnet_lite0", "shipped").predictions
    figure = prediction_bars(predictions)
    bars = figure.data[0]
    assert bars.y[-1] == "tiger cat (282)" and "Egyptian cat (285)" in bars.y, "names with their ImageNet index"
    assert list(bars.x) == [100 * p.probability for p in reversed(predictions)]
    assert [t == "inside" for t in bars.textposition] == [p.probability >= 0.25 for p in reversed(predictions)]
    assert figure.layout.height == 84 + 48 * 5 and list(figure.layout.xaxis.range) == [0, 100]


def test_no_page_builds_a_plotly_figure_itself():
    """Pages read widgets, call cnnlab and draw: their figures come from cnnlab.charts, so no page imports plotly."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    builders = {}
    for path in [root / "app.py", *sorted((root / "pages").glob("*.py"))]:
        tree = ast.parse(path.read_text())
        modules = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
        modules += [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module]
        if plotly := [m for m in modules if m.split(".")[0] == "plotly"]:
            builders[path.name] = plotly
    assert builders == {}
