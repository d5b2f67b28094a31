"""Plotly figures built from cnnlab's plain data (no Streamlit here: pages only display them)."""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from cnnlab.activations import HEAD
from cnnlab.profiling import human
from cnnlab.reductions import (AFTER_REDUCTION, ROLE_DESCRIPTIONS, ConvSetup, HeadComparison, NetworkReductions,
                               ReductionComparison, compare_reduction, reduction_sweep)
from cnnlab.registry import get_spec, stage_labels, stage_name

if TYPE_CHECKING:  # cnnlab.residual brings the training loop; cnnlab.predict the weights: neither is needed to draw
    from cnnlab.predict import Prediction
    from cnnlab.residual import GradientProfile


PALETTE = px.colors.qualitative.Safe + px.colors.qualitative.Bold  # Safe: 11 hues told apart with colour blindness
STRATEGY_COLORS = {"scratch": "#CC6677", "finetune": "#3366CC", "extract": "#117733", "probe": "#888888"}
MODEBAR_PX = 50
"""Top margin of a chart with labels above its highest points: the toolbar a touch screen always shows (the one
that appears on hover with a mouse) sits above them, not over them."""
TRAINING_COLOR = "#666666"  # one run's training curves, beside its validation curves in the run's colour
STRATEGY_SYMBOLS = {"scratch": "circle", "finetune": "diamond", "extract": "square", "probe": "triangle-up"}


def family_colors(rows: list[dict]) -> dict[str, str]:
    """One fixed colour per family, so every chart colours a family the same way."""
    families = list(dict.fromkeys(r["family"] for r in rows))
    return {family: PALETTE[i % len(PALETTE)] for i, family in enumerate(families)}


def stable_colors(keys: list[str]) -> dict[str, str]:
    """One colour per key by its place in `keys` (all runs, oldest first): a run keeps its colour whichever runs
    are shown beside it."""
    return {key: PALETTE[i % len(PALETTE)] for i, key in enumerate(keys)}


def short_title(title: str) -> str:
    """An architecture's title without its parenthesis ('GoogLeNet (Inception v1)' -> 'GoogLeNet'), for labels."""
    return re.sub(r"\s*\(.*\)$", "", title)


def bubble_label(title: str) -> str:
    """A bubble's label: the short title, EfficientNet written 'EffNet' ('EffNet-Lite0')."""
    return short_title(title).replace("EfficientNet", "EffNet")


def wrap_label(text: str, width: int = 44, separator: str = " · ") -> str:
    """`text` broken at its separators into lines of about `width` characters at most, joined with Plotly's <br>:
    a long run label in a legend stays whole in a narrow chart instead of being cut off."""
    lines, line = [], ""
    for part in text.split(separator):
        longer = f"{line}{separator}{part}" if line else part
        if line and len(longer) > width:
            lines.append(line)
            line = part
        else:
            line = longer
    return "<br>".join([*lines, line])


LEGEND_BELOW = {"orientation": "h", "yref": "container", "y": 0, "yanchor": "bottom", "x": 0}
"""A legend under the whole chart, in rows, so that a narrow screen keeps the full width for the plot."""
PHONE_PLOT_PX = 310  # the bubble chart's plot width on a 390 px phone (its margins take 48 px): labels placed for it
# stay apart on wider screens too
BUBBLE_LABEL_PX = 11
BUBBLE_PX = 40  # px.scatter's size_max: Plotly draws the largest bubble about BUBBLE_PX x sqrt(2) across


def bubble_radius(params: int, largest: int) -> float:
    """The pixel radius Plotly gives a bubble of `params` when the largest has `largest` (area proportional to
    parameters; measured in Chromium: 87 px across for a size_max of 60), its white outline included."""
    return max(3.0, BUBBLE_PX / math.sqrt(2) * math.sqrt(params / largest) + 1)


def accuracy_vs_operations(rows: list[dict]) -> go.Figure:
    """The lecture's 'Comparison' slide: ImageNet top-1 against GMACs, bubble area proportional to parameters.
    Each bubble is labelled with its architecture's short title ('EffNet' for EfficientNet, to fit a phone) on the
    side where the label covers least; the hover names it in full."""
    points = [dict(r, label=bubble_label(r["title"])) for r in rows if r.get("top1") is not None]
    figure = px.scatter(
        points, x="gmacs", y="top1", size="params", color="family", text="label", log_x=True, size_max=BUBBLE_PX,
        color_discrete_map=family_colors(rows),
        custom_data=["title", "family", "params", "accuracy_source"],
        labels={"gmacs": "Operations per image (GMACs, log scale)", "top1": "ImageNet top-1 accuracy (%)",
                "params": "Parameters", "title": "Architecture"},
    )
    figure.update_traces(marker={"sizemin": 6, "line": {"width": 1, "color": "white"}}, cliponaxis=False,
                         textfont_size=BUBBLE_LABEL_PX,
                         hovertemplate="<b>%{customdata[0]}</b> (%{customdata[1]})<br>top-1 %{y:.2f}%, "
                                       "%{x:.2f} GMACs per image, %{customdata[2]:,} parameters<br>"
                                       "accuracy from %{customdata[3]}<extra></extra>")
    x_range = [math.log10(min(r["gmacs"] for r in points) / 2.2), math.log10(max(r["gmacs"] for r in points) * 1.6)]
    y_range = [min(r["top1"] for r in points) - 4, max(r["top1"] for r in points) + 4]
    largest = max(r["params"] for r in points)
    positions = place_labels([LabelledPoint(
        (math.log10(r["gmacs"]) - x_range[0]) / (x_range[1] - x_range[0]),
        (r["top1"] - y_range[0]) / (y_range[1] - y_range[0]), r["label"],
        bubble_radius(r["params"], largest)) for r in points], width=PHONE_PLOT_PX, font_px=BUBBLE_LABEL_PX)
    for trace in figure.data:
        trace.textposition = [positions[label] for label in trace.text]
    figure.update_layout(height=600, legend_title_text="Family", margin={"t": 30, "l": 42, "r": 6},
                         legend={"orientation": "h", "y": -0.15, "yanchor": "top", "x": 0})
    figure.update_xaxes(**{**log_axis([r["gmacs"] for r in points]), "range": x_range})
    figure.update_yaxes(range=y_range)
    return figure


