"""The read API of runs: health, projects, runs with their probes, series and their points."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from collapsewatch.schemas import MAX_TAGS, FamilyCoverage, ProbeKind, RunStatus, Tag


class HealthPublic(BaseModel):
    """``GET /healthz``."""

    status: Literal["ok", "degraded"]
    store: Literal["ok", "unreachable"]
    version: str


class ProjectPublic(BaseModel):
    name: str
    created_at: datetime
    runs: int


class RunPublic(BaseModel):
    """A run as listed: newest first on ``GET /api/v1/runs``."""

    run_id: uuid.UUID
    project: str
    name: str
    status: RunStatus
    started_at: datetime
    last_seen_at: datetime
    finished_at: datetime | None = None
    last_step: int | None = None
    open_alerts: int = 0
    tags: list[str] = Field(default_factory=list, description="alphabetical")


class RunTags(BaseModel):
    """``PUT /api/v1/runs/{run_id}/tags``: the run's tags, replaced whole."""

    tags: list[Tag] = Field(max_length=MAX_TAGS)


class ProbePublic(BaseModel):
    name: str
    kind: ProbeKind
    module: str
    order: int
    width: int | None = None
    params: int = 0


class SamplingInterval(BaseModel):
    """From ``step`` on, the SDK sampled one step in ``every``."""

    step: int
    every: int


class RunDetail(RunPublic):
    """One run with its metadata and probes (model order)."""

    config: dict[str, Any] = Field(default_factory=dict)
    host: str = ""
    torch_version: str = ""
    sdk_version: str = ""
    probes: list[ProbePublic] = Field(default_factory=list)
    #: By collapse family: whether the SDK watches the run for it, and what to add if not.
    coverage: dict[str, FamilyCoverage] = Field(default_factory=dict)
    #: How the run was sampled: the interval as it changed over the run.
    sampling: list[SamplingInterval] = Field(default_factory=list)


class SeriesKey(BaseModel):
    """One series of a run: an indicator on a probe."""

    indicator: str
    probe: str
    points: int
    last_step: int | None = None
    last_value: float | None = None


class SeriesPoints(BaseModel):
    """Points of one series, downsampled on the server; ``None`` stands for NaN/inf."""

    indicator: str
    probe: str
    steps: list[int]
    values: list[float | None]
    total: int = Field(description="points stored before downsampling")
    downsampled: bool


class PointEvent(BaseModel):
    """One indicator point of a run: a series' newest, or one just stored."""

    indicator: str
    probe: str
    step: int
    value: float | None
