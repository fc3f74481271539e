"""Silences of a project: matchers with a start and an end. An event matching an active
silence is marked with it and gets no delivery."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from collapsewatch_server import errors
from collapsewatch_server.repositories.sql import inserted, owned_row
from collapsewatch_server.tables import AlertEvent, Project, Silence
from collapsewatch_web.api_schemas.alerts import glob_matches
from collapsewatch_web.api_schemas.silences import SilenceCreate


def add(s: Session, project_id: int, data: SilenceCreate, starts_at: datetime) -> Silence:
    """A new silence, flushed (it has its id)."""
    row = Silence(
        project_id=project_id,
        run_glob=data.run,
        rule=data.rule,
        indicator=data.indicator,
        probe_glob=data.probe,
        severity=data.severity.value if data.severity else None,
        starts_at=starts_at,
        ends_at=data.ends_at,
        comment=data.comment,
    )
    return inserted(s, row)


def get(s: Session, project: Project, silence_id: int) -> Silence:
    """A silence of the project (NotFound otherwise)."""
    missing = errors.SILENCE_NOT_FOUND.format(silence_id=silence_id, project=project.name)
    return owned_row(s, Silence, project, silence_id, missing)


def of_project(s: Session, project_id: int, active_at: datetime | None = None) -> list[Silence]:
    """A project's silences, newest first; with ``active_at``, only those active then."""
    query = select(Silence).where(Silence.project_id == project_id)
    if active_at is not None:
        query = query.where(Silence.starts_at <= active_at, Silence.ends_at > active_at)
    return list(s.scalars(query.order_by(Silence.id.desc())))


def matches(row: Silence, event: AlertEvent, run_name: str) -> bool:
    """Whether every matcher the silence sets matches the event (globs on run and probe)."""
    return (
        (row.run_glob is None or glob_matches(run_name, row.run_glob))
        and (row.rule is None or row.rule == event.rule_name)
        and (row.indicator is None or row.indicator == event.indicator)
        and (row.probe_glob is None or glob_matches(event.probe or "", row.probe_glob))
        and (row.severity is None or row.severity == event.severity)
    )


def silencing(s: Session, event: AlertEvent, run_name: str, now: datetime) -> Silence | None:
    """The active silence of the event's project that matches it (the oldest), if any."""
    for row in reversed(of_project(s, event.project_id, active_at=now)):
        if matches(row, event, run_name):
            return row
    return None


def silenced_counts(s: Session, silence_ids: Sequence[int]) -> dict[int, int]:
    """How many events each silence kept from being delivered (absent: none)."""
    rows = s.execute(
        select(AlertEvent.silence_id, func.count())
        .where(AlertEvent.silence_id.in_(list(silence_ids)))
        .group_by(AlertEvent.silence_id)
    ).all()
    return {int(sid): int(n) for sid, n in rows if sid is not None}
