"""What the run and compare pages draw, as the dashboards' JSON endpoints serve it: binned
series, the thresholds in force, each probe's newest value judged against them, figures and
covariance spectra (HTTP API v1).

Figures travel as Plotly JSON (``{"data", "layout"}``) built on the server by
``collapsewatch_web``; the browser only draws them and extends them live.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from collapsewatch_web.api_schemas.alerts import Severity, Side
from collapsewatch_web.api_schemas.runs import SeriesPoints

#: How a value stands against its thresholds, worst first; also the CSS classes
#: (``severity-<judgement>``) the pages colour values with.
Judgement = Literal["critical", "warn", "info", "ok", "none"]


class ProbeBins(BaseModel):
    """One probe's points of an indicator, cut into the step bins of :class:`IndicatorBins`.

    Only bins holding points are listed. ``low`` and ``high`` are the extreme finite values of
    a bin (``None`` when every point of the bin was NaN or infinite, which ``nonfinite``
    counts); a bin of one point is that point exactly.
    """

    probe: str
    index: list[int] = Field(description="bin numbers, ascending")
    first_step: list[int]
    last_step: list[int]
    low: list[float | None]
    high: list[float | None]
    count: list[int]
    nonfinite: list[int]


class IndicatorBins(BaseModel):
    """Every probe's points of one indicator of a run on a common step grid: bin ``i`` holds
    steps ``start + i * width`` to ``start + (i + 1) * width - 1``."""

    indicator: str
    start: int
    width: int = Field(ge=1)
    bins: int = Field(ge=0)
    total: int = Field(description="points stored")
    probes: list[ProbeBins] = Field(description="model order")


class Threshold(BaseModel):
    """A level an indicator is judged against: an enabled rule's, or the catalogue's default
    when no enabled rule watches the indicator."""

    value: float
    side: Side = Field(description="bad when the value is past it this way")
    severity: Severity
    label: str
    probe: str = Field(default="*", description="fnmatch glob of the probes it applies to")
    source: Literal["rule", "catalogue"]


class LatestValue(BaseModel):
    """A probe's newest point of an indicator and how it stands. The live stream of a run
    sends its new points in this shape, judged by the server."""

    indicator: str
    probe: str
    step: int | None = None
    value: float | None = None
    judgement: Judgement = "none"
    threshold: float | None = Field(default=None, description="the level crossed, if any")
    margin: float = Field(default=0.0, description="how far past it, relative to it")


class IndicatorFigures(BaseModel):
    """``GET /api/v1/runs/{run_id}/figures/{indicator}``: what the run page draws of one
    indicator, from one binned read."""

    indicator: str
    lines: dict[str, Any] = Field(description="Plotly figure: a line per probe")
    heatmap: dict[str, Any] | None = Field(description="Plotly figure: layers x steps")
    latest: list[LatestValue] = Field(description="worst first")
    thresholds: list[Threshold]
    total: int
    bin_width: int


class SpectrumPublic(BaseModel):
    """Covariance eigenvalues of a probe at the nearest sampled step at or before ``asked``."""

    probe: str
    asked: int
    step: int
    eigenvalues: list[float] = Field(description="descending")
    width: int | None = None


class SpectrumView(BaseModel):
    """``GET /api/v1/runs/{run_id}/spectrum``: a probe's spectrum at a step beside an earlier
    one (the run's first by default), and their figure."""

    probe: str
    spectra: list[SpectrumPublic]
    figure: dict[str, Any]


class ComparePublic(BaseModel):
    """``GET /api/v1/compare``: one indicator on one probe across runs, and its figure."""

    indicator: str
    probe: str
    series: list[SeriesPoints]
    figure: dict[str, Any]
