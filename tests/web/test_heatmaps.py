"""The layer x step heatmap, the spectrum and the binned lines as data: no server, no browser."""

from __future__ import annotations

import json
from typing import Any

import plotly.graph_objects as go
import pytest

from collapsewatch.schemas import ProbeKind
from collapsewatch_web import figures, heatmaps
from collapsewatch_web.api_schemas.catalogue import IndicatorInfo
from collapsewatch_web.api_schemas.charts import IndicatorBins, ProbeBins, SpectrumPublic, Threshold


def info(direction: str = "high_is_bad") -> IndicatorInfo:
    return IndicatorInfo(
        name="dead_fraction",
        title="Dead units",
        family="dead_units",
        applies_to=ProbeKind.activation,
        direction=direction,  # type: ignore[arg-type]
        meaning="m",
        what_to_try="w",
    )


def raw_bins(series: dict[str, list[float | None]], width: int) -> IndicatorBins:
    """Bin one point per step the way the store does: per bin the extremes and counts."""
    probes = []
    steps = max(len(v) for v in series.values())
    for name, values in series.items():
        pb: dict[str, list[Any]] = {
            k: [] for k in ("index", "first_step", "last_step", "low", "high", "count", "nonfinite")
        }
        for b in range(0, steps, width):
            chunk = [(s, v) for s, v in enumerate(values[b : b + width], start=b)]
            finite = [v for _, v in chunk if v is not None]
            pb["index"].append(b // width)
            pb["first_step"].append(chunk[0][0])
            pb["last_step"].append(chunk[-1][0])
            pb["low"].append(min(finite) if finite else None)
            pb["high"].append(max(finite) if finite else None)
            pb["count"].append(len(chunk))
            pb["nonfinite"].append(len(chunk) - len(finite))
        probes.append(ProbeBins(probe=name, **pb))
    return IndicatorBins(
        indicator="dead_fraction",
        start=0,
        width=width,
        bins=(steps + width - 1) // width,
        total=sum(len(v) for v in series.values()),
        probes=probes,
    )


def heatmap(*args: Any, **kwargs: Any) -> go.Figure:
    """:func:`heatmaps.heatmap_figure` as plotly.py reads it: it validates every property, so a
    misspelt key or a value Plotly does not take fails the test."""
    return go.Figure(heatmaps.heatmap_figure(*args, **kwargs))


def critical(value: float, side: str = "above") -> Threshold:
    return Threshold.model_validate(
        {"value": value, "side": side, "severity": "critical", "label": "c", "source": "rule"}
    )


def test_layers_on_y_in_model_order_first_on_top_steps_on_x() -> None:
    order = ["encoder.0", "encoder.1", "decoder.0", "head"]
    bins = raw_bins({p: [0.0] * 40 for p in order}, width=10)
    fig = figures.figure_json(heatmaps.heatmap_figure(info(), bins, [critical(0.5)]))
    heat = fig["data"][0]
    assert heat["type"] == "heatmap"
    assert heat["y"] == order, "rows in model order"
    assert fig["layout"]["yaxis"]["autorange"] == "reversed", "the first layer on top"
    assert heat["x"] == [0, 10, 20, 30], "columns are step bins, left to right"
    assert len(heat["z"]) == len(order)
    assert all(len(row) == 4 for row in heat["z"])
    assert fig["layout"]["xaxis"]["title"]["text"] == "step"


def test_the_left_margin_holds_the_longest_layer_name_without_measuring_it() -> None:
    short = heatmaps.heatmap_figure(info(), raw_bins({"fc1": [0.0], "fc2": [0.0]}, width=1))
    long = heatmaps.heatmap_figure(info(), raw_bins({"encoder.layers.11.mlp": [0.0]}, width=1))
    assert "automargin" not in short["layout"]["yaxis"], "Plotly would draw the chart twice"
    assert short["layout"]["margin"]["l"] < long["layout"]["margin"]["l"]
    assert long["layout"]["margin"]["l"] >= 7 * len("encoder.layers.11.mlp")
    assert heatmaps.label_margin(["x" * 500]) == heatmaps.MAX_LABEL_PX


def test_the_collapsed_layer_is_hot_after_its_step_and_only_there() -> None:
    # fc2 dies at step 25; a one-step spike in fc3 at step 7 must not average away
    series: dict[str, list[float | None]] = {
        "fc1": [0.0] * 50,
        "fc2": [0.0] * 25 + [0.8] * 25,
        "fc3": [0.0] * 7 + [0.9] + [0.0] * 42,
    }
    z = heatmap(info(), raw_bins(series, width=5), [critical(0.5)]).data[0].z
    assert list(z[1]) == [0.0] * 5 + [0.8] * 5
    assert z[2][1] == 0.9, "the worst value of the bin, not its mean"
    assert max(z[0]) == 0.0


def test_low_is_bad_takes_the_lowest_value_of_a_bin() -> None:
    series: dict[str, list[float | None]] = {"fc1": [1.0, 1.0, 0.05, 1.0]}
    _, z, _ = heatmaps.heatmap_matrix(info("low_is_bad"), raw_bins(series, width=4))
    assert z == [[0.05]]


def test_empty_bins_are_left_out_and_nan_bins_take_the_bad_end() -> None:
    bins = raw_bins({"fc1": [0.1, 0.2, None, None], "fc2": [0.1, 0.1, 0.3, 0.2]}, width=2)
    # a run sampled every 10 steps: bins of one step, most of them empty
    sparse = bins.model_copy(update={"width": 1, "bins": 20})
    sparse.probes[0].index[1] = sparse.probes[1].index[1] = 19
    columns, _, _ = heatmaps.heatmap_matrix(info(), sparse)
    assert columns == [0, 19], "only bins holding a point become columns"
    fig = heatmap(info(), bins, [critical(0.5)])
    heat = fig.data[0]
    assert heat.z[0][1] == heat.zmax, "NaN is alarming: the bad end of the scale"
    assert list(heat.text[0]) == ["", "NaN"]


def test_colours_are_calm_below_the_threshold_and_hot_past_it() -> None:
    scale = heatmaps.colour_scale(info(), [critical(0.5)], 0.0, 1.0)
    positions = [p for p, _ in scale]
    assert positions == sorted(positions)
    assert scale[0] == [0.0, heatmaps.CALM]
    assert [0.5, heatmaps.CALM_EDGE] in scale, "a value at the threshold is not past it"
    assert figures.CRITICAL_COLOUR in [c for p, c in scale if p > 0.5]
    assert scale[-1] == [1.0, heatmaps.DARK_COLOURS["critical"]]
    low = heatmaps.colour_scale(info("low_is_bad"), [critical(0.2, "below")], 0.0, 1.0)
    assert low[-1] == [1.0, heatmaps.CALM], "low is bad: zmax is the calm end"
    assert low[0][1] == heatmaps.DARK_COLOURS["critical"]


def test_without_thresholds_the_scale_is_neutral() -> None:
    assert heatmaps.colour_scale(info(), [], 0.0, 1.0) == heatmaps.INFO_SCALE
    assert heatmaps.colour_scale(info("info"), [critical(0.5)], 0, 1) == heatmaps.INFO_SCALE


def test_heatmap_markers_sit_on_the_layer_row() -> None:
    bins = raw_bins({"fc1": [0.0] * 10, "fc2": [0.9] * 10}, width=2)
    marker = figures.Marker(4, 0.9, status="firing", severity="critical", text="t", probe="fc2")
    fig = heatmap(info(), bins, markers=[marker])
    assert list(fig.data[1].x) == [4]
    assert list(fig.data[1].y) == ["fc2"]


def test_heatmap_json_is_plain_json() -> None:
    bins = raw_bins({"fc1": [0.0, None, 0.5], "fc2": [0.1, 0.2, 0.3]}, width=1)
    data = figures.figure_json(heatmaps.heatmap_figure(info(), bins, [critical(0.5)]))
    assert json.loads(json.dumps(data, allow_nan=False)) == data
    assert data["layout"]["meta"] == {
        "indicator": "dead_fraction",
        "start": 0,
        "width": 1,
        "worst": "max",
    }


def test_spectrum_shares_on_a_log_axis_one_line_per_step() -> None:
    spectra = [
        SpectrumPublic(probe="fc1", asked=0, step=0, eigenvalues=[2.0, 1.0, 1.0]),
        SpectrumPublic(probe="fc1", asked=90, step=80, eigenvalues=[4.0, 0.0]),
    ]
    fig = go.Figure(heatmaps.spectrum_figure(spectra))
    assert [t.name for t in fig.data] == ["step 0", "step 80"]
    assert list(fig.data[0].y) == pytest.approx([0.5, 0.25, 0.25])
    assert list(fig.data[1].y) == [1.0, None], "a zero eigenvalue has no place on a log axis"
    assert list(fig.data[0].x) == [1, 2, 3]
    assert fig.layout.yaxis.type == "log"


def test_lines_from_bins_keep_extremes_in_the_lines_direction() -> None:
    falling: list[float | None] = [1.0 - i / 100 for i in range(100)]
    spike = [0.0] * 100
    spike[55] = 1.0
    bins = raw_bins({"falling": falling, "spike": spike}, width=10)
    lines = {s.probe: s for s in figures.lines_from_bins(bins)}
    assert lines["falling"].steps[:2] == [0, 9]
    assert lines["falling"].values[:2] == [1.0, pytest.approx(0.91)], "starts where it starts"
    assert max(v for v in lines["spike"].values if v is not None) == 1.0
    assert lines["spike"].total == 100
    assert lines["spike"].downsampled is True
    exact = figures.lines_from_bins(raw_bins({"fc1": [0.1, None, 0.3]}, width=1))[0]
    assert exact.steps == [0, 1, 2]
    assert exact.values == [0.1, None, 0.3], "a NaN stays a gap"
    assert exact.downsampled is False
