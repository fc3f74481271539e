"""Alert events and states: reads for the API and the pages, and the nodata events of runs
that fell silent (a use case the webhook worker runs every few seconds)."""

from __future__ import annotations

import uuid
from datetime import datetime

from collapsewatch_server.repositories import alert_events, alert_states, outbox, projects, runs
from collapsewatch_server.services.context import ServiceContext
from collapsewatch_server.tables import AlertEvent, utcnow
from collapsewatch_web.api_schemas.alerts import (
    AlertEventPublic,
    AlertStatePublic,
    EventStatus,
    Severity,
)
from collapsewatch_web.api_schemas.health import FiringAlert

NODATA_MESSAGE = "run {run} sent nothing for {seconds} s"


def event_public(
    ctx: ServiceContext, ev: AlertEvent, project: str, run_name: str
) -> AlertEventPublic:
    """An alert event row as the API and the webhook payloads show it."""
    return AlertEventPublic(
        id=uuid.UUID(ev.id),
        project=project,
        run_id=uuid.UUID(ev.run_id),
        run_name=run_name,
        rule_id=ev.rule_id,
        rule_name=ev.rule_name,
        status=EventStatus(ev.status),
        severity=Severity(ev.severity),
        indicator=ev.indicator,
        probe=ev.probe,
        value=ev.value,
        threshold=ev.threshold,
        step=ev.step,
        reminder=ev.reminder,
        message=ev.message,
        created_at=ev.created_at,
        url=ctx.run_url(ev.run_id, ev.step),
        silence_id=ev.silence_id,
    )


def list_alerts(
    ctx: ServiceContext,
    project: str | None = None,
    run_id: uuid.UUID | None = None,
    state: EventStatus | None = None,
    severity: Severity | None = None,
    limit: int = 100,
) -> list[AlertEventPublic]:
    """Alert events, newest first, under the filters (NotFound for an unknown project or run);
    ``state`` filters on the event's status."""
    with ctx.db.read() as s:
        project_id = projects.get(s, project).id if project is not None else None
        run = runs.get(s, run_id)[0].id if run_id is not None else None
        rows = alert_events.filtered(s, project_id, run, state, severity, limit)
    return [event_public(ctx, e, proj, run_name) for e, proj, run_name in rows]


def run_alert_events(
    ctx: ServiceContext, run_id: uuid.UUID, indicator: str | None = None, limit: int = 500
) -> list[AlertEventPublic]:
    """Alert events of a run (of one indicator), newest first."""
    with ctx.db.read() as s:
        run, project = runs.get(s, run_id)
        rows = alert_events.of_run(s, run.id, indicator, limit)
    return [event_public(ctx, e, project, run.name) for e in rows]


def alerts_since(
    ctx: ServiceContext, run_id: uuid.UUID, since: datetime, limit: int = 500
) -> list[AlertEventPublic]:
    """Alert events of a run created at or after ``since``, oldest first (live pages)."""
    with ctx.db.read() as s:
        run, project = runs.get(s, run_id)
        rows = alert_events.since(s, run.id, since, limit)
    return [event_public(ctx, e, project, run.name) for e in rows]


def list_alert_states(ctx: ServiceContext, run_id: uuid.UUID) -> list[AlertStatePublic]:
    """Where every (rule, probe) of a run stands, by rule then probe in model order."""
    with ctx.db.read() as s:
        run, _ = runs.get(s, run_id)
        return alert_states.of_run(s, run.id)


def firing_alerts(
    ctx: ServiceContext, project: str | None = None, limit: int = 200
) -> list[FiringAlert]:
    """Every (rule, run, probe) firing now under an enabled rule, newest first."""
    with ctx.db.read() as s:
        project_id = projects.get(s, project).id if project is not None else None
        return alert_states.firing(s, project_id, limit)


def scan_stalled(ctx: ServiceContext, now: datetime | None = None) -> int:
    """Raise one ``nodata`` event (with its deliveries) for each running run silent longer
    than ``stalled_after_s`` and not yet told about; returns how many were raised.

    Each run is claimed in its own transaction: of several server processes scanning at once,
    exactly one wins. New data clears the claim, so a run that stalls again raises a new event.
    """
    now = now or utcnow()
    cutoff = now - ctx.stalled_after
    with ctx.db.read() as s:
        candidates = runs.silent_ids(s, cutoff)
    raised = queued = 0
    for run_id in candidates:
        with ctx.db.write() as s:
            run = runs.claim_silent(s, run_id, cutoff, now)
            if run is None:
                continue  # another process claimed it, or the run spoke meanwhile
            seconds = int((now - run.last_seen_at).total_seconds())
            message = NODATA_MESSAGE.format(run=run.name, seconds=seconds)
            event = alert_events.add_nodata(s, run, message, now)
            queued += outbox.enqueue(s, [event], ctx.group_policy, now)
            raised += 1
    if raised:
        ctx.metrics.alert_events.labels("nodata").inc(raised)
    if queued:
        ctx.wake_deliverer()
    return raised
