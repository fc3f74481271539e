"""Where runs stand, for the runs, run and alerts pages: the worst alert state of each
indicator family, and what fires now (HTTP API v1)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from collapsewatch_web.api_schemas.alerts import AlertEventPublic, Severity
from collapsewatch_web.api_schemas.runs import RunPublic

#: A family's worst alert state on a run: firing at a severity, else pending, else ok; also
#: the CSS classes (``state-<state>``) of the health chips.
HealthState = Literal["critical", "warning", "info", "pending", "ok"]


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
