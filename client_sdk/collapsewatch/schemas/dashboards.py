"""Schemas of the dashboards' JSON endpoints: binned series, figures, health, spectra,
rule back-tests and ingest-token management (HTTP API v1).

Figures travel as Plotly JSON (``{"data", "layout"}``) built on the server by
``collapsewatch_web``; the browser only draws them and extends them live.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from collapsewatch.schemas import RunPublic, SeriesPoints
from collapsewatch.schemas.alerts import AlertEventPublic, RuleCreate, Severity

#: How a value stands against its thresholds, worst first (CSS classes of the dashboards).
Judgement = Literal["critical", "warn", "info", "ok", "none"]
#: A family's worst alert state on a run: firing at a severity, else pending, else ok.
HealthState = Literal["critical", "warning", "info", "pending", "ok"]


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
    side: Literal["above", "below"] = Field(description="bad when the value is past it this way")
    severity: Severity
    label: str
    probe: str = Field(default="*", description="fnmatch glob of the probes it applies to")
    source: Literal["rule", "catalogue"]


class LatestValue(BaseModel):
    """A probe's newest point of an indicator and how it stands."""

    indicator: str
    probe: str
    step: int | None = None
    value: float | None = None
    judgement: Judgement = "none"
    threshold: float | None = Field(default=None, description="the level crossed, if any")
    margin: float = Field(default=0.0, description="how far past it, relative to it")


class IndicatorFigures(BaseModel):
    """``GET /api/v1/runs/{run_id}/figures/{indicator}``: what the run page draws of one
    indicator, read in one store call."""

    indicator: str
    lines: dict[str, Any] = Field(description="Plotly figure: a line per probe")
    heatmap: dict[str, Any] | None = Field(description="Plotly figure: layers x steps")
    latest: list[LatestValue] = Field(description="worst first")
    thresholds: list[Threshold]
    total: int
    bin_width: int


class FamilyHealth(BaseModel):
    """Where one indicator family of a run stands: its worst alert state."""

    family: str
    title: str
    state: HealthState
    firing: int = 0
    pending: int = 0


class RunHealth(BaseModel):
    """``GET /api/v1/runs/{run_id}/health``: open alerts by family and the latest events."""

    run_id: uuid.UUID
    families: list[FamilyHealth]
    open_alerts: int
    recent: list[AlertEventPublic]


class RunOverview(RunPublic):
    """A run on the runs page: the listed run with its health per family."""

    health: list[FamilyHealth] = Field(default_factory=list)


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


class BacktestRequest(BaseModel):
    """``POST /api/v1/projects/{project}/rules/backtest``: replay ``rule`` over a stored run."""

    model_config = ConfigDict(extra="forbid")

    run_id: uuid.UUID
    rule: RuleCreate
    max_points: int = Field(default=1000, ge=10, le=100_000, description="per probe, for display")


class FiringAlert(BaseModel):
    """A (rule, run, probe) firing now, for the alerts page."""

    project: str
    run_id: uuid.UUID
    run_name: str
    rule_id: int
    rule_name: str
    indicator: str
    probe: str
    severity: Severity
    since: datetime | None = None
    last_step: int | None = None
    last_value: float | None = None


class BacktestEvent(BaseModel):
    """An event the rule would have raised."""

    probe: str
    status: Literal["firing", "resolved"]
    severity: Severity
    step: int
    value: float | None
    threshold: float | None
    message: str


class BacktestResult(BaseModel):
    """What the rule would have done on the run: its events, the points it judged
    (downsampled for display) and a figure with both."""

    run_id: uuid.UUID
    run_name: str
    run_matches: bool = Field(description="the rule's run glob matches this run")
    probes: list[str] = Field(description="probes the rule watches on this run")
    points_judged: int
    events: list[BacktestEvent]
    series: list[SeriesPoints]
    figure: dict[str, Any]
