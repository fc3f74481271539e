"""Figure builders beyond the line chart: the layer x step heatmap and the covariance spectrum.

Pure functions from schemas to Plotly figures as plain data like :mod:`figures`, sharing
its layout and theme. The heatmap is what makes a collapsing layer jump out: layers top to
bottom in model order, steps left to right, each cell the worst value of its bin.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from collapsewatch_web.api_schemas.catalogue import IndicatorInfo
from collapsewatch_web.api_schemas.charts import IndicatorBins, SpectrumPublic, Threshold
from collapsewatch_web.figures import (
    LIGHT,
    PALETTE,
    SEVERITY_COLOURS,
    Marker,
    Theme,
    base_layout,
    theme_layout,
)
from collapsewatch_web.plotly_json import Figure, new_figure, update_layout

#: Healthy cells: a faint tint that reads on a light and a dark page alike.
CALM = "rgba(59, 130, 246, 0.10)"
CALM_EDGE = "rgba(59, 130, 246, 0.40)"
#: Past the worst threshold: a darker shade of its colour.
DARK_COLOURS = {"info": "#075985", "warning": "#92400e", "critical": "#7f1d1d"}
_SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}
#: Informational indicators have no bad end: a plain sequential scale.
INFO_SCALE = [[0.0, CALM], [1.0, "#6366f1"]]
#: A layer name's character in the tick labels (12 px system-ui: digits and most letters
#: 6-7 px), and the widest left margin the names get (longer ones are cut at the left edge).
LABEL_CHAR_PX = 7
MAX_LABEL_PX = 240


def label_margin(probes: Sequence[str]) -> int:
    """The left margin that holds the layer names, estimated from the longest one. Not
    Plotly's ``automargin``: it measures the drawn labels and then draws the chart again,
    half of a 200-layer heatmap's drawing time."""
    longest = max((len(p) for p in probes), default=0)
    return min(MAX_LABEL_PX, 12 + LABEL_CHAR_PX * longest)


def worst_is_high(info: IndicatorInfo) -> bool:
    """Whether a bin's worst value is its highest (also for informational indicators)."""
    return info.direction != "low_is_bad"


def heatmap_matrix(
    info: IndicatorInfo, bins: IndicatorBins
) -> tuple[list[int], list[list[float | None]], list[list[bool]]]:
    """Column steps, the worst value of each (layer, column) and where a cell held only NaNs.

    Columns are the bins that hold a point of any layer (a run sampled every 10 steps leaves
    most one-step bins empty, which would draw as stripes); rows follow ``bins.probes``
    (model order); a layer without a point in a column is ``None``.
    """
    high = worst_is_high(info)
    used = sorted({i for pb in bins.probes for i in pb.index})
    column_of = {b: c for c, b in enumerate(used)}
    z: list[list[float | None]] = []
    nan: list[list[bool]] = []
    for pb in bins.probes:
        row: list[float | None] = [None] * len(used)
        bad = [False] * len(used)
        for i, low, hi, count, nonfinite in zip(
            pb.index, pb.low, pb.high, pb.count, pb.nonfinite, strict=True
        ):
            c = column_of[i]
            row[c] = hi if high else low
            bad[c] = nonfinite > 0 and nonfinite == count
        z.append(row)
        nan.append(bad)
    return [bins.start + i * bins.width for i in used], z, nan


def colour_scale(
    info: IndicatorInfo, thresholds: Sequence[Threshold], zmin: float, zmax: float
) -> list[list[Any]]:
    """Calm up to the first threshold a bad value crosses, each threshold's colour past it,
    and a darker shade of the worst one at the bad end: a collapsed layer is red, a healthy
    one barely tinted. Without thresholds (or direction) nothing is alarming: a neutral
    scale, so the lowest rank of a healthy run is not painted as a collapse."""
    if not thresholds or info.direction == "info" or zmax <= zmin:
        return INFO_SCALE
    high = info.direction == "high_is_bad"
    span = zmax - zmin

    def badness(value: float) -> float:  # 0 at the calm end, 1 at the bad end
        p = (value - zmin) / span
        return min(1.0, max(0.0, p if high else 1.0 - p))

    ranked = sorted(thresholds, key=lambda t: badness(t.value))
    stops: dict[float, str] = {0.0: CALM}
    first = badness(ranked[0].value)
    if first > 0.0:
        stops[first] = CALM_EDGE
    for t in ranked:  # a value at a threshold is not past it: the colour starts just after
        stops[min(1.0, badness(t.value) + 1e-6)] = SEVERITY_COLOURS[t.severity.value]
    worst = max(ranked, key=lambda t: _SEVERITY_RANK[t.severity.value])
    stops.setdefault(1.0, DARK_COLOURS[worst.severity.value])
    scale = sorted(stops.items())
    if not high:  # Plotly's scale runs from zmin: for low-is-bad the bad end comes first
        scale = [(round(1.0 - p, 9), c) for p, c in reversed(scale)]
    return [[p, c] for p, c in scale]


