"""Figure builders as data: no server, no browser."""

from __future__ import annotations

import json
import math
from typing import Any

import plotly.graph_objects as go
import pytest

from collapsewatch.schemas import ProbeKind
from collapsewatch_web import figures
from collapsewatch_web.api_schemas.catalogue import IndicatorInfo
from collapsewatch_web.api_schemas.charts import Threshold
from collapsewatch_web.api_schemas.runs import SeriesPoints
from collapsewatch_web.plotly_json import Figure


def info(
    *,
    warn: float | None = None,
    critical: float | None = None,
    direction: str = "high_is_bad",
    unit: str = "",
) -> IndicatorInfo:
    return IndicatorInfo(
        name="dead_fraction",
        title="Dead units",
        family="dead_units",
        applies_to=ProbeKind.activation,
        direction=direction,  # type: ignore[arg-type]
        warn=warn,
        critical=critical,
        unit=unit,
        meaning="m",
        what_to_try="w",
    )


def points(probe: str, steps: list[int], values: list[float | None]) -> SeriesPoints:
    return SeriesPoints(
        indicator="dead_fraction",
        probe=probe,
        steps=steps,
        values=values,
        total=len(steps),
        downsampled=False,
    )


def plotly(fig: Figure) -> go.Figure:
    """The figure as plotly.py reads it: it validates every property, so a misspelt key or a
    value Plotly does not take fails the test (the builders write plain data unchecked)."""
    return go.Figure(fig)


def chart(*args: Any, **kwargs: Any) -> go.Figure:
    """:func:`figures.indicator_figure`, validated by plotly.py."""
    return plotly(figures.indicator_figure(*args, **kwargs))


def thresholds(fig: go.Figure) -> dict[str, float]:
    """Horizontal threshold lines of a figure by name ("warn", "critical")."""
    return {s.name: s.y0 for s in fig.layout.shapes if s.y0 == s.y1}


def test_one_line_per_probe_in_the_given_order() -> None:
    order = ["encoder.0", "encoder.1", "decoder.0", "head"]
    fig = chart(info(), [points(p, [0, 1], [0.0, 0.1]) for p in order])
    assert [t.name for t in fig.data] == order
    assert {t.type for t in fig.data} == {"scatter"}
    assert {t.mode for t in fig.data} == {"lines"}
    colours = [t.line.color for t in fig.data]
    assert len(set(colours)) == len(order), f"probes share a colour: {colours}"


def test_steps_and_values_are_carried_over() -> None:
    fig = chart(info(), [points("fc1", [0, 10, 20], [0.0, 0.25, 0.5])])
    assert list(fig.data[0].x) == [0, 10, 20]
    assert list(fig.data[0].y) == [0.0, 0.25, 0.5]


def test_missing_values_stay_gaps() -> None:
    fig = figures.indicator_figure(info(), [points("fc1", [0, 1, 2], [0.1, None, 0.3])])
    trace = figures.figure_json(fig)["data"][0]
    assert trace["y"] == [0.1, None, 0.3], "a NaN must be a gap, not a zero or a dropped step"
    assert trace["x"] == [0, 1, 2]
    assert trace["connectgaps"] is False


@pytest.mark.parametrize(
    ("warn", "critical", "expected"),
    [
        (None, None, {}),
        (0.2, None, {"warn": 0.2}),
        (None, 0.5, {"critical": 0.5}),
        (0.2, 0.5, {"warn": 0.2, "critical": 0.5}),
    ],
)
def test_threshold_lines_exactly_when_set(
    warn: float | None, critical: float | None, expected: dict[str, float]
) -> None:
    fig = chart(info(warn=warn, critical=critical), [points("fc1", [0], [0.0])])
    assert thresholds(fig) == expected
    labels = [a.text for a in fig.layout.annotations]
    assert len(labels) == len(expected)
    for name, level in expected.items():
        assert any(name in text and f"{level:g}" in text for text in labels), labels
    for shape in fig.layout.shapes:
        assert shape.line.dash == "dash"
        assert shape.xref == "x domain", "a threshold line spans the whole plot"
    if expected:
        assert len(fig.data) == 1, "threshold lines must not be traces (live updates index traces)"


def test_threshold_colours_differ_from_every_probe_colour() -> None:
    fig = chart(info(warn=0.2, critical=0.5), [points(f"l{i}", [0], [0.0]) for i in range(12)])
    threshold_colours = {s.line.color for s in fig.layout.shapes}
    assert threshold_colours == {figures.WARN_COLOUR, figures.CRITICAL_COLOUR}
    assert not threshold_colours & {t.line.color for t in fig.data}