LABEL_POSITIONS = ("top center", "bottom center", "middle right", "middle left",
                   "top right", "top left", "bottom right", "bottom left")
LABEL_FONT_PX = 12  # Plotly's default text size
GAP_PX = 3.0


@dataclass(frozen=True)
class LabelledPoint:
    """A marker to label, placed in a nominal plot area: x and y from 0 to 1 along the axes, radius in pixels."""
    x: float
    y: float
    label: str
    radius: float = 6.0


def _label_box(point: LabelledPoint, position: str, width: float, height: float,
               font_px: float = LABEL_FONT_PX) -> tuple[float, ...]:
    """The pixel box (left, bottom, right, top) a label at `position` takes, y upwards, the way Plotly sets text
    of `font_px` beside a marker (sans-serif: characters average 0.55 of the size across, lines 1.25 of it)."""
    x, y, r = point.x * width, point.y * height, point.radius
    w, line = len(point.label) * 0.55 * font_px, 1.25 * font_px
    vertical, horizontal = position.split()
    bottom = {"top": y + r + GAP_PX, "bottom": y - r - GAP_PX - line, "middle": y - line / 2}[vertical]
    side = r + GAP_PX if vertical == "middle" else r * 0.7
    left = {"center": x - w / 2, "right": x + side, "left": x - side - w}[horizontal]
    return left, bottom, left + w, bottom + line


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def place_labels(points: list[LabelledPoint], width: float = 520, height: float = 420,
                 font_px: float = LABEL_FONT_PX) -> dict[str, str]:
    """A Plotly text position for each point's label, so that labels print neither over each other nor over other
    markers nor outside the plot, as far as they can in a `width` x `height` pixel plot (a narrow one: wider plots
    only spread the points further). Crowded points choose first, each the position that covers least; ties go
    to the first of LABEL_POSITIONS (above the marker)."""
    markers = [(p.x * width - p.radius, p.y * height - p.radius, p.x * width + p.radius, p.y * height + p.radius)
               for p in points]
    frame = (0.0, 0.0, width, height)

    def crowding(point: LabelledPoint) -> int:
        return sum(abs(point.x - o.x) * width < 120 and abs(point.y - o.y) * height < 40 for o in points)

    order = sorted(points, key=lambda p: (-crowding(p), p.label))
    boxes: dict[str, tuple[float, ...]] = {}
    positions: dict[str, str] = {}

    def cost(point: LabelledPoint, position: str) -> float:
        box = _label_box(point, position, width, height, font_px)
        area = (box[2] - box[0]) * (box[3] - box[1])
        return (sum(_overlap(box, other) for label, other in boxes.items() if label != point.label) * 2
                + sum(_overlap(box, m) for m, p in zip(markers, points) if p is not point)
                + area - _overlap(box, frame))

    for _ in range(3):  # the first sweep places labels greedily, the next ones move those still in the way
        for point in order:
            current = positions.get(point.label)
            best = min(LABEL_POSITIONS, key=lambda position: cost(point, position))
            if current is None or cost(point, best) < cost(point, current):
                positions[point.label] = best
                boxes[point.label] = _label_box(point, best, width, height, font_px)
    return positions


def count_axis(values: list[float], ticks: int = 5) -> dict:
    """Settings for a linear axis from 0 over counts such as MACs or parameters: more than `ticks` ticks at a
    round step (1, 2 or 5 times a power of ten), up to the first at or above the largest value, labelled the way
    cnnlab writes counts ('600K', '1.5M'), not Plotly's '600k'."""
    top = max((v for v in values if v), default=0)
    if top <= 0:
        return {}
    rough = top / (ticks + 1)
    power = 10 ** math.floor(math.log10(rough))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= rough)
    tickvals = [i * step for i in range(math.ceil(top / step) + 1)]
    return {"tickvals": tickvals, "ticktext": [_count_label(t) for t in tickvals]}