def heatmap_figure(
    info: IndicatorInfo,
    bins: IndicatorBins,
    thresholds: Sequence[Threshold] = (),
    theme: Theme = LIGHT,
    markers: Sequence[Marker] = (),
) -> Figure:
    """Layers (rows, first layer on top) x step bins (columns), coloured by each bin's worst
    value against the thresholds; a bin of only NaNs takes the bad end's colour, as a
    diverged statistic is alarming. ``markers`` put a cross where alerts fired."""
    columns, z, nan = heatmap_matrix(info, bins)
    probes = [pb.probe for pb in bins.probes]
    # numpy, not nested lists: figure_json turns 60k cells into lists in C
    values = np.array(z, dtype=np.float64).reshape(len(probes), len(columns))
    flags = np.array(nan, dtype=bool).reshape(values.shape)
    finite = values[np.isfinite(values)]
    levels = [t.value for t in thresholds]
    zmin = float(min(finite.min(initial=np.inf), *levels, np.inf))
    zmax = float(max(finite.max(initial=-np.inf), *levels, -np.inf))
    if not np.isfinite(zmin) or not np.isfinite(zmax):
        zmin, zmax = 0.0, 1.0
    if zmax <= zmin:  # a flat indicator (no NaN/Inf anywhere: all 0) still needs a range
        zmax = zmin + max(abs(zmin), 1.0)
    values[flags] = zmax if worst_is_high(info) else zmin
    heat: dict[str, Any] = {
        "type": "heatmap",
        "x": np.asarray(columns, dtype=np.int64),
        "y": probes,
        "z": values,
        "zmin": zmin,
        "zmax": zmax,
        "colorscale": colour_scale(info, thresholds, zmin, zmax),
        "hoverongaps": False,
        "xgap": 0,
        "ygap": 1 if len(probes) <= 40 else 0,
        "colorbar": {"thickness": 10, "len": 0.9, "outlinewidth": 0, "tickfont": {"size": 10}},
        "hovertemplate": "%{y}<br>steps %{x}+: %{z:.4g} %{text}<extra>" + info.name + "</extra>",
        "name": info.name,
    }
    if flags.any():  # hover says NaN where the colour says "bad"; no text array otherwise
        heat["text"] = np.where(flags, "NaN", "").astype(object)
    fig = new_figure()
    fig["data"].append(heat)
    if markers:
        fig["data"].append(
            {
                "type": "scatter",
                "x": [m.step for m in markers],
                "y": [m.probe for m in markers],
                "mode": "markers",
                "name": "alerts",
                "showlegend": False,
                "hovertext": [m.text for m in markers],
                "hovertemplate": "%{hovertext}<extra></extra>",
                "marker": {
                    "symbol": "x",
                    "size": 9,
                    "color": "#111827",
                    "line": {"width": 1, "color": "#ffffff"},
                },
            }
        )
    height = min(480, max(220, 14 * len(probes) + 90)) if len(probes) <= 40 else 420
    layout = base_layout("layer", info.name + ":heatmap", theme, height=height)
    layout["yaxis"].update(
        {
            "autorange": "reversed",
            "type": "category",
            "showgrid": False,
            "title": {"text": ""},
        }
    )
    layout["xaxis"].update({"showgrid": False})
    layout.update(
        margin={"l": label_margin(probes), "r": 8, "t": 12, "b": 40},
        hovermode="closest",
        showlegend=False,
        meta={
            "indicator": info.name,
            "start": bins.start,
            "width": bins.width,
            "worst": "max" if worst_is_high(info) else "min",
        },
    )
    update_layout(fig, layout)
    update_layout(fig, theme_layout(theme))
    return fig


def spectrum_figure(spectra: Sequence[SpectrumPublic], theme: Theme = LIGHT) -> Figure:
    """Each spectrum's eigenvalues as shares of their sum, largest first, on a log axis: a
    dimensional collapse shows as a spectrum that falls off a cliff after a few components."""
    fig = new_figure()
    for index, sp in enumerate(spectra):
        total = sum(v for v in sp.eigenvalues if v > 0) or 1.0
        shares = [v / total if v > 0 else None for v in sp.eigenvalues]
        fig["data"].append(
            {
                "type": "scatter",
                "x": list(range(1, len(shares) + 1)),
                "y": shares,
                "mode": "lines+markers",
                "name": f"step {sp.step}",
                "line": {"color": PALETTE[index % len(PALETTE)], "width": 2},
                "marker": {"size": 4},
                "hovertemplate": "component %{x}: %{y:.3g} of the variance"
                "<extra>%{fullData.name}</extra>",
            }
        )
    layout = base_layout("eigenvalue / sum", "spectrum", theme)
    layout["xaxis"]["title"]["text"] = "component"
    layout["yaxis"]["type"] = "log"
    layout.update(
        margin={"l": 56, "r": 16, "t": 12, "b": 40},
        hovermode="x unified",
        showlegend=True,
        legend={"orientation": "h", "y": 1.0, "yanchor": "bottom", "x": 1, "xanchor": "right"},
    )
    update_layout(fig, layout)
    update_layout(fig, theme_layout(theme))
    return fig
