"""Silences of a project: create (from now, or a given start, until an end or for a
duration), list, delete (lifts it at once). Matching happens where events are queued for
delivery (:func:`collapsewatch_server.repositories.outbox.enqueue`)."""

from __future__ import annotations

from datetime import timedelta

from collapsewatch_server import errors
from collapsewatch_server.repositories import projects, silences
from collapsewatch_server.services.context import ServiceContext
from collapsewatch_server.tables import Silence, utcnow
from collapsewatch_web.api_schemas.alerts import Severity
from collapsewatch_web.api_schemas.silences import SilenceCreate, SilencePublic

ENDS_BEFORE_START = "ends_at must fall after the silence's start ({start})"


def public(row: Silence, project: str, silenced_events: int) -> SilencePublic:
    now = utcnow()
    return SilencePublic(
        id=row.id,
        project=project,
        run=row.run_glob,
        rule=row.rule,
        indicator=row.indicator,
        probe=row.probe_glob,
        severity=Severity(row.severity) if row.severity else None,
        starts_at=row.starts_at,
        ends_at=row.ends_at,
        comment=row.comment,
        active=row.starts_at <= now < row.ends_at,
        created_at=row.created_at,
        silenced_events=silenced_events,
    )


def create_silence(ctx: ServiceContext, project: str, data: SilenceCreate) -> SilencePublic:
    """A new silence of an existing project; it ends at ``ends_at`` or ``duration_s`` after
    its start (now unless ``starts_at``)."""
    start = data.starts_at or utcnow()
    end = data.ends_at or start + timedelta(seconds=data.duration_s or 0)
    if end <= start:
        raise errors.Invalid(
            ENDS_BEFORE_START.format(start=start.isoformat()), loc=("body", "ends_at")
        )
    with ctx.db.write() as s:
        proj = projects.get(s, project)
        row = silences.add(s, proj.id, data.model_copy(update={"ends_at": end}), start)
        return public(row, proj.name, 0)


def list_silences(
    ctx: ServiceContext, project: str, active_only: bool = False
) -> list[SilencePublic]:
    """A project's silences, newest first (only those in force with ``active_only``)."""
    with ctx.db.read() as s:
        proj = projects.get(s, project)
        rows = silences.of_project(s, proj.id, active_at=utcnow() if active_only else None)
        counts = silences.silenced_counts(s, [r.id for r in rows])
        return [public(r, proj.name, counts.get(r.id, 0)) for r in rows]


def delete_silence(ctx: ServiceContext, project: str, silence_id: int) -> None:
    """Delete a silence: events from now on are delivered again (those it silenced stay
    recorded, no longer marked)."""
    with ctx.db.write() as s:
        s.delete(silences.get(s, projects.get(s, project), silence_id))
