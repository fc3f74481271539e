"""Deleting a run and everything that hangs off it, table by table.

Explicit deletes, children first, instead of trusting ``ON DELETE CASCADE``: the rows go the
same way on SQLite and Postgres, and the work is a few set-based statements whatever the run's
size.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import CursorResult, Delete, delete, select
from sqlalchemy.orm import Session

from collapsewatch_server.tables import (
    AlertEvent,
    AlertStateRow,
    Delivery,
    DeliveryAttempt,
    DeliveryEvent,
    IngestedBatch,
    Point,
    PointRollup,
    Probe,
    QueuedBatch,
    Run,
    RunTag,
    Series,
    StatRecordRow,
)


def delete_run(s: Session, run_id: str) -> dict[str, int]:
    """Delete a run with its probes, series, points, rollups, raw records, alert states,
    events, the notifications carrying them (with their members and attempts), and its queued
    and remembered batches; return the rows deleted per table."""
    series = select(Series.id).where(Series.run_id == run_id).scalar_subquery()
    events = select(AlertEvent.id).where(AlertEvent.run_id == run_id).scalar_subquery()
    # A notification groups events of one run (its group key names the run), so those that
    # carry this run's events carry nothing else; one left with members of another run
    # (none today) is kept. Listed before their members go.
    carrying = list(
        s.scalars(
            select(DeliveryEvent.delivery_id).where(DeliveryEvent.event_id.in_(events)).distinct()
        )
    )
    others = select(DeliveryEvent.delivery_id).where(DeliveryEvent.delivery_id.in_(carrying))
    emptied = (
        select(Delivery.id)
        .where(Delivery.id.in_(carrying), Delivery.id.not_in(others))
        .scalar_subquery()
    )
    statements: list[tuple[str, Delete]] = [
        ("points", delete(Point).where(Point.series_id.in_(series))),
        ("point_rollups", delete(PointRollup).where(PointRollup.series_id.in_(series))),
        ("series", delete(Series).where(Series.run_id == run_id)),
        ("stat_records", delete(StatRecordRow).where(StatRecordRow.run_id == run_id)),
        ("alert_states", delete(AlertStateRow).where(AlertStateRow.run_id == run_id)),
        ("delivery_events", delete(DeliveryEvent).where(DeliveryEvent.event_id.in_(events))),
        (
            "delivery_attempts",
            delete(DeliveryAttempt).where(DeliveryAttempt.delivery_id.in_(emptied)),
        ),
        ("deliveries", delete(Delivery).where(Delivery.id.in_(emptied))),
        ("alert_events", delete(AlertEvent).where(AlertEvent.run_id == run_id)),
        ("ingest_queue", delete(QueuedBatch).where(QueuedBatch.run_id == run_id)),
        ("ingested_batches", delete(IngestedBatch).where(IngestedBatch.run_id == run_id)),
        ("probes", delete(Probe).where(Probe.run_id == run_id)),
        ("run_tags", delete(RunTag).where(RunTag.run_id == run_id)),
        ("runs", delete(Run).where(Run.id == run_id)),
    ]
    deleted: dict[str, int] = {}
    for table, statement in statements:
        result = cast(
            CursorResult[Any], s.execute(statement.execution_options(synchronize_session=False))
        )
        deleted[table] = result.rowcount
    return deleted