def test_axes_titles_and_unit() -> None:
    plain = chart(info(), [])
    assert plain.layout.xaxis.title.text == "step"
    assert plain.layout.yaxis.title.text == "Dead units"
    with_unit = chart(info(unit="nats"), [])
    assert with_unit.layout.yaxis.title.text == "Dead units [nats]"


def test_empty_series_gives_an_empty_but_valid_figure() -> None:
    fig = chart(info(warn=0.2), [])
    assert len(fig.data) == 0
    assert thresholds(fig) == {"warn": 0.2}


def test_figure_json_is_plain_json_with_transparent_backgrounds() -> None:
    fig = figures.indicator_figure(info(warn=0.2), [points("fc1", [0, 1], [0.0, None])])
    data = figures.figure_json(fig)
    assert json.loads(json.dumps(data)) == data
    layout = data["layout"]
    assert layout["paper_bgcolor"] == layout["plot_bgcolor"] == "rgba(0,0,0,0)"
    # the default template would ship ~10 kB of styling per chart and paint white backgrounds
    assert len(json.dumps(layout["template"])) < 200


def test_themes_differ_only_in_neutral_colours() -> None:
    series = [points("fc1", [0, 1], [0.0, 0.1]), points("fc2", [0, 1], [0.3, 0.6])]
    light = chart(info(warn=0.2), series, theme=figures.LIGHT)
    dark = chart(info(warn=0.2), series, theme=figures.DARK)
    assert light.layout.font.color == figures.LIGHT.text
    assert dark.layout.font.color == figures.DARK.text
    assert dark.layout.yaxis.gridcolor == figures.DARK.grid
    assert [t.line.color for t in light.data] == [t.line.color for t in dark.data]


def test_theme_layout_is_a_relayout_patch_that_update_layout_accepts() -> None:
    patch = figures.theme_layout(figures.DARK)
    assert all("." in key for key in patch), "Plotly.relayout wants attribute strings"
    fig = chart(info(), [points("fc1", [0], [0.0])])
    fig.update_layout(patch)  # plotly.py validates every key: a typo raises here
    assert fig.layout.xaxis.gridcolor == figures.DARK.grid


@pytest.mark.parametrize(
    ("direction", "value", "expected"),
    [
        ("high_is_bad", 0.1, "ok"),
        ("high_is_bad", 0.2, "warn"),
        ("high_is_bad", 0.49, "warn"),
        ("high_is_bad", 0.5, "critical"),
        ("high_is_bad", 0.9, "critical"),
        ("low_is_bad", 0.9, "ok"),
        ("low_is_bad", 0.5, "warn"),
        ("low_is_bad", 0.2, "critical"),
        ("high_is_bad", None, "none"),
        ("high_is_bad", math.nan, "none"),
        ("info", 0.9, "none"),
    ],
)
def test_severity_honours_direction(direction: str, value: float | None, expected: str) -> None:
    thresholds_ = (
        {"warn": 0.2, "critical": 0.5}
        if direction != "low_is_bad"
        else {
            "warn": 0.5,
            "critical": 0.2,
        }
    )
    assert figures.severity(info(direction=direction, **thresholds_), value) == expected


def test_severity_without_thresholds_is_none() -> None:
    assert figures.severity(info(), 0.99) == "none"
    assert figures.severity(info(warn=0.2), 0.99) == "warn", "warn alone still flags"


def rule_line(value: float, severity: str, label: str = "my rule") -> Threshold:
    return Threshold.model_validate(
        {"value": value, "side": "above", "severity": severity, "label": label, "source": "rule"}
    )


def test_rule_thresholds_replace_the_catalogue_lines() -> None:
    fig = chart(
        info(warn=0.2, critical=0.5),
        [points("fc1", [0], [0.0])],
        thresholds=[rule_line(0.3, "critical"), rule_line(0.1, "info")],
    )
    assert thresholds(fig) == {"critical": 0.3, "info": 0.1}
    assert {s.line.color for s in fig.layout.shapes} == {
        figures.CRITICAL_COLOUR,
        figures.INFO_COLOUR,
    }
    no_lines = chart(info(warn=0.2), [points("fc1", [0], [0.0])], thresholds=[])
    assert thresholds(no_lines) == {}, "an empty list means: no rule draws a line"


