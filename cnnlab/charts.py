"""Plotly figures built from cnnlab's plain data (no Streamlit here: pages only display them)."""
from __future__ import annotations

import plotly.express as px
import plotly.graph_objects as go


def family_colors(rows: list[dict]) -> dict[str, str]:
    """One fixed colour per family, so every chart colours a family the same way."""
    families = list(dict.fromkeys(r["family"] for r in rows))
    palette = px.colors.qualitative.Bold + px.colors.qualitative.Pastel
    return {family: palette[i % len(palette)] for i, family in enumerate(families)}


def accuracy_vs_operations(rows: list[dict]) -> go.Figure:
    """The lecture's 'Comparison' slide: ImageNet top-1 against GMACs, bubble area proportional to parameters."""
    points = [r for r in rows if r.get("top1") is not None]
    figure = px.scatter(
        points, x="gmacs", y="top1", size="params", color="family", text="title", log_x=True, size_max=60,
        color_discrete_map=family_colors(rows),
        hover_data={"params": ":,", "gmacs": ":.2f", "top1": ":.2f", "accuracy_source": True, "title": False},
        labels={"gmacs": "Operations per image (GMACs, log scale)", "top1": "ImageNet top-1 accuracy (%)",
                "params": "Parameters"},
    )
    figure.update_traces(textposition="top center", marker={"sizemin": 6, "line": {"width": 1, "color": "white"}})
    figure.update_layout(height=520, legend_title_text="Family", margin={"t": 30})
    return figure


def metric_bars(rows: list[dict], metric: str, label: str, log: bool = False) -> go.Figure:
    """One bar per architecture for `metric` (a key of the rows), coloured by family."""
    figure = px.bar(rows, x="title", y=metric, color="family", log_y=log,
                    color_discrete_map=family_colors(rows), labels={metric: label, "title": ""},
                    hover_data={metric: ":,"})
    figure.update_layout(height=380, margin={"t": 30}, xaxis_tickangle=-35, showlegend=False)
    return figure
