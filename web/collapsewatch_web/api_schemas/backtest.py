"""Rule back-tests (``POST /api/v1/projects/{project}/rules/backtest``): what a rule, not
saved, would have done on a stored run."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from collapsewatch_web.api_schemas.alerts import RuleCreate, Severity
from collapsewatch_web.api_schemas.runs import SeriesPoints


class BacktestRequest(BaseModel):
    """Replay ``rule`` over a stored run of the project."""

    model_config = ConfigDict(extra="forbid")

    run_id: uuid.UUID
    rule: RuleCreate
    max_points: int = Field(default=1000, ge=10, le=100_000, description="per probe, for display")


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
    note: str | None = Field(
        default=None,
        description="replayed on the stored indicator points; set when raw statistics are "
        "deleted by the retention policy",
    )
