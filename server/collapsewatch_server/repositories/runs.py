"""Runs: saved from the run metadata of each ingest batch, looked up, listed with their open
alerts, and claimed when they fall silent."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, func, select, update
from sqlalchemy.orm import Session

from collapsewatch.resume import RESUMED_KEY
from collapsewatch.schemas import IngestBatch, RunStatus
from collapsewatch_server import errors
from collapsewatch_server.repositories import run_tags
from collapsewatch_server.repositories.alert_states import open_alerts_count
from collapsewatch_server.tables import Project, Run


def get(s: Session, run_id: uuid.UUID) -> tuple[Run, str]:
    """A run and its project's name (NotFound otherwise)."""
    row = s.execute(
        select(Run, Project.name)
        .join(Project, Project.id == Run.project_id)
        .where(Run.id == str(run_id))
    ).first()
    if row is None:
        raise errors.NotFound(errors.RUN_NOT_FOUND.format(run_id=run_id))
    return row[0], row[1]


def save_from_batch(s: Session, batch: IngestBatch, project: Project, now: datetime) -> Run:
    """The batch's run, created on its first batch, with what this batch tells of it: seen
    now, its newest step, and its end when the batch says it finished or crashed. A run id of
    another project is a Conflict."""
    info = batch.run
    run = s.get(Run, str(info.run_id))
    if run is None:
        run = Run(
            id=str(info.run_id),
            project_id=project.id,
            name=info.name,
            status=RunStatus.running.value,
            config=info.config,
            host=info.host,
            torch_version=info.torch_version,
            sdk_version=info.sdk_version,
            started_at=info.started_at,
            last_seen_at=now,
        )
        s.add(run)
        run_tags.add(s, run.id, info.tags)
    elif run.project_id != project.id:
        actual = s.get_one(Project, run.project_id).name
        raise errors.Conflict(
            errors.RUN_IN_OTHER_PROJECT.format(
                run_id=info.run_id, actual=actual, given=project.name
            )
        )
    elif _resumed_since(info.config, run.config):
        # a new process resumed the run (watch(..., resume=True)): its config lists one more
        # resume; a late batch of the earlier process lists fewer and changes nothing
        run.config = info.config
        run.status, run.finished_at = RunStatus.running.value, None
    run.last_seen_at = now
    run.stalled_notified_at = None  # alive again: a later silence is a new nodata event
    steps = batch.step_range()
    if steps is not None:
        top = steps[1]
        run.last_step = top if run.last_step is None else max(run.last_step, top)
    if batch.status is not None and batch.status != RunStatus.running:
        run.status = batch.status.value
        run.finished_at = now
    if info.coverage:
        run.coverage = {family: c.model_dump() for family, c in info.coverage.items()}
    if info.sampling_every is not None and steps is not None:
        run.sampling = _with_interval(run.sampling or [], steps[0], info.sampling_every)
    s.flush()  # no ORM relationships: the run exists before rows that point at it
    return run


def _resumed_since(sent: dict[str, Any], stored: dict[str, Any] | None) -> bool:
    """Whether a batch's run config records more resumes than the stored one."""
    now, before = sent.get(RESUMED_KEY), (stored or {}).get(RESUMED_KEY)
    return isinstance(now, list) and len(now) > (len(before) if isinstance(before, list) else 0)


def _with_interval(history: list[Any], step: int, every: int) -> list[Any]:
    """The interval history ``[[first step, every], ...]`` (step order) with ``every`` seen at
    ``step``: a new entry only where the interval changes (a new list: JSON columns are saved
    when assigned, not when mutated)."""
    entries = sorted([*history, [step, every]], key=lambda e: e[0])
    kept: list[Any] = []
    for entry in entries:
        if not kept or kept[-1][1] != entry[1]:
            kept.append(entry)
    return kept


def with_open_alerts(
    s: Session, project_id: int | None, name: str | None, limit: int, tag: str | None
) -> list[tuple[Run, str, int]]:
    """(run, project name, open alerts) newest first, at most ``limit``, of one project when
    given, whose name contains ``name`` (any case) when given, carrying ``tag`` when given."""
    query = select(Run, Project.name, open_alerts_count()).join(
        Project, Project.id == Run.project_id
    )
    if project_id is not None:
        query = query.where(Run.project_id == project_id)
    if name:
        query = query.where(func.lower(Run.name).contains(name.lower(), autoescape=True))
    if tag:
        query = query.where(Run.id.in_(run_tags.runs_tagged(tag)))
    rows = s.execute(query.order_by(Run.started_at.desc()).limit(limit)).all()
    return [(run, project, count) for run, project, count in rows]


def open_alerts(s: Session, run: Run) -> int:
    """Firing states of enabled rules on the run."""
    return s.scalar(select(open_alerts_count()).where(Run.id == run.id)) or 0


def _silent(cutoff: datetime) -> tuple[ColumnElement[bool], ...]:
    return (
        Run.status == RunStatus.running.value,
        Run.last_seen_at < cutoff,
        Run.stalled_notified_at.is_(None),
    )


def silent_ids(s: Session, cutoff: datetime) -> list[str]:
    """Running runs last seen before ``cutoff`` and not yet told about."""
    return list(s.scalars(select(Run.id).where(*_silent(cutoff))))


def claim_silent(s: Session, run_id: str, cutoff: datetime, now: datetime) -> Run | None:
    """Mark a silent run as told about, with a conditional UPDATE: of several processes
    claiming at once exactly one gets the run back; the others (and a claim on a run that
    spoke meanwhile) get None."""
    claimed = s.execute(
        update(Run)
        .where(Run.id == run_id, *_silent(cutoff))
        .values(stalled_notified_at=now)
        .execution_options(synchronize_session=False)
    )
    if cast("CursorResult[Any]", claimed).rowcount != 1:
        return None
    return s.get_one(Run, run_id)
