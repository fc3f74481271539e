"""Read API: health, projects, runs, series, points and the indicator catalogue."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from collapsewatch._version import __version__
from collapsewatch_server.api.deps import ReadAuth, StoreDep
from collapsewatch_server.indicators import CATALOGUE
from collapsewatch_web.api_schemas.catalogue import IndicatorInfo
from collapsewatch_web.api_schemas.runs import (
    HealthPublic,
    ProjectPublic,
    RunDetail,
    RunPublic,
    SeriesKey,
    SeriesPoints,
)

router = APIRouter()
api = APIRouter(prefix="/api/v1", tags=["read"], dependencies=[ReadAuth])


@router.get("/healthz", response_model=HealthPublic, tags=["meta"])
def healthz(store: StoreDep) -> HealthPublic:
    """Liveness and whether the database answers (no auth: load balancers call it)."""
    ok = store.ping()
    return HealthPublic(
        status="ok" if ok else "degraded", store="ok" if ok else "unreachable", version=__version__
    )


@api.get("/projects", response_model=list[ProjectPublic])
def list_projects(store: StoreDep) -> list[ProjectPublic]:
    return store.list_projects()


@api.get("/runs", response_model=list[RunPublic])
def list_runs(
    store: StoreDep,
    project: str | None = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> list[RunPublic]:
    """Runs, newest first."""
    return store.list_runs(project, limit)


@api.get("/runs/{run_id}", response_model=RunDetail)
def get_run(run_id: uuid.UUID, store: StoreDep) -> RunDetail:
    return store.get_run(run_id)


@api.get("/runs/{run_id}/series", response_model=list[SeriesKey])
def list_series(run_id: uuid.UUID, store: StoreDep) -> list[SeriesKey]:
    return store.list_series(run_id)


@api.get("/runs/{run_id}/series/{indicator}", response_model=SeriesPoints)
def get_points(
    run_id: uuid.UUID,
    indicator: str,
    store: StoreDep,
    probe: Annotated[str, Query(min_length=1)],
    max_points: Annotated[int, Query(ge=2, le=100_000)] = 2000,
) -> SeriesPoints:
    """Points of one series; above ``max_points`` each bucket keeps its min and max."""
    return store.get_points(run_id, indicator, probe, max_points)


@api.get("/indicators", response_model=list[IndicatorInfo])
def list_indicators() -> list[IndicatorInfo]:
    return [ind.info() for ind in CATALOGUE.values()]
