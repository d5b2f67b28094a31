"""The Plotly figures, built from the registry's real rows and from runs' results."""
from __future__ import annotations

import math

from cnnlab.charts import (accuracy_vs_cost, accuracy_vs_operations, confusion_figure, label_positions, log_axis,
                           metric_bars, run_curves)
from cnnlab.compare import architecture_rows


def test_accuracy_chart_keeps_close_labels_apart():
    rows = architecture_rows()
    figure = accuracy_vs_operations(rows)
    shown = {title: (x, y, position) for trace in figure.data
             for title, x, y, position in zip(trace.text, trace.x, trace.y, trace.textposition)}
    assert set(shown) == {r["title"] for r in rows if r["top1"] is not None}
    for a, (xa, ya, pa) in shown.items():
        for b, (xb, yb, pb) in shown.items():
            close = a < b and abs(math.log10(xa / xb)) < 0.1 and abs(ya - yb) < 1
            assert not close or pa != pb, f"{a} and {b} print their labels on top of each other"


def test_label_positions_alternate_only_when_crowded():
    positions = label_positions([(0.0, 70.0, "a"), (0.05, 70.5, "b"), (2.0, 70.0, "c")])
    assert positions == {"a": "bottom center", "b": "top center", "c": "top center"}  # the higher one's above


def test_accuracy_vs_cost_leaves_room_for_the_rightmost_label():
    rows = [{"label": "r1 extract", "strategy": "extract", "arch": "lite0", "val_acc": 0.97, "train_time_s": 52.0,
             "params_trainable": 12810, "dataset": "digits"},
            {"label": "r2 scratch", "strategy": "scratch", "arch": "lenet5", "val_acc": 0.98, "train_time_s": 9.0,
             "params_trainable": 61706, "dataset": "digits"}]
    figure = accuracy_vs_cost(rows, "train_time_s", "Training time (s)")
    low, high = figure.layout.xaxis.range
    assert low == 0 and high > 52.0 * 1.2


def test_run_curves_dot_training_and_draw_validation_solid():
    history = {"run": [{"epoch": 1, "loss": 2.0, "val_loss": 1.5, "acc": 0.3, "val_acc": 0.5},
                       {"epoch": 2, "loss": 1.0, "val_loss": 0.9, "acc": 0.7, "val_acc": 0.8}]}
    figure = run_curves(history, ("acc", "val_acc"))
    styles = {trace.name: trace.line.dash for trace in figure.data}
    assert styles == {"training accuracy": "dot", "validation accuracy": "solid"}
    assert list(figure.layout.yaxis.range) == [0, 1.02]


def test_confusion_matrix_rows_are_true_classes():
    figure = confusion_figure(["0", "1"], [[5, 1], [0, 4]])
    heatmap = figure.data[0]
    assert heatmap.z[0][1] == 1 and list(heatmap.y) == ["0", "1"]
    assert figure.layout.yaxis.title.text == "True" and figure.layout.xaxis.title.text == "Predicted"


def test_log_axes_label_every_tick_in_full():
    rows = architecture_rows()
    figure = accuracy_vs_operations(rows)
    assert figure.layout.xaxis.type == "log"
    assert list(figure.layout.xaxis.ticktext) == ["0.3", "1", "3", "10"]  # published accuracies: 0.3 to 15.5 GMACs
    params = metric_bars(rows, "params", "Parameters", log=True)
    assert list(params.layout.yaxis.ticktext) == ["100K", "1M", "10M", "100M"]
    assert list(log_axis([0.69, 1.5])["ticktext"]) == ["0.5", "1", "2"]
