"""Reading runs: lists, one run with its probes, its series and their points, and what a
live page polls."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime

import numpy as np

from collapsewatch.schemas import RunStatus
from collapsewatch_server import rollups
from collapsewatch_server.downsample import minmax_downsample
from collapsewatch_server.repositories import (
    point_rollups,
    points,
    probes,
    projects,
    run_deletion,
    run_tags,
    runs,
)
from collapsewatch_server.repositories.point_bins import RAW_POINTS
from collapsewatch_server.services.context import ServiceContext
from collapsewatch_server.tables import Run
from collapsewatch_web.api_schemas.runs import (
    PointEvent,
    RunDetail,
    RunPublic,
    SeriesKey,
    SeriesPoints,
)


def status_of(ctx: ServiceContext, run: Run, now: datetime) -> RunStatus:
    """A run's status; a running run silent longer than ``stalled_after_s`` is stalled."""
    if run.status == RunStatus.running and now - run.last_seen_at > ctx.stalled_after:
        return RunStatus.stalled
    return RunStatus(run.status)


def _public(
    ctx: ServiceContext,
    run: Run,
    project: str,
    now: datetime,
    open_alerts: int,
    tags: list[str] | None = None,
) -> dict[str, object]:
    return {
        "run_id": uuid.UUID(run.id),
        "project": project,
        "name": run.name,
        "status": status_of(ctx, run, now),
        "started_at": run.started_at,
        "last_seen_at": run.last_seen_at,
        "finished_at": run.finished_at,
        "last_step": run.last_step,
        "open_alerts": open_alerts,
        "tags": tags or [],
    }


def list_runs(
    ctx: ServiceContext,
    project: str | None = None,
    name: str | None = None,
    limit: int = 500,
    tag: str | None = None,
) -> list[RunPublic]:
    """Runs newest first with their open alerts and tags, of one project (NotFound when
    unknown), whose name contains ``name`` (any case) and carrying ``tag``, when given."""
    now = datetime.now(UTC)
    with ctx.db.read() as s:
        project_id = projects.get(s, project).id if project is not None else None
        rows = runs.with_open_alerts(s, project_id, name, limit, tag)
        tags = run_tags.of_runs(s, [r.id for r, _, _ in rows])
    return [
        RunPublic.model_validate(_public(ctx, r, p, now, n, tags.get(r.id))) for r, p, n in rows
    ]


def get_run(ctx: ServiceContext, run_id: uuid.UUID) -> RunDetail:
    """One run with its metadata and probes in model order (NotFound otherwise)."""
    now = datetime.now(UTC)
    with ctx.db.read() as s:
        run, project = runs.get(s, run_id)
        return RunDetail.model_validate(
            {
                **_public(
                    ctx,
                    run,
                    project,
                    now,
                    runs.open_alerts(s, run),
                    run_tags.of_runs(s, [run.id]).get(run.id),
                ),
                "config": run.config,
                "host": run.host,
                "torch_version": run.torch_version,
                "sdk_version": run.sdk_version,
                "probes": probes.of_run(s, run.id),
                "coverage": run.coverage or {},
                "sampling": [{"step": step, "every": every} for step, every in run.sampling or []],
            }
        )


def run_state(ctx: ServiceContext, run_id: uuid.UUID) -> tuple[RunStatus, int | None]:
    """Status and last step of a run: the cheap part of a run, for live pages."""
    now = datetime.now(UTC)
    with ctx.db.read() as s:
        run, _ = runs.get(s, run_id)
        return status_of(ctx, run, now), run.last_step


def list_series(ctx: ServiceContext, run_id: uuid.UUID) -> list[SeriesKey]:
    """The (indicator, probe) series of a run, probes in model order."""
    with ctx.db.read() as s:
        run, _ = runs.get(s, run_id)
        return points.list_series(s, run.id)


def get_points(
    ctx: ServiceContext, run_id: uuid.UUID, indicator: str, probe: str, max_points: int = 2000
) -> SeriesPoints:
    """Points of one series in step order, min/max-downsampled to ``max_points``: from its
    points up to ``RAW_POINTS`` of them, else from its rollups (at most ``max_points / 2``
    bins, each giving its low and its high)."""
    with ctx.db.read() as s:
        run, _ = runs.get(s, run_id)
        series = points.find_series(s, run.id, indicator, probe)
        if series.points > max(max_points, RAW_POINTS) and series.last_step is not None:
            first = series.first_step or 0
            width = math.ceil((series.last_step - first + 1) / max(1, max_points // 2))
            level = rollups.level_for(width)
            if level is None:
                level, width = len(rollups.LEVELS) - 1, width
            else:
                width = rollups.LEVELS[level]
            stored = point_rollups.read(s, [series.id], level)
            bins = rollups.merge(stored, width)
            steps, values = rollups.as_points(bins)
            return downsampled(indicator, probe, steps, values, max_points, series.points)
        steps, values = points.of_series(s, series.id)
    return downsampled(indicator, probe, steps, values, max_points)


def downsampled(
    indicator: str,
    probe: str,
    steps: np.ndarray,
    values: np.ndarray,
    max_points: int,
    total: int | None = None,
) -> SeriesPoints:
    """A series with at most ``max_points`` points: above it, each bucket keeps its min and
    max (:func:`~collapsewatch_server.downsample.minmax_downsample`); NaN becomes None.
    ``total``: the series' points, when ``steps`` are already a summary of them."""
    kept_steps, kept_values = minmax_downsample(steps, values, max_points)
    total = int(steps.size) if total is None else total
    return SeriesPoints(
        indicator=indicator,
        probe=probe,
        steps=kept_steps.tolist(),
        values=[v if math.isfinite(v) else None for v in kept_values.tolist()],
        total=total,
        downsampled=kept_steps.size < total,
    )


def points_since(
    ctx: ServiceContext, run_id: uuid.UUID, cursor: int, limit: int = 5000
) -> tuple[list[PointEvent], int]:
    """Points of a run stored after ``cursor`` (a point id), and the new cursor."""
    with ctx.db.read() as s:
        return points.since(s, run_id, cursor, limit)


def latest_cursor(ctx: ServiceContext) -> int:
    """The newest point id: a live page starts listening from here."""
    with ctx.db.read() as s:
        return points.newest_id(s)


def delete_run(ctx: ServiceContext, run_id: uuid.UUID) -> dict[str, int]:
    """Delete a run and every row of it, in one transaction (NotFound when unknown); the rows
    deleted per table. A batch of the run sent later starts the run afresh."""
    with ctx.db.write() as s:
        run, _ = runs.get(s, run_id)
        return run_deletion.delete_run(s, run.id)


def set_tags(ctx: ServiceContext, run_id: uuid.UUID, tags: list[str]) -> list[str]:
    """Replace a run's tags (NotFound when unknown); its tags as stored, alphabetical."""
    with ctx.db.write() as s:
        run, _ = runs.get(s, run_id)
        run_tags.replace(s, run.id, tags)
    return sorted(dict.fromkeys(tags))
