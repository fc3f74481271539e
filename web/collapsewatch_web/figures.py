"""Figure builders: pure functions from API schemas to Plotly figures as plain data.

Nothing here touches a server, a database or a browser, so every chart can be tested as data.
The figures are dicts written directly (:mod:`collapsewatch_web.plotly_json`), not
``plotly.graph_objects``, whose validation cost more than the rest of a chart request.
Plotly cannot read CSS variables, so colours come from a :class:`Theme`; the trace palette and
the threshold colours are mid-luminance hues that read on a light and on a dark page alike, and
the page swaps only the neutral colours (text, grid) with :func:`theme_layout`.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from collapsewatch_web.api_schemas.catalogue import IndicatorInfo
from collapsewatch_web.api_schemas.charts import IndicatorBins, Threshold
from collapsewatch_web.api_schemas.runs import SeriesPoints
from collapsewatch_web.plotly_json import (
    Figure,
    add_hline,
    add_vline,
    new_figure,
    no_template,
    update_layout,
)
from collapsewatch_web.plotly_json import figure_json as figure_json  # callers' one import

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
INFO_COLOUR = "#0284c7"
SEVERITY_COLOURS = {"info": INFO_COLOUR, "warning": WARN_COLOUR, "critical": CRITICAL_COLOUR}
RESOLVED_COLOUR = "#16a34a"
#: Lines of the layers that are not among the worst when a chart has more than the palette:
#: 200 coloured lines are noise, 190 grey ones with the 10 worst in colour tell a story.
MUTED_COLOUR = "rgba(128, 128, 128, 0.35)"
#: Alert markers' trace; live updates find probe traces by name and must skip it.
ALERTS_UID = "alerts"
#: The trace marking where a line's value was NaN or infinite (a gap alone is easy to miss).
NONFINITE_UID = "nonfinite"
#: Non-finite steps marked on one chart at most.
MAX_NONFINITE_MARKS = 2000
FONT = "system-ui, -apple-system, 'Segoe UI', sans-serif"


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


def trace_style(index: int, muted: bool = False) -> dict[str, Any]:
    """Style of the ``index``-th probe's line; the page also hands it to the browser, which
    adds a trace the same way when a probe first appears live. ``muted``: a grey, thinner
    line for a layer that is not among the worst of a crowded chart."""
    return {
        "mode": "lines",
        "line": {
            "color": MUTED_COLOUR if muted else probe_colour(index),
            "width": 1 if muted else 2,
        },
        "connectgaps": False,
        "hovertemplate": "%{fullData.name}: %{y:.4g}<extra></extra>",
    }


@dataclass(frozen=True)
class Marker:
    """A point where an alert fired (or resolved, or a back-test would have fired)."""

    step: int
    value: float | None
    status: str  # firing, resolved
    severity: str  # info, warning, critical
    text: str
    probe: str = ""


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


def catalogue_thresholds(info: IndicatorInfo) -> list[Threshold]:
    """The catalogue's warn and critical levels as thresholds (when no rule is known)."""
    side = "below" if info.direction == "low_is_bad" else "above"
    return [
        Threshold.model_validate(
            {"value": level, "side": side, "severity": sev, "label": label, "source": "catalogue"}
        )
        for label, level, sev in (
            ("warn", info.warn, "warning"),
            ("critical", info.critical, "critical"),
        )
        if level is not None
    ]