def accuracy_axis(low: float = 0.0, headroom: float = 0.02) -> dict:
    """Settings for an accuracy axis from `low` with `headroom` above 100% (so that points and labels at 100% are
    not cut), ticked at round percentages up to 100% and never beyond it."""
    span = 1.0 - low
    step = 0.2 if span > 0.6 else 0.1 if span > 0.3 else 0.05 if span > 0.15 else 0.02
    first = math.ceil(low / step - 1e-9)
    last = round(1.0 / step)
    return {"range": [low, 1.0 + headroom], "tickformat": ".0%", "tickmode": "array",
            "tickvals": [round(i * step, 4) for i in range(first, last + 1)]}


def _count_label(value: float) -> str:
    return re.sub(r"\.0(?=[KMG]$)", "", human(value)) if value >= 1000 else f"{value:.3g}"


def log_axis(values: list[float]) -> dict:
    """Settings for a log axis over `values`, with room for a marker at either end, and every tick labelled in full
    (1, 2, 5 per decade over a short range; 1, 3 or 1 per decade over longer ones; every few decades over very long
    ones), instead of Plotly's bare digits between the decades."""
    positive = [v for v in values if v and v > 0]
    if not positive:
        return {"type": "log"}
    low, high = min(positive) / 1.5, max(positive) * 1.5
    decades = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
    mantissas = (1, 2, 5) if len(decades) <= 3 else (1, 3) if len(decades) <= 5 else (1,)
    stride = math.ceil(len(decades) / 10)
    candidates = [m * 10.0 ** e for e in range(decades.start - stride, decades.stop + stride, stride)
                  for m in mantissas]
    ticks = [t for t in candidates if low <= t <= high]
    if ticks and max(positive) > 2 * ticks[-1]:  # far above the top tick: one more tick above it to read it against
        ticks.append(min(t for t in candidates if t > max(positive)))
    if ticks and min(positive) < ticks[0] / 2:
        ticks.insert(0, max(t for t in candidates if t < min(positive)))
    low, high = min([low] + ticks), max([high] + ticks)
    return {"type": "log", "tickvals": ticks, "ticktext": [_count_label(t) for t in ticks],
            "range": [math.log10(low), math.log10(high)]}


BAR_ROW_PX = 24


def metric_bars(rows: list[dict], metric: str, label: str, log: bool = False) -> go.Figure:
    """One horizontal bar per architecture for `metric` (a key of the rows), coloured by family, in the rows'
    order from the top: the names read level on any screen, where a column chart's slanted names collide on a
    phone. On a `log` axis a dot instead: a bar's length from an arbitrary floor would not show the ratios."""
    points = [dict(r, name=short_title(r["title"])) for r in rows]
    common = dict(y="name", x=metric, color="family", color_discrete_map=family_colors(rows),
                  labels={metric: f"{label} (log scale)" if log else label, "name": ""},
                  hover_data={metric: ":,", "title": True, "name": False})
    if log:
        figure = px.scatter(points, log_x=True, **common)
        figure.update_traces(marker={"size": 12})
    else:
        figure = px.bar(points, orientation="h", **common)
    figure.update_layout(height=200 + BAR_ROW_PX * len(rows), margin={"t": 30, "l": 10, "b": 150},
                         legend_title_text="Family", legend=LEGEND_BELOW)  # below: Plotly's toolbar covers the top
    figure.update_yaxes(categoryorder="array", categoryarray=[p["name"] for p in points], autorange="reversed")
    if log:
        figure.update_xaxes(**log_axis([r[metric] for r in rows]))
    return figure


CURVE_NAMES = {"loss": "training loss", "val_loss": "validation loss", "acc": "training accuracy",
               "val_acc": "validation accuracy"}


def run_curves(histories: dict[str, list[dict]], metrics: tuple[str, ...] = ("loss", "val_loss"),
               colors: dict[str, str] | None = None) -> go.Figure:
    """Per-epoch curves of several runs overlaid: one line per (run, metric), in `colors` (by run label) where
    given; training metrics dotted with open markers (and in grey when there is one run), validation solid. With
    several runs the legend names each run once (its lines toggle together), below a plot of fixed height, and the
    axis title says which line style is which data."""
    figure = go.Figure()
    colors = colors or stable_colors(list(histories))
    several = len(histories) > 1
    named = next((m for m in metrics if m.startswith("val")), metrics[0])  # the run's line that carries its name
    for label, epochs in histories.items():
        for metric in metrics:
            points = [(e["epoch"], e[metric]) for e in epochs if e.get(metric) is not None]
            if not points:
                continue
            x, y = zip(*points)
            validation = metric.startswith("val")
            color = colors[label] if validation or several else TRAINING_COLOR
            name = CURVE_NAMES.get(metric, metric)
            figure.add_trace(go.Scatter(
                x=x, y=y, mode="lines+markers", name=wrap_label(label) if several else name,
                legendgroup=label, showlegend=metric == named or not several,
                hovertemplate=f"{label}<br>{name}, epoch %{{x}}: %{{y:.4g}}<extra></extra>" if several else None,
                line={"color": color, "dash": "solid" if validation else "dot"},
                marker={"symbol": "circle" if validation else "circle-open", "size": 8 if validation else 9}))
    title = "Accuracy" if any("acc" in m for m in metrics) else "Loss"
    kinds = {m.startswith("val") for m in metrics}
    axis_title = f"{'Validation' if True in kinds else 'Training'} {title.lower()}" if len(kinds) == 1 else title
    epoch_title = "Epoch (validation solid, training dotted)" if several and len(kinds) > 1 else "Epoch"
    plot_px, legend_lines = 260, (sum(wrap_label(label).count("<br>") + 1 for label in histories) if several else 1)
    bottom = 70 + 16 * legend_lines  # room for the axis title, then the legend's lines stacked at worst
    figure.update_layout(height=30 + plot_px + bottom, margin={"t": 30, "b": bottom}, xaxis_title=epoch_title,
                         yaxis_title=axis_title, legend={"orientation": "h", "y": -62 / plot_px, "yanchor": "top",
                                                         "x": 0})
    if title == "Accuracy":
        figure.update_yaxes(**accuracy_axis())
    elif values := [y for trace in figure.data for y in trace.y]:
        figure.update_yaxes(range=[0, 1.08 * max(values)])  # from zero, with room above the highest marker
    epochs = len(max(histories.values(), key=len, default=[]))
    figure.update_xaxes(tickvals=epoch_ticks(epochs), range=[1 - 0.05 * max(epochs, 4), epochs + 0.05 * max(epochs, 4)])
    return figure


