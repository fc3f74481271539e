"""Figure builders: pure functions from wire schemas to ``plotly.graph_objects.Figure``.

Nothing here touches a server, a database or a browser, so every chart can be tested as data.
Plotly cannot read CSS variables, so colours come from a :class:`Theme`; the trace palette and
the threshold colours are mid-luminance hues that read on a light and on a dark page alike, and
the page swaps only the neutral colours (text, grid) with :func:`theme_layout`.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import plotly.graph_objects as go

from collapsewatch.schemas import IndicatorInfo, SeriesPoints

Severity = Literal["ok", "warn", "critical", "none"]

#: One colour per probe in model order. Tailwind's 500 shades: legible on white and on near-black,
#: and free of red and amber, which belong to the threshold lines.
PALETTE: tuple[str, ...] = (
    "#3b82f6",  # blue
    "#14b8a6",  # teal
    "#a855f7",  # purple
    "#22c55e",  # green
    "#ec4899",  # pink
    "#0ea5e9",  # sky
    "#84cc16",  # lime
    "#6366f1",  # indigo
    "#06b6d4",  # cyan
    "#d946ef",  # fuchsia
)
WARN_COLOUR = "#d97706"
CRITICAL_COLOUR = "#ef4444"


@dataclass(frozen=True)
class Theme:
    """The neutral colours of a chart; backgrounds stay transparent so the page's shows."""

    name: str
    text: str
    muted: str
    grid: str
    hover_bg: str


LIGHT = Theme(name="light", text="#1f2937", muted="#6b7280", grid="#e5e7eb", hover_bg="#ffffff")
DARK = Theme(name="dark", text="#e5e7eb", muted="#9ca3af", grid="#2e3440", hover_bg="#1f2937")
THEMES: dict[str, Theme] = {t.name: t for t in (LIGHT, DARK)}


def probe_colour(index: int) -> str:
    """The colour of the ``index``-th probe in model order (the palette repeats)."""
    return PALETTE[index % len(PALETTE)]


def trace_style(index: int) -> dict[str, Any]:
    """Style of the ``index``-th probe's line; the page also hands it to the browser, which
    adds a trace the same way when a probe first appears live."""
    return {
        "mode": "lines",
        "line": {"color": probe_colour(index), "width": 2},
        "connectgaps": False,
        "hovertemplate": "%{fullData.name}: %{y:.4g}<extra></extra>",
    }


def severity(info: IndicatorInfo, value: float | None) -> Severity:
    """Where ``value`` stands against the indicator's thresholds, honouring its direction.

    ``none`` when the indicator is informational, has no threshold, or the value is missing.
    """
    if value is None or not math.isfinite(value) or info.direction == "info":
        return "none"
    if info.warn is None and info.critical is None:
        return "none"
    worse = operator.ge if info.direction == "high_is_bad" else operator.le
    if info.critical is not None and worse(value, info.critical):
        return "critical"
    if info.warn is not None and worse(value, info.warn):
        return "warn"
    return "ok"


def axis_title(info: IndicatorInfo) -> str:
    """The y-axis title: the indicator's title, with its unit in brackets when it has one."""
    return f"{info.title} [{info.unit}]" if info.unit else info.title


def theme_layout(theme: Theme) -> dict[str, Any]:
    """The layout properties that differ between themes, as a patch for ``Plotly.relayout``.

    Keys use Plotly's attribute strings ("xaxis.gridcolor") so the browser can apply the patch
    to a drawn chart when the user's colour scheme changes.
    """
    patch: dict[str, Any] = {
        "font.color": theme.text,
        "hoverlabel.bgcolor": theme.hover_bg,
        "hoverlabel.font.color": theme.text,
        "legend.font.color": theme.text,
    }
    for axis in ("xaxis", "yaxis"):
        patch[f"{axis}.gridcolor"] = theme.grid
        patch[f"{axis}.linecolor"] = theme.grid
        patch[f"{axis}.zerolinecolor"] = theme.grid
        patch[f"{axis}.tickfont.color"] = theme.muted
        patch[f"{axis}.title.font.color"] = theme.muted
    return patch


def _threshold_lines(fig: go.Figure, info: IndicatorInfo) -> None:
    for label, level, colour in (
        ("warn", info.warn, WARN_COLOUR),
        ("critical", info.critical, CRITICAL_COLOUR),
    ):
        if level is None:
            continue
        fig.add_hline(
            y=level,
            line={"color": colour, "width": 1.5, "dash": "dash"},
            # labelled in the right margin, where no data line can run over the label
            annotation={
                "text": f"{label}<br>{level:g}",
                "font": {"color": colour, "size": 10},
                "x": 1,
                "xanchor": "left",
                "xshift": 4,
                "yanchor": "middle",
                "align": "left",
            },
            name=label,
            layer="below",
        )


def indicator_figure(
    info: IndicatorInfo, series: Sequence[SeriesPoints], theme: Theme = LIGHT
) -> go.Figure:
    """One line per probe (in the order given, which callers keep in model order) of one
    indicator, with dashed horizontal lines at its warn and critical thresholds when set.

    ``None`` values stay ``None`` so Plotly draws a gap: a NaN is a signal, not a zero.
    """
    fig = go.Figure()
    for index, points in enumerate(series):
        fig.add_trace(
            go.Scatter(
                x=list(points.steps), y=list(points.values), name=points.probe, **trace_style(index)
            )
        )
    _threshold_lines(fig, info)
    has_thresholds = info.warn is not None or info.critical is not None
    fig.update_layout(
        # "none" keeps the JSON small and free of the default template's white backgrounds
        template="none",
        height=260,
        # the right margin holds the threshold labels; without thresholds it is wasted room
        margin={"l": 56, "r": 56 if has_thresholds else 16, "t": 36, "b": 40},
        paper_bgcolor="rgba(0,0,0,0)",
        plot_bgcolor="rgba(0,0,0,0)",
        font={"family": "system-ui, -apple-system, 'Segoe UI', sans-serif", "size": 12},
        hovermode="x unified",
        showlegend=True,
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0, "xanchor": "left"},
        xaxis={
            "title": {"text": "step", "font": {"size": 11}},
            "showgrid": True,
            "zeroline": False,
        },
        yaxis={
            "title": {"text": axis_title(info), "font": {"size": 11}},
            "showgrid": True,
            "zeroline": False,
        },
        meta={"indicator": info.name},
        # keep zoom and legend toggles when traces are extended or restyled live
        uirevision=info.name,
    )
    fig.update_layout(theme_layout(theme))  # plotly.py takes the dotted keys as they are
    return fig


def figure_json(fig: go.Figure) -> dict[str, Any]:
    """The figure as plain JSON data ({"data", "layout"}) ready to embed in a page."""
    # through Plotly's own encoder: it knows every type a figure may hold
    return json.loads(fig.to_json())
