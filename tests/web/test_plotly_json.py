"""Figures as plain data: what plotly.py did for the builders, checked against plotly.py."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import plotly.graph_objects as go
import pytest

from collapsewatch.schemas import ProbeKind
from collapsewatch_web import figures, heatmaps, plotly_json
from collapsewatch_web.api_schemas.catalogue import IndicatorInfo
from collapsewatch_web.api_schemas.charts import IndicatorBins, ProbeBins, SpectrumPublic, Threshold
from collapsewatch_web.api_schemas.runs import SeriesPoints

INFO = IndicatorInfo(
    name="dead_fraction",
    title="Dead units",
    family="dead_units",
    applies_to=ProbeKind.activation,
    direction="high_is_bad",
    warn=0.2,
    critical=0.5,
    meaning="m",
    what_to_try="w",
)
RULE = Threshold.model_validate(
    {"value": 0.3, "side": "above", "severity": "critical", "label": "r", "source": "rule"}
)
MARKERS = [
    figures.Marker(2, 0.7, "firing", "critical", "fired", "l1"),
    figures.Marker(3, None, "resolved", "warning", "resolved", "l0"),
]


def lines(n: int) -> list[SeriesPoints]:
    values: list[float | None] = [0.1, None, 0.3, math.inf, 0.5]
    return [
        SeriesPoints(
            indicator="dead_fraction",
            probe=f"l{i}",
            steps=[0, 1, 2, 3, 4],
            values=values,
            total=5,
            downsampled=False,
        )
        for i in range(n)
    ]


def bins(n: int) -> IndicatorBins:
    probes = [
        ProbeBins(
            probe=f"l{i}",
            index=[0, 1, 2],
            first_step=[0, 2, 4],
            last_step=[1, 3, 4],
            low=[0.1, None, 0.2 * i],
            high=[0.4, None, 0.2 * i],
            count=[2, 2, 1],
            nonfinite=[0, 2, 0],
        )
        for i in range(n)
    ]
    return IndicatorBins(
        indicator="dead_fraction", start=0, width=2, bins=3, total=5 * n, probes=probes
    )


SPECTRA = [SpectrumPublic(probe="l0", asked=0, step=0, eigenvalues=[2.0, 1.0, 0.0])]
BUILDERS = {
    "lines": lambda: figures.indicator_figure(INFO, lines(3), markers=MARKERS, resumed=[2]),
    "crowded, dark": lambda: figures.indicator_figure(
        INFO, lines(12), figures.DARK, thresholds=[RULE], highlight=["l3"], markers=MARKERS
    ),
    "the worst of 200": lambda: figures.indicator_figure(
        INFO, lines(10), thresholds=[RULE], markers=MARKERS, worst_of=200
    ),
    "no lines": lambda: figures.indicator_figure(INFO, [], thresholds=[]),
    "binned lines": lambda: figures.indicator_figure(INFO, figures.lines_from_bins(bins(2))),
    "heatmap": lambda: heatmaps.heatmap_figure(INFO, bins(3), [RULE], markers=MARKERS),
    "heatmap, 50 layers, dark": lambda: heatmaps.heatmap_figure(INFO, bins(50), [], figures.DARK),
    "spectrum": lambda: heatmaps.spectrum_figure(SPECTRA),
    "spectrum, dark": lambda: heatmaps.spectrum_figure(SPECTRA * 2, figures.DARK),
}


@pytest.mark.parametrize("build", BUILDERS.values(), ids=BUILDERS.keys())
def test_every_builder_gives_a_figure_plotly_accepts(build: Any) -> None:
    fig = build()
    go.Figure(fig).to_plotly_json()  # plotly.py validates every property: a typo raises
    data = plotly_json.figure_json(fig)
    assert json.loads(json.dumps(data, allow_nan=False)) == data, "plain JSON, no NaN"
    go.Figure(data).to_plotly_json()  # what the browser receives is a valid figure too


def test_figure_json_turns_arrays_and_non_finite_values_into_lists_and_null() -> None:
    fig: plotly_json.Figure = {
        "data": [
            {
                "type": "heatmap",
                "x": np.arange(2, dtype=np.int64),
                "z": np.array([[1.0, np.nan], [np.inf, 2.0]]),
                "text": np.array([["", "NaN"], ["", ""]], dtype=object),
                "zmax": np.float64(2.0),
            },
            {"type": "scatter", "y": [0.5, None, math.nan, -math.inf], "x": (1, 2, 3, 4)},
        ],
        "layout": {"meta": {"worst": "max"}},
    }
    data = plotly_json.figure_json(fig)
    assert data["data"][0] == {
        "type": "heatmap",
        "x": [0, 1],
        "z": [[1.0, None], [None, 2.0]],
        "text": [["", "NaN"], ["", ""]],
        "zmax": 2.0,
    }
    assert data["data"][1]["y"] == [0.5, None, None, None]
    assert data["data"][1]["x"] == [1, 2, 3, 4]
    data["layout"]["meta"]["worst"] = "min"
    assert fig["layout"]["meta"]["worst"] == "max", "the JSON shares nothing with the figure"


def test_update_layout_merges_like_plotly() -> None:
    layout = figures.base_layout("y", "u", figures.LIGHT)
    patches: list[dict[str, Any]] = [
        {"margin": {"l": 8, "r": 8}, "legend": {"x": 1}, "height": 300},
        {"margin": {"t": 36}, "legend": {"orientation": "h"}, "xaxis": {"title": {"text": "s"}}},
        figures.theme_layout(figures.DARK),
    ]
    ours = plotly_json.new_figure()
    theirs = go.Figure(layout={"template": "none"})
    for patch in [layout, *patches]:
        plotly_json.update_layout(ours, patch)
        theirs.update_layout(patch)
    assert plotly_json.figure_json(ours)["layout"] == theirs.layout.to_plotly_json()


def test_spanning_lines_are_the_ones_plotly_draws() -> None:
    """add_hline and add_vline write the shapes and labels of plotly.py's namesakes, with the
    axis references it adds, so the browser draws the same lines."""
    line = {"color": "#ef4444", "width": 1.5, "dash": "dash"}
    label = {"text": "warn", "font": {"size": 10}, "x": 1, "xanchor": "left", "yanchor": "middle"}
    ours = plotly_json.new_figure()
    theirs = go.Figure()
    plotly_json.add_hline(ours, 0.25, line=line, name="warn", annotation=label, layer="below")
    theirs.add_hline(y=0.25, line=line, name="warn", annotation=label, layer="below")
    plotly_json.add_hline(ours, 7, line=line, name="h", annotation={"text": "h"})
    theirs.add_hline(y=7, line=line, name="h", annotation={"text": "h"})
    for side in ("left", "right"):
        plotly_json.add_vline(
            ours, 10, line=line, name="v", annotation={"text": side}, annotation_side=side
        )
        theirs.add_vline(
            x=10, line=line, name="v", annotation={"text": side}, annotation_position=f"top {side}"
        )
    drawn = theirs.layout.to_plotly_json()
    assert plotly_json.figure_json(ours)["layout"] == {
        "shapes": drawn["shapes"],
        "annotations": drawn["annotations"],
    }