def epoch_ticks(epochs: int, most: int = 9) -> list[int]:
    """Epoch numbers to mark on an axis of `epochs` epochs: the first, then multiples of a round step (1, 2, 5,
    10, 20, 50...) giving at most about `most` marks, none past the last epoch."""
    step = next(s for s in (m * 10 ** e for e in range(6) for m in (1, 2, 5)) if s * (most - 1) >= epochs)
    return [1] + [k for k in range(step, epochs + 1, step) if k - 1 >= step / 2]


def step_loss_figure(steps: list[dict], kept_epochs: int | None = None) -> go.Figure:
    """A running run's training loss as its steps report it, against epochs done (fractional): the curve to watch
    before the first epoch ends. Each loss is drawn once, where it was measured (`loss_at`), not again at every
    later report that repeats it; every loss read between two reports (`losses`, [where, loss] pairs) is drawn, so
    a fast run's curve is as fine as its loss readings, not as its reports. For a run stopped after its checkpoint
    of epoch `kept_epochs`, the steps after it are drawn apart: the model they trained was not kept."""
    measured = {}
    for row in steps:
        for at, loss in row.get("losses", ()):
            measured[at] = loss
        if row.get("phase") == "train" and row.get("loss") is not None:
            at = row.get("loss_at", (row["epoch"] - 1) + row["step"] / row["steps"])
            measured[at] = row["loss"]
    points = sorted(measured.items())
    kept = [p for p in points if kept_epochs is None or p[0] <= kept_epochs + 1e-9]
    figure = go.Figure(go.Scatter(x=[x for x, _ in kept], y=[y for _, y in kept], mode="lines+markers",
                                  marker={"size": 5}, line={"color": TRAINING_COLOR}, name="in the model it kept",
                                  hovertemplate="epoch %{x:.2f}: loss %{y:.4f}<extra></extra>"))
    if lost := points[len(kept):]:
        figure.add_scatter(x=[x for x, _ in kept[-1:] + lost], y=[y for _, y in kept[-1:] + lost],
                           mode="lines+markers", marker={"size": 5}, line={"color": "#bbbbbb", "dash": "dot"},
                           name="after its last checkpoint, not kept",
                           hovertemplate="epoch %{x:.2f}: loss %{y:.4f} (not kept)<extra></extra>")
        figure.add_vline(x=kept_epochs, line={"color": "#999999", "dash": "dash", "width": 1},
                         annotation_text=f"checkpoint, epoch {kept_epochs}", annotation_position="top left")
    figure.update_layout(height=240, margin={"t": 30, "b": 40}, xaxis_title="Epochs done", yaxis_title="Training loss",
                         showlegend=bool(lost), legend={"orientation": "h", "y": -0.35})
    return figure


def confusion_figure(classes: list[str], matrix: list[list[int]]) -> go.Figure:
    """The confusion matrix as a heatmap: rows are true classes, columns predicted, counts in the cells."""
    figure = go.Figure(go.Heatmap(z=matrix, x=classes, y=classes, colorscale="Blues", text=matrix,
                                  texttemplate="%{text}", hovertemplate="true %{y}, predicted %{x}: %{z}<extra></extra>"))
    figure.update_layout(height=150 + 28 * len(classes), margin={"t": 30}, xaxis_title="Predicted",
                         yaxis_title="True", yaxis_autorange="reversed")  # its caption: the diagonal is right
    figure.update_xaxes(type="category")
    figure.update_yaxes(type="category")
    return figure


