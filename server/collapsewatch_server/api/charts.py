"""JSON endpoints of the dashboards: figures per indicator, spectra, health, runs overview,
comparisons and rule back-tests. Each is one call into a service (:mod:`.services.charts`,
:mod:`.services.alerts`, :mod:`.services.backtest`).

Figure building is CPU work on data read synchronously, so these are plain ``def`` routes,
run in FastAPI's threadpool.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response

from collapsewatch.schemas.bounds import MAX_STEP
from collapsewatch_server import errors
from collapsewatch_server.api.deps import ContextDep, ReadAuth
from collapsewatch_server.services import alerts, charts, figure_tags
from collapsewatch_server.services.backtest import backtest as run_backtest
from collapsewatch_server.services.runs import list_runs
from collapsewatch_web.api_schemas.backtest import BacktestRequest, BacktestResult
from collapsewatch_web.api_schemas.charts import ComparePublic, IndicatorFigures, SpectrumView
from collapsewatch_web.api_schemas.health import FiringAlert, RunHealth, RunOverview

router = APIRouter(prefix="/api/v1", tags=["dashboards"], dependencies=[ReadAuth])

_RUN_ERRORS: dict[int | str, dict[str, str]] = {
    404: {"description": "unknown run, or nothing of that kind in it"}
}
#: Runs one comparison may overlay.
MAX_COMPARED = 12
COMPARE_TOO_MANY = f"compare at most {MAX_COMPARED} runs"
COMPARE_BAD_ID = "runs must be comma-separated run ids; {value!r} is not one"


@router.get(
    "/runs/{run_id}/figures/{indicator}", response_model=IndicatorFigures, responses=_RUN_ERRORS
)
def indicator_figures(
    run_id: uuid.UUID,
    indicator: str,
    ctx: ContextDep,
    response: Response,
    max_points: Annotated[
        int | None, Query(ge=4, le=20_000, description="per probe; default: by probe count")
    ] = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> IndicatorFigures | Response:
    """The line chart (a line per probe, thresholds of the enabled rules, alert markers) and
    the layer x step heatmap (worst value per step bin) of one indicator, from one read.

    With an ``ETag``: asked again with ``If-None-Match`` and nothing they are drawn from has
    changed, the answer is 304 and the client draws what it has."""
    tag = figure_tags.figures_tag(ctx, run_id, indicator, max_points)
    headers = {"ETag": tag, "Cache-Control": "no-cache"}  # kept, and asked again each time
    if if_none_match is not None and tag in (t.strip() for t in if_none_match.split(",")):
        return Response(status_code=304, headers=headers)
    response.headers.update(headers)
    return charts.indicator_figures(ctx, run_id, indicator, max_points)


@router.get("/runs/{run_id}/spectrum", response_model=SpectrumView, responses=_RUN_ERRORS)
def spectrum(
    run_id: uuid.UUID,
    ctx: ContextDep,
    probe: Annotated[str, Query(min_length=1)],
    step: Annotated[int, Query(ge=0, le=MAX_STEP)],
    against: Annotated[
        int | None, Query(ge=0, le=MAX_STEP, description="default: the first step")
    ] = None,
) -> SpectrumView:
    """A probe's covariance eigenvalues at the sampled step nearest at or before ``step``,
    beside those at ``against``."""
    return charts.spectrum_view(ctx, run_id, probe, step, against)


@router.get("/runs/{run_id}/health", response_model=RunHealth, responses=_RUN_ERRORS)
def run_health(run_id: uuid.UUID, ctx: ContextDep) -> RunHealth:
    """Open alerts of a run by indicator family, and its latest alert events."""
    return charts.run_health(ctx, run_id, charts.run_families(ctx, run_id))


@router.get("/overview", response_model=list[RunOverview], responses={404: {}})
def overview(
    ctx: ContextDep,
    project: str | None = None,
    q: Annotated[str | None, Query(max_length=128, description="part of the run name")] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
    tag: Annotated[str | None, Query(max_length=64, description="runs carrying it")] = None,
) -> list[RunOverview]:
    """Runs newest first, each with its worst alert state per indicator family."""
    return charts.runs_overview(ctx, list_runs(ctx, project, q, limit, tag or None))


@router.get("/firing", response_model=list[FiringAlert], responses={404: {}})
def firing(
    ctx: ContextDep,
    project: str | None = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 200,
) -> list[FiringAlert]:
    """Every (rule, run, probe) firing now under an enabled rule, newest first."""
    return alerts.firing_alerts(ctx, project, limit)


@router.get("/compare", response_model=ComparePublic, responses={404: {}, 422: {}})
def compare(
    ctx: ContextDep,
    runs: Annotated[str, Query(min_length=1, description="comma-separated run ids")],
    indicator: Annotated[str, Query(min_length=1)],
    probe: Annotated[str, Query(min_length=1)],
    max_points: Annotated[int, Query(ge=4, le=20_000)] = 1000,
) -> ComparePublic:
    """One indicator on one probe, a line per run."""
    return charts.compare(ctx, parse_run_ids(runs), indicator, probe, max_points)


@router.post(
    "/projects/{project}/rules/backtest",
    response_model=BacktestResult,
    tags=["alerts"],
    responses={404: {"description": "unknown project or run"}, 422: {}},
)
def backtest(project: str, request: BacktestRequest, ctx: ContextDep) -> BacktestResult:
    """Replay a rule (not saved) over a stored run of the project with the alert engine: the
    events it would have raised, the points it judged and a chart of both."""
    return run_backtest(ctx, project, request)


def parse_run_ids(text: str) -> list[uuid.UUID]:
    """``a,b,c`` -> run ids, in order, without repeats (422 on ``runs`` otherwise)."""
    out: list[uuid.UUID] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            run_id = uuid.UUID(part)
        except ValueError:
            raise errors.Invalid(
                COMPARE_BAD_ID.format(value=part[:64]), loc=("query", "runs")
            ) from None
        if run_id not in out:
            out.append(run_id)
    if len(out) > MAX_COMPARED:
        raise errors.Invalid(COMPARE_TOO_MANY, loc=("query", "runs"))
    return out