def _threshold_lines(fig: Figure, thresholds: Sequence[Threshold]) -> None:
    for t in thresholds:
        # a rule's name is too long for the right margin: its severity says what it means
        label = t.label if t.source == "catalogue" else t.severity.value
        level = t.value
        colour = SEVERITY_COLOURS.get(t.severity.value, WARN_COLOUR)
        add_hline(
            fig,
            level,
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


def _marker_trace(markers: Sequence[Marker]) -> dict[str, Any]:
    """One trace for every alert marker: a triangle where one fired, a ring where it resolved."""
    firing = [m.status == "firing" for m in markers]
    return {
        "type": "scatter",
        "x": [m.step for m in markers],
        "y": [m.value for m in markers],
        "mode": "markers",
        "name": "alerts",
        "uid": ALERTS_UID,
        "showlegend": False,
        "hovertext": [m.text for m in markers],
        "hovertemplate": "%{hovertext}<extra></extra>",
        "marker": {
            "symbol": ["triangle-up" if f else "circle-open" for f in firing],
            "size": 11,
            "color": [
                SEVERITY_COLOURS.get(m.severity, WARN_COLOUR) if f else RESOLVED_COLOUR
                for m, f in zip(markers, firing, strict=True)
            ],
            "line": {"width": 1.5, "color": "rgba(255,255,255,0.9)"},
        },
    }


def _nonfinite_trace(series: Sequence[SeriesPoints]) -> dict[str, Any] | None:
    """An ``x`` on each line where its value was NaN or infinite (stored as None), at the
    line's last finite value before it (0 when it never had one): a loss that turns NaN is
    marked, not just a line that stops. None when every value is finite."""
    xs: list[int] = []
    ys: list[float] = []
    texts: list[str] = []
    for points in series:
        if len(xs) >= MAX_NONFINITE_MARKS:
            break
        # numpy: a Python loop over every point of 200 layers cost more than the whole chart
        values = np.array(points.values, dtype=np.float64)
        finite = np.isfinite(values)
        if finite.all():
            continue
        # the index of the last finite value at or before each point (-1: none yet)
        last_at = np.maximum.accumulate(np.where(finite, np.arange(len(values)), -1))
        bad = np.flatnonzero(~finite)[: MAX_NONFINITE_MARKS - len(xs)]
        steps = np.asarray(points.steps, dtype=np.int64)[bad].tolist()
        xs += steps
        ys += np.where(last_at[bad] >= 0, values[last_at[bad]], 0.0).tolist()
        texts += [f"{points.probe}: NaN or inf at step {step}" for step in steps]
    if not xs:
        return None
    return {
        "type": "scatter",
        "x": xs,
        "y": ys,
        "mode": "markers",
        "name": "NaN or inf",
        "uid": NONFINITE_UID,
        "showlegend": False,
        "hovertext": texts,
        "hovertemplate": "%{hovertext}<extra></extra>",
        "marker": {"symbol": "x", "size": 10, "color": SEVERITY_COLOURS["critical"]},
    }


def base_layout(
    y_title: str, uirevision: str, theme: Theme, *, height: int = 260
) -> dict[str, Any]:
    """What every chart shares: transparent backgrounds, fonts, grids, the theme's colours."""
    return {
        # no template keeps the JSON small and free of the default one's white backgrounds
        "template": no_template(),
        "height": height,
        "paper_bgcolor": "rgba(0,0,0,0)",
        "plot_bgcolor": "rgba(0,0,0,0)",
        "font": {"family": FONT, "size": 12},
        "xaxis": {
            "title": {"text": "step", "font": {"size": 11}},
            "showgrid": True,
            "zeroline": False,
        },
        "yaxis": {
            "title": {"text": y_title, "font": {"size": 11}},
            "showgrid": True,
            "zeroline": False,
        },
        # keep zoom and legend toggles when traces are extended or restyled live
        "uirevision": uirevision,
    }


def indicator_figure(
    info: IndicatorInfo,
    series: Sequence[SeriesPoints],
    theme: Theme = LIGHT,
    *,
    thresholds: Sequence[Threshold] | None = None,
    markers: Sequence[Marker] = (),
    highlight: Collection[str] | None = None,
    resumed: Sequence[int] = (),
    worst_of: int | None = None,
) -> Figure:
    """One line per probe (in the order given, which callers keep in model order) of one
    indicator, with dashed horizontal lines at its thresholds (the rules' when given, else the
    catalogue's warn and critical) and markers where alerts fired.

    ``resumed``: steps where the run resumed from a checkpoint (``collapsewatch.resumed`` in
    its config); each gets a dotted vertical line, and the lines break there, so the training
    lost between the last step before and the resume shows as a gap.

    With more probes than palette colours, only the probes in ``highlight`` (the worst) get a
    colour and the others a grey line. ``None`` values stay ``None`` so Plotly draws a gap: a
    NaN is a signal, not a zero.

    ``worst_of``: the run's layers when ``series`` holds only the worst of them
    (:func:`drawn_probes`, for a chart beside a heatmap of every layer). The chart says so in a
    note above the plot, and its ``meta.worst_of`` tells the page to draw no line live for the
    layers left out.
    """
    lines = catalogue_thresholds(info) if thresholds is None else list(thresholds)
    crowded = len(series) > len(PALETTE)
    keep = set(highlight or ())
    fig = new_figure()
    for index, points in enumerate(series):
        muted = crowded and points.probe not in keep
        x, y = _break_at(points.steps, points.values, resumed)
        fig["data"].append(
            {
                "type": "scatter",
                # numpy arrays: figure_json turns them into lists in C, NaN and inf into null
                "x": np.asarray(x, dtype=np.int64),
                "y": np.array(y, dtype=np.float64),
                "name": points.probe,
                **trace_style(index, muted=muted),
            }
        )
    if markers:
        fig["data"].append(_marker_trace(markers))
    nonfinite = _nonfinite_trace(series)
    if nonfinite is not None:
        fig["data"].append(nonfinite)
        first = min(nonfinite["x"])
        add_vline(
            fig,
            first,
            line={"dash": "dot", "width": 1, "color": SEVERITY_COLOURS["critical"]},
            name="nonfinite",
            annotation={"text": f"NaN at step {first}", "font": {"size": 10}},
            annotation_side="right",
        )
    _threshold_lines(fig, lines)
    for step in resumed:
        add_vline(
            fig,
            step,
            line={"dash": "dot", "width": 1, "color": MUTED_COLOUR},
            name="resumed",
            annotation={"text": "resumed", "font": {"size": 10}},
            annotation_side="left",
        )
    update_layout(
        fig,
        {
            **base_layout(axis_title(info), info.name, theme),
            # the right margin holds the threshold labels; without thresholds it is wasted room
            "margin": {"l": 56, "r": 64 if lines else 16, "t": 12, "b": 40},
            # one hover box listing 200 layers would cover the chart: crowded ones say one line
            "hovermode": "closest" if crowded else "x unified",
            # the page lists the layers under each chart with their newest value: that list is
            # the legend (a legend of 200 layers would be the chart's size)
            "showlegend": False,
            "meta": {"indicator": info.name},
        },
    )
    if worst_of is not None and worst_of > len(series):
        _worst_of_note(fig, len(series), worst_of)
    update_layout(fig, theme_layout(theme))
    return fig


def drawn_probes(probes: Sequence[str], worst: Sequence[str]) -> list[str]:
    """The probes (in model order) that a line chart beside a heatmap of every layer draws:
    all of them while the palette has a colour for each, else the first palette's worth of
    ``worst`` (worst first). 200 lines, 190 of them grey, told nothing the heatmap does not,
    and cost most of the run page's first chart to send and draw."""
    if len(probes) <= len(PALETTE):
        return list(probes)
    keep = set(worst[: len(PALETTE)])
    return [p for p in probes if p in keep]


def _worst_of_note(fig: Figure, drawn: int, layers: int) -> None:
    """Above the plot, what the lines are and where the others are."""
    fig["layout"]["meta"]["worst_of"] = layers
    fig["layout"]["margin"]["t"] = 28
    fig["layout"].setdefault("annotations", []).append(
        {
            "text": f"the {drawn} worst of {layers} layers; every layer in the heatmap",
            "name": "worst_of",
            "xref": "paper",
            "yref": "paper",
            "x": 0,
            "y": 1,
            "xanchor": "left",
            "yanchor": "bottom",
            "yshift": 4,
            "showarrow": False,
            "font": {"size": 11},
        }
    )


def _break_at(
    steps: Sequence[int], values: Sequence[float | None], at: Sequence[int]
) -> tuple[list[int], list[float | None]]:
    """The points with a gap (a ``None``) before each step of ``at`` that falls inside them."""
    if not at:
        return list(steps), list(values)
    xs: list[int] = []
    ys: list[float | None] = []
    cuts = sorted(at)
    for step, value in zip(steps, values, strict=True):
        while cuts and step >= cuts[0]:
            if xs:  # a line before the resume: end it there
                xs.append(cuts[0])
                ys.append(None)
            cuts.pop(0)
        xs.append(step)
        ys.append(value)
    return xs, ys


def lines_from_bins(bins: IndicatorBins) -> list[SeriesPoints]:
    """Each probe's binned points as a line: a bin of one point is that point; a wider bin
    gives its lowest and highest value (at its first and last step, in the order that
    continues the line), so spikes and collapses survive; a bin of only NaNs is a gap."""
    out = []
    for pb in bins.probes:
        steps: list[int] = []
        values: list[float | None] = []
        previous: float | None = None
        rows = list(
            zip(pb.first_step, pb.last_step, pb.low, pb.high, pb.count, pb.nonfinite, strict=True)
        )
        for i, (first, last, low, high, count, bad) in enumerate(rows):
            if low is None or high is None:
                steps.append(first)
                values.append(None)
                previous = None
                continue
            if count == 1 or low == high:
                pair = [(first, low)] if count == 1 else [(first, low), (last, high)]
            else:
                if previous is not None:  # start at the extreme nearer to where the line is
                    up = abs(previous - low) <= abs(previous - high)
                else:  # or end at the one nearer to where it goes next
                    after = rows[i + 1][2:4] if i + 1 < len(rows) else (None, None)
                    target = None if None in after else (after[0] + after[1]) / 2  # type: ignore[operator]
                    up = target is None or abs(target - high) <= abs(target - low)
                pair = [(first, low), (last, high)] if up else [(first, high), (last, low)]
            for step, value in pair:
                steps.append(step)
                values.append(value)
            previous = pair[-1][1]
            if bad:  # a NaN inside the bin: break the line after it
                steps.append(last)
                values.append(None)
                previous = None
        out.append(
            SeriesPoints(
                indicator=bins.indicator,
                probe=pb.probe,
                steps=steps,
                values=values,
                total=sum(pb.count),
                downsampled=any(c > 1 for c in pb.count),
            )
        )
    return out