def per_class_bars(per_class_acc: dict[str, float]) -> go.Figure:
    """Validation accuracy of each class, its number in the bar, or above it where the bar is too short for it (a
    class at 0 shows "0", not an empty slot)."""
    figure = go.Figure(go.Bar(x=list(per_class_acc), y=list(per_class_acc.values()),
                              text=[f"{100 * v:.0f}" for v in per_class_acc.values()], textposition="auto",
                              textangle=0,  # no % sign (the axis has it): '100' fits a narrow bar, '100%' did not
                              hovertemplate="class %{x}: %{y:.1%}<extra></extra>"))
    if zeros := [name for name, value in per_class_acc.items() if value == 0]:  # Plotly writes no text on an empty bar
        figure.add_scatter(x=zeros, y=[0] * len(zeros), mode="text", text=["0"] * len(zeros),
                           textposition="top center", hoverinfo="skip", showlegend=False)
    figure.update_layout(height=310, margin={"t": 30}, xaxis_title="Class", yaxis_title="Validation accuracy",
                         yaxis=accuracy_axis(), uniformtext={"minsize": 9, "mode": "hide"}, showlegend=False)
    figure.update_xaxes(type="category")
    return figure


def probe_figure(stages: list[dict], arch: str) -> go.Figure:
    """A probe of `arch`, accuracy per stage, stem to top: Strategy III's classifier on each stage's pooled
    features. Each validation label sits on the side away from the training line."""
    names = [stage_labels(arch)[row["stage"] - 1] for row in stages]
    figure = go.Figure()
    for key, label, dash in (("val_acc", "validation accuracy", "solid"), ("train_acc", "training accuracy", "dot")):
        figure.add_trace(go.Scatter(
            x=names, y=[row[key] for row in stages], name=label, mode="lines+markers+text" if key == "val_acc"
            else "lines+markers", line={"color": STRATEGY_COLORS["extract"], "dash": dash},
            text=[f"{row[key]:.1%}" for row in stages],
            textposition=["bottom center" if row["train_acc"] >= row["val_acc"] else "top center" for row in stages],
            customdata=[row["dim"] for row in stages],
            hovertemplate="%{x}: %{y:.1%} from %{customdata:,} features<extra>" + label + "</extra>"))
    low = min(min(row["val_acc"], row["train_acc"]) for row in stages)
    figure.update_layout(height=360, margin={"t": 30}, xaxis_title="Stage the features are read from (stem to top)",
                         yaxis={"title": "Accuracy", **accuracy_axis(max(0.0, low - 0.1), headroom=0.05)},
                         legend={"orientation": "h", "y": -0.3})
    short = [stage_name(row["stage"]) for row in stages]  # fits under a phone's plot; hover names the modules
    figure.update_xaxes(type="category", tickvals=names, ticktext=short)
    return figure


def accuracy_vs_cost(rows: list[dict], cost: str, label: str, log: bool = False,
                     colors: dict[str, str] | None = None) -> go.Figure:
    """Finished runs: validation accuracy against what they cost (`cost`: a key of the rows). Each run is drawn in
    its colour from `colors` (by run label, as in `run_curves`), with its strategy's marker, and grouped under its
    strategy in the legend; the accuracy axis zooms in on the runs' range. A run stopped before its last epoch
    (a `status` other than succeeded) has a hollow marker and says so: its accuracy is a partial one. A Strategy III
    run whose features came from the cache (`feature_cache` 'hit' or 'partial') says so too: it took seconds where
    the same run without the cache takes minutes. Labels are placed for a phone's plot; legend names wrap."""
    from cnnlab.naming import strategy_label

    colors = colors or stable_colors([row["label"] for row in rows])
    placed = [row for row in rows if row.get(cost) is not None and row.get("val_acc") is not None]
    accuracies = [row["val_acc"] for row in placed]
    low = max(0.0, min(accuracies, default=0.0) - 0.1)
    low = low if low > 0.3 else 0.0
    costs = [row[cost] for row in placed]
    if log and costs:
        x_range = [math.log10(min(costs) / 2), math.log10(max(costs) * 3)]
    else:
        x_range = [0, max(costs, default=0) * 1.25 or 1]

    def along(value: float) -> float:
        return (math.log10(value) - x_range[0]) / (x_range[1] - x_range[0]) if log else value / x_range[1]

    positions = place_labels([LabelledPoint(along(r[cost]), (r["val_acc"] - low) / (1.04 - low), r["run"], 6.5)
                              for r in placed], width=PHONE_PLOT_PX, height=300)
    figure = go.Figure()
    grouped = sorted(placed, key=lambda r: list(STRATEGY_SYMBOLS).index(r["strategy"]))
    for i, row in enumerate(grouped):
        first_of_strategy = i == 0 or grouped[i - 1]["strategy"] != row["strategy"]
        partial = row.get("status", "succeeded") != "succeeded"  # stopped early: its accuracy is not the run's
        notes = [row["status"]] if partial else []
        notes += ["features cached"] if row.get("feature_cache") in ("hit", "partial") else []
        noted = f" ({', '.join(notes)})" if notes else ""
        figure.add_trace(go.Scatter(
            x=[row[cost]], y=[row["val_acc"]], mode="markers+text",
            name=wrap_label(row["label"] + noted, width=36), text=[row["run"] + noted],
            textposition=positions.get(row["run"], "top center"), cliponaxis=False,
            marker={"size": 13, "color": colors[row["label"]],
                    "symbol": STRATEGY_SYMBOLS[row["strategy"]] + ("-open" if partial else ""),
                    "line": {"width": 2 if partial else 1, "color": colors[row["label"]] if partial else "white"}},
            legendgroup=row["strategy"],
            legendgrouptitle_text=strategy_label(row["strategy"]) if first_of_strategy else None,
            customdata=[[row["arch"], row["dataset"], row.get("params_trainable") or 0]],
            hovertemplate=(f"{row['label']}<br>%{{customdata[0]}} on %{{customdata[1]}}<br>"
                           f"validation accuracy %{{y:.1%}}<br>{label}: %{{x:,.3~g}}<br>"
                           "trainable params %{customdata[2]:,}<extra></extra>")))
    figure.update_layout(height=460, margin={"t": MODEBAR_PX, "r": 40}, yaxis=accuracy_axis(low, headroom=0.04),
                         xaxis_title=label, yaxis_title="Validation accuracy",
                         legend={"orientation": "h", "y": -0.2, "yanchor": "top", "x": 0})
    figure.update_xaxes(**{**(log_axis(costs) if log and costs else {}), "range": x_range})
    return figure


