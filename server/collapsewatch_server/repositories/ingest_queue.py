"""The ingest queue: batches accepted and not yet processed.

A processor claims the oldest batch of a run that nobody holds, with a lease: one
``UPDATE ... WHERE seq IN (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING`` statement, so
processors of several server processes never take the same batch, and a run's batches are
processed one at a time, in arrival order (windowed indicators and alert rules read what the
run's earlier batches stored). On SQLite the lock clause is dropped and the statement is
atomic because writes serialise. A processor that dies leaves its lease to expire; a batch that
fails too often is set aside (``failed_at``) so it never blocks the run's later batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, and_, delete, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from collapsewatch_server.tables import QueuedBatch


@dataclass(frozen=True)
class Claimed:
    """A batch a processor holds until ``lease_until``."""

    batch_id: str
    run_id: str
    payload: bytes
    attempts: int
    lease_until: datetime


def add(
    s: Session, batch_id: str, run_id: str, records: int, payload: bytes, now: datetime
) -> None:
    s.add(
        QueuedBatch(
            batch_id=batch_id, run_id=run_id, records=records, payload=payload, received_at=now
        )
    )


def depth(s: Session) -> tuple[int, int]:
    """Batches and records waiting (set-aside batches not counted)."""
    batches, records = s.execute(
        select(func.count(), func.coalesce(func.sum(QueuedBatch.records), 0)).where(
            QueuedBatch.failed_at.is_(None)
        )
    ).one()
    return int(batches), int(records)


def _free(now: datetime) -> Any:
    return and_(
        QueuedBatch.failed_at.is_(None),
        or_(QueuedBatch.lease_until.is_(None), QueuedBatch.lease_until < now),
    )


def any_claimable(s: Session, now: datetime) -> bool:
    """Whether some batch is neither held nor set aside (a cheap read before a claim)."""
    return s.scalar(select(QueuedBatch.seq).where(_free(now)).limit(1)) is not None


def claim(s: Session, now: datetime, lease_until: datetime) -> Claimed | None:
    """Claim the oldest batch whose run has no older batch waiting or in hand."""
    older = aliased(QueuedBatch)
    claimable = (
        select(QueuedBatch.seq)
        .where(
            _free(now),
            ~select(older.seq)
            .where(
                older.run_id == QueuedBatch.run_id,
                older.seq < QueuedBatch.seq,
                older.failed_at.is_(None),
            )
            .exists(),
        )
        .order_by(QueuedBatch.seq)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    row = s.execute(
        update(QueuedBatch)
        .where(QueuedBatch.seq.in_(claimable))
        .values(lease_until=lease_until, attempts=QueuedBatch.attempts + 1)
        .returning(
            QueuedBatch.batch_id, QueuedBatch.run_id, QueuedBatch.payload, QueuedBatch.attempts
        )
        .execution_options(synchronize_session=False)
    ).first()
    if row is None:
        return None
    return Claimed(row[0], row[1], row[2], row[3], lease_until)


def _held(batch_id: str, lease_until: datetime) -> Any:
    return and_(QueuedBatch.batch_id == batch_id, QueuedBatch.lease_until == lease_until)


def finish(s: Session, claimed: Claimed) -> bool:
    """Remove a processed batch, if our claim still holds (False: the lease expired and
    someone else has it; the caller rolls back)."""
    done = s.execute(delete(QueuedBatch).where(_held(claimed.batch_id, claimed.lease_until)))
    return cast("CursorResult[Any]", done).rowcount == 1


def release(s: Session, claimed: Claimed, error: str, now: datetime, give_up: bool) -> None:
    """After a failed processing: due again at once, or set aside for good (``give_up``)."""
    s.execute(
        update(QueuedBatch)
        .where(_held(claimed.batch_id, claimed.lease_until))
        .values(lease_until=None, error=error[:2000], failed_at=now if give_up else None)
        .execution_options(synchronize_session=False)
    )
