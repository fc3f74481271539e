"""Alert events: what the alert engine raised (firing, resolved, reminders) and the nodata
events of silent runs; listed newest first for the API and the pages."""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from collapsewatch_server.alerts.evaluation import Raised
from collapsewatch_server.repositories.sql import inserted
from collapsewatch_server.tables import AlertEvent, Project, Run
from collapsewatch_web.api_schemas.alerts import EventStatus, Severity


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def add_raised(
    s: Session, project_id: int, run: Run, raised: Sequence[Raised], now: datetime
) -> list[AlertEvent]:
    """An event row per transition the engine raised on the run, flushed (they exist before
    their deliveries)."""
    events = [
        AlertEvent(
            id=str(uuid.uuid4()),
            project_id=project_id,
            run_id=run.id,
            rule_id=r.rule_id,
            rule_name=r.rule_name,
            probe=r.probe,
            indicator=r.indicator,
            status=r.transition.status.value,
            severity=r.transition.severity.value,
            value=_finite(r.transition.value),
            threshold=_finite(r.transition.threshold),
            step=r.transition.step,
            reminder=r.transition.reminder,
            message=r.transition.message[:2000],
            created_at=now,
        )
        for r in raised
    ]
    if events:
        s.add_all(events)
        s.flush()  # no ORM relationships: events exist before their deliveries
    return events


def add_nodata(s: Session, run: Run, message: str, now: datetime) -> AlertEvent:
    """A ``nodata`` event of a silent run, flushed."""
    event = AlertEvent(
        id=str(uuid.uuid4()),
        project_id=run.project_id,
        run_id=run.id,
        status=EventStatus.nodata.value,
        severity=Severity.warning.value,
        step=run.last_step,
        message=message,
        created_at=now,
    )
    return inserted(s, event)


def filtered(
    s: Session,
    project_id: int | None = None,
    run_id: str | None = None,
    state: EventStatus | None = None,
    severity: Severity | None = None,
    limit: int = 100,
) -> list[tuple[AlertEvent, str, str]]:
    """(event, project name, run name) newest first under the filters; ``state`` filters on
    the event's status."""
    query = (
        select(AlertEvent, Project.name, Run.name)
        .join(Project, Project.id == AlertEvent.project_id)
        .join(Run, Run.id == AlertEvent.run_id)
    )
    if project_id is not None:
        query = query.where(AlertEvent.project_id == project_id)
    if run_id is not None:
        query = query.where(AlertEvent.run_id == run_id)
    if state is not None:
        query = query.where(AlertEvent.status == EventStatus(state).value)
    if severity is not None:
        query = query.where(AlertEvent.severity == Severity(severity).value)
    # events of one batch share a time: the step orders a firing before its resolve
    order = (AlertEvent.created_at.desc(), AlertEvent.step.desc(), AlertEvent.id)
    rows = s.execute(query.order_by(*order).limit(limit)).all()
    return [(event, project, run_name) for event, project, run_name in rows]


def of_run(
    s: Session, run_id: str, indicator: str | None = None, limit: int = 500
) -> list[AlertEvent]:
    """Events of a run (of one indicator), newest first."""
    query = select(AlertEvent).where(AlertEvent.run_id == run_id)
    if indicator is not None:
        query = query.where(AlertEvent.indicator == indicator)
    order = (AlertEvent.created_at.desc(), AlertEvent.step.desc())
    return list(s.scalars(query.order_by(*order).limit(limit)))


def since(s: Session, run_id: str, moment: datetime, limit: int = 500) -> list[AlertEvent]:
    """Events of a run created at or after ``moment``, oldest first (live pages)."""
    return list(
        s.scalars(
            select(AlertEvent)
            .where(AlertEvent.run_id == run_id, AlertEvent.created_at >= moment)
            .order_by(AlertEvent.created_at, AlertEvent.step)
            .limit(limit)
        )
    )