# ------------------------------------------------------------------------------------------- 1x1 reductions
REDUCTION_PART_COLORS = {"naive": "#d62728", "1x1 reduction": "#1f77b4", "k x k convolution": "#ff7f0e"}
ROLE_COLORS = dict(zip(ROLE_DESCRIPTIONS, ("#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#bcbd22", "#ff7f0e",
                                           "#7f7f7f", "#e377c2", "#17becf"), strict=True))
CHART_ROLE_NAMES = {AFTER_REDUCTION: "k x k after a reduction<br>(in 'without': on the full input)"}
MANY_MODULES = 16  # above this, one numbered pair of bars per module: names and roles would not fit


def reduction_cost_bars(result: ReductionComparison, metric: str, title: str) -> go.Figure:
    """The calculator's cost of one convolution, `metric` ('macs' or 'params') on a count axis titled `title`:
    the naive k x k bar against the reduced one stacked from its 1x1 and k x k parts (its total written above
    it), or the k x k alone when there is no reduction. Each part's hover gives its formula."""
    figure = go.Figure()
    if result.reduce is None:
        k = result.setup.kernel
        parts = [(f"{k}x{k} convolution", "naive", result.naive)]
    else:
        parts = [("naive", "naive", result.naive)]
    if result.reduce is not None:
        parts += [("with 1x1 reduction", "1x1 reduction", result.reduce),
                  ("with 1x1 reduction", "k x k convolution", result.conv)]
    totals: dict[str, int] = {}
    for bar, part, cost in parts:
        value = getattr(cost, metric)
        totals[bar] = totals.get(bar, 0) + value
        text = cost.formula if metric == "macs" else cost.params_formula
        figure.add_bar(x=[bar], y=[value], name=part, marker_color=REDUCTION_PART_COLORS[part], text=[human(value)],
                       textposition="inside", hovertext=[text], hoverinfo="text+name")
    stacked = {bar for bar in totals if sum(b == bar for b, _, _ in parts) > 1}  # a total over its parts
    for bar, total in totals.items():
        if bar in stacked:
            figure.add_annotation(x=bar, y=total, text=f"<b>= {human(total)}</b>", showarrow=False, yshift=12)
    # no chart title (the y axis names the count): on a phone, Plotly's toolbar would cover one
    figure.update_layout(barmode="stack", height=360, margin={"t": 40}, yaxis_title=title,
                         uniformtext={"minsize": 10, "mode": "hide"}, legend=LEGEND_BELOW)
    figure.update_yaxes(**count_axis(list(totals.values())))
    return figure


