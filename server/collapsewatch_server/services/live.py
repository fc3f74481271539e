"""What a live run page polls: the points stored since its cursor, judged by the server
against the thresholds in force (the page shows judgements, it does not make them)."""

from __future__ import annotations

import uuid

from collapsewatch_server.services import charts, runs
from collapsewatch_server.services.context import ServiceContext
from collapsewatch_web import views
from collapsewatch_web.api_schemas.charts import LatestValue, Threshold


def thresholds_of(ctx: ServiceContext, run_id: uuid.UUID) -> dict[str, list[Threshold]]:
    """The thresholds in force on a run, per indicator (NotFound for an unknown run)."""
    return charts.run_thresholds(ctx, runs.get_run(ctx, run_id))


def judged_points_since(
    ctx: ServiceContext,
    run_id: uuid.UUID,
    cursor: int,
    thresholds: dict[str, list[Threshold]],
    limit: int = 5000,
) -> tuple[list[LatestValue], int]:
    """The run's points stored after ``cursor`` (a point id), each judged against its
    indicator's ``thresholds``, and the new cursor."""
    new, cursor = runs.points_since(ctx, run_id, cursor, limit)
    return views.latest_values(new, thresholds), cursor