def test_alert_markers_are_one_trace_after_the_probes() -> None:
    markers = [
        figures.Marker(12, 0.7, "firing", "critical", "fired"),
        figures.Marker(40, 0.1, "resolved", "critical", "resolved"),
    ]
    fig = chart(info(), [points("fc1", [0, 50], [0.0, 0.1])], markers=markers)
    assert [t.name for t in fig.data] == ["fc1", "alerts"]
    alerts = fig.data[1]
    assert alerts.uid == figures.ALERTS_UID
    assert list(alerts.x) == [12, 40]
    assert list(alerts.marker.symbol) == ["triangle-up", "circle-open"]
    assert list(alerts.marker.color) == [figures.CRITICAL_COLOUR, figures.RESOLVED_COLOUR]
    assert list(alerts.hovertext) == ["fired", "resolved"]


def test_a_crowded_chart_colours_only_the_highlighted_layers() -> None:
    series = [points(f"layer.{i}", [0, 1], [0.0, 0.1]) for i in range(200)]
    fig = chart(info(), series, highlight=["layer.150"])
    colours = [t.line.color for t in fig.data]
    assert colours[150] == figures.probe_colour(150)
    assert colours.count(figures.MUTED_COLOUR) == 199
    assert fig.layout.hovermode == "closest", "one hover box of 200 layers covers the chart"
    few = chart(info(), series[:4])
    assert figures.MUTED_COLOUR not in [t.line.color for t in few.data]
    assert few.layout.hovermode == "x unified"


def test_beside_a_heatmap_a_crowded_chart_draws_only_the_worst_layers() -> None:
    layers = [f"layer.{i}" for i in range(200)]
    worst = ["layer.150", "layer.3"] + [f"layer.{i}" for i in range(100, 120)]
    drawn = figures.drawn_probes(layers, worst)
    assert drawn == ["layer.3", *[f"layer.{i}" for i in range(100, 108)], "layer.150"], (
        "the palette's worth of the worst, in model order"
    )
    assert figures.drawn_probes(layers[:10], []) == layers[:10], "a palette's worth: all"


def test_a_chart_of_the_worst_layers_says_so_and_colours_each() -> None:
    series = [points(f"layer.{i}", [0, 1], [0.0, 0.1]) for i in range(10)]
    fig = chart(info(), series, worst_of=200)
    notes = [a.text for a in fig.layout.annotations if a.name == "worst_of"]
    assert notes == ["the 10 worst of 200 layers; every layer in the heatmap"]
    assert fig.layout.meta["worst_of"] == 200, "the page adds no line live for the others"
    colours = [t.line.color for t in fig.data]
    assert len(set(colours)) == 10 and figures.MUTED_COLOUR not in colours
    every = chart(info(), series, worst_of=10)
    assert not every.layout.annotations and "worst_of" not in every.layout.meta


def test_a_resumed_run_shows_a_gap_and_a_line_where_it_resumed() -> None:
    fig = figures.indicator_figure(
        info(), [points("fc1", [0, 2, 4, 10, 12], [0.1, 0.2, 0.3, 0.4, 0.5])], resumed=[10]
    )
    trace = figures.figure_json(fig)["data"][0]
    assert trace["x"] == [0, 2, 4, 10, 10, 12]
    assert trace["y"] == [0.1, 0.2, 0.3, None, 0.4, 0.5], "the line breaks at the resume"
    lines = [s for s in plotly(fig).layout.shapes if s.x0 == s.x1 == 10]
    assert len(lines) == 1 and lines[0].name == "resumed"


def test_a_nan_step_is_marked_not_only_a_gap() -> None:
    """A loss that turns NaN at step 3: an x at each NaN step, at the last finite value, and a
    dotted line at the first one; a series with only finite values gets neither."""
    loss = points("loss", [0, 1, 2, 3, 4], [0.9, 0.8, 0.7, None, None])
    data = figures.figure_json(figures.indicator_figure(info(), [loss]))
    marks = [t for t in data["data"] if t.get("uid") == figures.NONFINITE_UID]
    assert len(marks) == 1
    assert marks[0]["x"] == [3, 4] and marks[0]["y"] == [0.7, 0.7]
    assert marks[0]["marker"]["symbol"] == "x"
    assert data["data"][0]["y"] == [0.9, 0.8, 0.7, None, None]  # the line keeps its gap
    lines = [s for s in data["layout"]["shapes"] if s.get("name") == "nonfinite"]
    assert [s["x0"] for s in lines] == [3]
    assert "NaN at step 3" in [a["text"] for a in data["layout"]["annotations"]]
    from_start = chart(info(), [points("loss", [0, 1], [None, None])])
    assert list(from_start.data[-1].y) == [0.0, 0.0]
    finite = chart(info(), [points("loss", [0, 1], [0.5, 0.4])])
    assert all(t.uid != figures.NONFINITE_UID for t in finite.data)