def reduction_sweep_figure(setup: ConvSetup) -> go.Figure:
    """Total MACs of the 1x1 reduction and the k x k after it for every reduction width C_red from 1 to C_in, or
    to `setup`'s own C_red where that is wider (at most about 256 widths), against the naive k x k's as a dashed
    line; `setup`'s own C_red, where it has one, marked on the curve."""
    widest = max(setup.in_channels, setup.reduce_to or 0)
    step = max(1, widest // 256)
    sweep = reduction_sweep(setup, range(1, widest + 1, step))
    widths = [r.setup.reduce_to for r in sweep]
    figure = go.Figure()
    figure.add_scatter(x=widths, y=[r.total_macs for r in sweep], name="1x1 reduction + k x k", mode="lines")
    figure.add_scatter(x=widths, y=[sweep[0].naive.macs] * len(widths), name="naive k x k", mode="lines",
                       line={"dash": "dash", "color": REDUCTION_PART_COLORS["naive"]})
    if setup.reduce_to is not None:
        current = compare_reduction(setup)
        figure.add_scatter(x=[setup.reduce_to], y=[current.total_macs], name=f"C_red = {setup.reduce_to}",
                           mode="markers", marker={"size": 12, "color": REDUCTION_PART_COLORS["1x1 reduction"]})
    figure.update_layout(height=360, margin={"t": 40}, xaxis_title="C_red (channels after the 1x1)",
                         yaxis_title="Total MACs", legend=LEGEND_BELOW)
    figure.update_yaxes(**count_axis([r.total_macs for r in sweep] + [sweep[0].naive.macs]))
    return figure


def module_macs_bars(network: NetworkReductions) -> go.Figure:
    """Per module of `network`, MACs as built next to MACs without its 1x1 reductions, as horizontal bars stacked
    by the convolutions' roles, the first module on top; for a network of more than MANY_MODULES modules
    (DenseNet's 58), `numbered_module_bars` instead."""
    if len(network.modules) > MANY_MODULES:
        return numbered_module_bars(network)
    present = {c.role for m in network.modules for c in m.convs}
    roles = [role for role in ROLE_DESCRIPTIONS if role in present]
    names = [m.path for m in network.modules]
    y = [[n for n in names for _ in (0, 1)], ["built", "without"] * len(names)]
    figure = go.Figure()
    totals = [0] * len(y[0])
    for role in roles:
        values = []
        for module in network.modules:
            convs = module.with_role(role)
            values += [sum(c.built.macs for c in convs), sum(c.without.macs for c in convs if c.without)]
        name = CHART_ROLE_NAMES.get(role, role)
        figure.add_bar(y=y, x=values, name=name, orientation="h", marker_color=ROLE_COLORS[role],
                       hovertemplate="%{y}<br>%{x:,} MACs<extra>" + name + "</extra>")
        totals = [total + value for total, value in zip(totals, values)]
    figure.update_layout(barmode="stack", height=150 + BAR_ROW_PX * len(y[0]), margin={"t": 30, "b": 120, "l": 10},
                         xaxis_title="Multiply-accumulates", legend_title_text="Convolution",
                         legend=LEGEND_BELOW | {"traceorder": "normal"})  # legend in the bars' left-to-right order
    figure.update_xaxes(**count_axis(totals))
    figure.update_yaxes(autorange="reversed")  # the first module on top; names level, readable on a phone too
    return figure


def numbered_module_bars(network: NetworkReductions) -> go.Figure:
    """Per module of `network`, numbered in the order it runs, its total MACs as built beside its total without
    the 1x1 reductions (one grouped pair of columns, the module's name on hover): a network with too many modules
    to name each one on the axis."""
    numbers = list(range(1, len(network.modules) + 1))
    names = [m.path for m in network.modules]
    figure = go.Figure()
    for label, color, values in (
            ("as built", ROLE_COLORS[next(iter(ROLE_COLORS))], [m.built_macs for m in network.modules]),
            ("without 1x1 reductions", REDUCTION_PART_COLORS["naive"], [m.without_macs for m in network.modules])):
        figure.add_bar(x=numbers, y=values, name=label, marker_color=color, customdata=names,
                       hovertemplate="%{customdata}<br>%{y:,} MACs<extra>" + label + "</extra>")
    figure.update_layout(barmode="group", height=420, margin={"t": 30}, yaxis_title="Multiply-accumulates",
                         xaxis_title="Module, in the order it runs (hover for its name)",
                         legend={"orientation": "h", "y": -0.25})
    figure.update_yaxes(**count_axis([v for trace in figure.data for v in trace.y]))
    return figure


def gap_vs_flatten_bars(comparisons: Sequence[HeadComparison]) -> go.Figure:
    """Each network's first dense layer, its parameters when fed by global average pooling and by a flatten of
    the last feature map, as a pair of horizontal bars on a log axis (names level, the first network on top; the
    hover gives each count's formula)."""
    titles = [short_title(get_spec(c.arch).title) for c in comparisons]
    figure = go.Figure()
    for name, params, formulas in (("global average pooling", [c.gap_params for c in comparisons],
                                    [c.gap_formula for c in comparisons]),
                                   ("flatten", [c.flatten_params for c in comparisons],
                                    [c.flatten_formula for c in comparisons])):
        figure.add_bar(y=titles, x=params, name=name, orientation="h", hovertext=formulas)
    # titled in the page and its axis labels 40 px down: a phone's Plotly toolbar always shows over a chart's top
    figure.update_layout(barmode="group", height=160 + 36 * len(comparisons), margin={"t": 72, "l": 10, "b": 70},
                         legend=LEGEND_BELOW)
    figure.update_yaxes(autorange="reversed")
    figure.update_xaxes(**log_axis([c.gap_params for c in comparisons] + [c.flatten_params for c in comparisons]),
                        side="top")  # read beside the top bars
    return figure


# ------------------------------------------------------------------------------------------- skip connections
VARIANT_COLORS = {"plain": "#d62728", "residual": "#1f77b4"}
GRADIENT_QUANTITIES = {"weights": "Gradient norm of the block's weights",
                       "activations": "Gradient norm at the block's output"}


def gradient_norms_figure(profiles: dict[str, GradientProfile], quantity: str) -> go.Figure:
    """The gradient norm per block at initialization of the plain and the residual net (`profiles`, by variant, as
    cnnlab.residual.gradient_profiles gives them), block 1 nearest the input, on a log axis; `quantity` is one of
    GRADIENT_QUANTITIES: 'weights' (over the block's parameters) or 'activations' (at the block's output)."""
    from cnnlab.residual import VARIANTS

    figure = go.Figure()
    values = []
    for variant in VARIANTS:
        norms = getattr(profiles[variant], quantity)
        values += norms
        figure.add_scatter(x=list(range(1, len(norms) + 1)), y=norms, mode="lines+markers", name=variant,
                           line={"color": VARIANT_COLORS[variant]})
    figure.update_layout(height=400, margin={"t": 30}, xaxis_title="Block (1 = nearest the input)",
                         yaxis_title=GRADIENT_QUANTITIES[quantity] + " (log)", legend={"orientation": "h", "y": -0.2})
    figure.update_yaxes(**log_axis(values))
    figure.update_xaxes(range=[0.5, len(norms) + 0.5])  # blocks count from 1
    return figure


# ------------------------------------------------------------------------------------------- look inside
def layer_statistics_figure(statistics: Sequence[dict]) -> go.Figure:
    """Per-layer statistics (cnnlab.activations.layer_statistics) from input to output in three rows sharing the
    layer axis: mean activation; share of exact zeros; channels and spatial height (both log). The stages are
    shaded alternately and named above the plot; the hover names each layer, its type, shape and stage."""
    import pandas as pd  # only here: the rest of cnnlab.charts does without it

    frame = pd.DataFrame(statistics)
    hover = [f"{r.layer} ({r.type})<br>{r.shape}<br>{r.stage_label}" for r in frame.itertuples()]
    figure = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.06, row_heights=[0.4, 0.25, 0.35],
                           specs=[[{}], [{}], [{"secondary_y": True}]])
    lines = ((1, False, "mean", "Mean activation", "#1f77b4", "lines+markers"),
             (2, False, "zero_fraction", "Zeros (share of exact zeros)", "#d62728", "markers"),
             (3, False, "channels", "Channels", "#2ca02c", "lines+markers"),
             (3, True, "height", "Spatial size (H)", "#9467bd", "lines+markers"))
    for row, secondary, column, label, color, mode in lines:
        figure.add_trace(go.Scatter(x=frame["index"], y=frame[column], name=label, mode=mode,
                                    marker={"size": 4 if mode != "markers" else 6}, line={"color": color}, text=hover,
                                    hovertemplate=f"%{{text}}<br>{label}: %{{y:.3g}}<extra></extra>"),
                         row=row, col=1, secondary_y=secondary if row == 3 else None)
    for k, (stage, group) in enumerate(frame.groupby("stage_index", sort=True)):
        if k % 2 == 0:
            figure.add_vrect(x0=group["index"].min() - 0.5, x1=group["index"].max() + 0.5, fillcolor="#888",
                             opacity=0.08, line_width=0)
        figure.add_annotation(x=(group["index"].min() + group["index"].max()) / 2, y=1.0, yref="paper",
                              text=HEAD if group["stage"].iloc[0] == HEAD else stage_name(stage + 1),
                              showarrow=False, yanchor="bottom", font={"size": 12},
                              yshift=16 * (k % 2))  # neighbours alternate rows: narrow stages' names do not collide
    figure.update_yaxes(title_text="Mean activation", row=1, col=1)
    figure.update_yaxes(title_text="Zeros", range=[-0.05, 1.05], tickformat=".0%", dtick=0.5, row=2, col=1)
    figure.update_yaxes(title_text="Channels", **log_axis(frame["channels"].tolist()), row=3, col=1, secondary_y=False)
    figure.update_yaxes(title_text="Height (pixels)", type="log", tickvals=sorted(frame["height"].unique()),
                        showgrid=False, row=3, col=1, secondary_y=True)
    figure.update_xaxes(title_text="Layer (in the order it runs)", row=3, col=1)
    figure.update_layout(height=680, margin={"t": 60, "b": 40}, legend={"orientation": "h", "y": -0.1})
    return figure


