"""Read API: health, projects, runs, series, points and the indicator catalogue."""

from __future__ import annotations

import re
import uuid
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response, StreamingResponse

from collapsewatch._version import __version__
from collapsewatch_server.api.deps import ContextDep, ReadAuth
from collapsewatch_server.indicators import CATALOGUE
from collapsewatch_server.services import export, projects, runs
from collapsewatch_web.api_schemas.catalogue import IndicatorInfo
from collapsewatch_web.api_schemas.runs import (
    HealthPublic,
    ProjectPublic,
    RunDetail,
    RunPublic,
    RunTags,
    SeriesKey,
    SeriesPoints,
)

router = APIRouter()
api = APIRouter(prefix="/api/v1", tags=["read"], dependencies=[ReadAuth])


@router.get("/healthz", response_model=HealthPublic, tags=["meta"])
def healthz(ctx: ContextDep) -> HealthPublic:
    """Liveness and whether the database answers (no auth: load balancers call it)."""
    ok = ctx.db.ping()
    return HealthPublic(
        status="ok" if ok else "degraded", store="ok" if ok else "unreachable", version=__version__
    )


@api.get("/projects", response_model=list[ProjectPublic])
def list_projects(ctx: ContextDep) -> list[ProjectPublic]:
    return projects.list_projects(ctx)


@api.get("/runs", response_model=list[RunPublic])
def list_runs(
    ctx: ContextDep,
    project: str | None = None,
    tag: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> list[RunPublic]:
    """Runs, newest first (of one project, carrying one tag, when given)."""
    return runs.list_runs(ctx, project, limit=limit, tag=tag)


@api.get("/runs/{run_id}", response_model=RunDetail)
def get_run(run_id: uuid.UUID, ctx: ContextDep) -> RunDetail:
    return runs.get_run(ctx, run_id)


@api.delete("/runs/{run_id}", status_code=204, responses={404: {}})
def delete_run(run_id: uuid.UUID, ctx: ContextDep) -> Response:
    """Delete a run with all its data: probes, series, points, raw statistics, alerts and
    their deliveries (admin token required once one is configured). Not undoable."""
    runs.delete_run(ctx, run_id)
    return Response(status_code=204)


@api.put("/runs/{run_id}/tags", response_model=RunTags, responses={404: {}, 422: {}})
def put_tags(run_id: uuid.UUID, body: RunTags, ctx: ContextDep) -> RunTags:
    """Replace the run's tags (the SDK's ``watch(tags=...)`` sets them when the run starts)."""
    return RunTags(tags=runs.set_tags(ctx, run_id, body.tags))


@api.get("/runs/{run_id}/series", response_model=list[SeriesKey])
def list_series(run_id: uuid.UUID, ctx: ContextDep) -> list[SeriesKey]:
    return runs.list_series(ctx, run_id)


@api.get("/runs/{run_id}/series/{indicator}", response_model=SeriesPoints)
def get_points(
    run_id: uuid.UUID,
    indicator: str,
    ctx: ContextDep,
    probe: Annotated[str, Query(min_length=1)],
    max_points: Annotated[int, Query(ge=2, le=100_000)] = 2000,
) -> SeriesPoints:
    """Points of one series; above ``max_points`` each bucket keeps its min and max."""
    return runs.get_points(ctx, run_id, indicator, probe, max_points)


@api.get(
    "/runs/{run_id}/export",
    response_class=Response,
    responses={
        200: {"content": {"text/csv": {}, "application/vnd.apache.parquet": {}}},
        501: {"description": "Parquet asked and pyarrow is not installed on the server"},
    },
)
def export_run(
    run_id: uuid.UUID,
    ctx: ContextDep,
    format: export.ExportFormat = "csv",
    indicator: Annotated[str | None, Query(min_length=1)] = None,
    probe: Annotated[str | None, Query(min_length=1)] = None,
) -> Response:
    """Every point of every series of a run (or of one indicator and/or probe), unreduced, in
    long format: ``probe, indicator, step, value`` (a non-finite value is empty/null).
    Parquet needs pyarrow on the server (501 without it)."""
    parts = [str(run_id), indicator, probe]
    # a header is latin-1 and a file name has no quotes or slashes: anything else becomes _
    filename = re.sub(r"[^A-Za-z0-9._-]", "_", "-".join(p for p in parts if p)) + f".{format}"
    headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
    if format == "parquet":
        body = export.run_parquet(ctx, run_id, indicator, probe)
        return Response(body, media_type=export.MEDIA_TYPES[format], headers=headers)
    chunks = export.run_csv(ctx, run_id, indicator, probe)
    return StreamingResponse(chunks, media_type=export.MEDIA_TYPES[format], headers=headers)


@api.get("/indicators", response_model=list[IndicatorInfo])
def list_indicators() -> list[IndicatorInfo]:
    return [ind.info() for ind in CATALOGUE.values()]