def vector_bars(values: Sequence[float], labels: Sequence[str], value_title: str = "Value") -> go.Figure:
    """Horizontal bars of a layer's output vector, `values` named by `labels`, the first on top (pass the largest
    first), on a value axis titled `value_title` ('Logit (before softmax)' for a classifier's output)."""
    figure = go.Figure(go.Bar(x=values[::-1], y=labels[::-1], orientation="h",
                              hovertemplate="%{y}: %{x:.3g}<extra></extra>"))
    figure.update_layout(height=84 + 30 * len(values), margin={"t": 34, "b": 40, "l": 10, "r": 10},
                         xaxis_title=value_title, yaxis={"type": "category"})  # labels stay names: '7', not 7
    return figure


def prediction_bars(predictions: Sequence[Prediction]) -> go.Figure:
    """Horizontal bars of class probabilities in percent, the most probable (the first prediction) on top, each
    labelled with its probability: inside a bar long enough for it, beside a shorter one (no shrunken labels)."""
    ordered = list(reversed(predictions))
    figure = go.Figure(go.Bar(
        x=[100 * p.probability for p in ordered], y=[p.shown for p in ordered], orientation="h",
        text=[f"{100 * p.probability:.1f}%" for p in ordered], textangle=0,
        textposition=["inside" if p.probability >= 0.25 else "outside" for p in ordered],  # no shrunken labels
        hovertemplate="%{y}: %{x:.2f}%<extra></extra>"))
    figure.update_layout(height=84 + 48 * len(ordered), margin={"t": 34, "b": 40, "l": 10, "r": 10},
                         xaxis={"title": "Probability (%)", "range": [0, 100]},
                         yaxis={"type": "category"})  # digit labels ('7') must stay names, not numbers
    return figure
