"""The ingest queue: batches accepted and not yet processed.

A processor claims the oldest batch of a run that nobody holds, with a lease: one
``UPDATE ... WHERE seq IN (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING`` statement, so
processors of several server processes never take the same batch, and a run's batches are
processed one at a time, in arrival order (windowed indicators and alert rules read what the
run's earlier batches stored). On SQLite the lock clause is dropped and the statement is
atomic because writes serialise. A processor that dies leaves its lease to expire; a batch that
fails too often is set aside (``failed_at``) so it never blocks the run's later batches.

A claim takes, with the run's oldest batch, the batches of the run queued right behind it (a
deep queue: the server fell behind), so that a processor pays its per-batch costs (reads of
the run, the rules, a transaction) once for the lot. Only batches never tried are taken so:
a batch being tried again is claimed alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, and_, delete, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from collapsewatch_server.tables import QueuedBatch

#: The most batches one claim takes.
MAX_BATCHES_A_CLAIM = 64


@dataclass(frozen=True)
class Claimed:
    """A batch a processor holds until ``lease_until``."""

    batch_id: str
    run_id: str
    payload: bytes
    attempts: int
    lease_until: datetime
    records: int = 0


def add(
    s: Session, batch_id: str, run_id: str, records: int, payload: bytes, now: datetime
) -> None:
    s.add(
        QueuedBatch(
            batch_id=batch_id, run_id=run_id, records=records, payload=payload, received_at=now
        )
    )


def any_waiting(s: Session) -> bool:
    """Whether some batch waits or is in hand (set-aside batches not counted)."""
    query = select(QueuedBatch.seq).where(QueuedBatch.failed_at.is_(None)).limit(1)
    return s.execute(query).first() is not None


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


def claim(s: Session, now: datetime, lease_until: datetime, max_records: int = 0) -> list[Claimed]:
    """Claim the oldest batch whose run has no older batch waiting or in hand, and, when it is
    tried for the first time, the run's batches queued right behind it that were never tried,
    up to ``max_records`` records in all; in queue order. Empty: nothing to claim."""
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
        .returning(*_CLAIMED)
        .execution_options(synchronize_session=False)
    ).first()
    if row is None:
        return []
    first = _claimed(row, lease_until)
    if first.attempts > 1 or first.records >= max_records:
        return [first]
    return [first, *_behind(s, row.seq, first, now, lease_until, max_records - first.records)]


#: What a claim returns of each batch it takes.
_CLAIMED = (
    QueuedBatch.seq,
    QueuedBatch.batch_id,
    QueuedBatch.run_id,
    QueuedBatch.payload,
    QueuedBatch.attempts,
    QueuedBatch.records,
)


def _claimed(row: Any, lease_until: datetime) -> Claimed:
    return Claimed(row.batch_id, row.run_id, row.payload, row.attempts, lease_until, row.records)


def _behind(
    s: Session, seq: int, first: Claimed, now: datetime, lease_until: datetime, room: int
) -> list[Claimed]:
    """The run's batches right behind ``first`` (queue position ``seq``) never tried, as many
    in a row as ``room`` records allow, claimed with its lease. No other processor can hold
    them: a run's batch is only claimed once every older one is processed or set aside."""
    waiting = s.execute(
        select(QueuedBatch.seq, QueuedBatch.records, QueuedBatch.attempts)
        .where(
            QueuedBatch.run_id == first.run_id,
            QueuedBatch.seq > seq,
            QueuedBatch.failed_at.is_(None),
        )
        .order_by(QueuedBatch.seq)
        .limit(MAX_BATCHES_A_CLAIM - 1)
    ).all()
    take: list[int] = []
    for behind, records, attempts in waiting:
        if attempts or records > room:
            break
        take.append(behind)
        room -= records
    if not take:
        return []
    rows = s.execute(
        update(QueuedBatch)
        .where(QueuedBatch.seq.in_(take), _free(now))
        .values(lease_until=lease_until, attempts=QueuedBatch.attempts + 1)
        .returning(*_CLAIMED)
        .execution_options(synchronize_session=False)
    ).all()
    return [_claimed(row, lease_until) for row in sorted(rows, key=lambda r: r.seq)]


def _held(batch_id: str, lease_until: datetime) -> Any:
    return and_(QueuedBatch.batch_id == batch_id, QueuedBatch.lease_until == lease_until)


def finish(s: Session, claimed: Sequence[Claimed]) -> bool:
    """Remove processed batches, if our claim on each still holds (False: a lease expired and
    someone else has the batch; the caller rolls back)."""
    done = s.execute(
        delete(QueuedBatch).where(or_(*(_held(c.batch_id, c.lease_until) for c in claimed)))
    )
    return cast("CursorResult[Any]", done).rowcount == len(claimed)


def release(
    s: Session, claimed: Claimed, error: str, now: datetime, give_up: bool, tried: bool = True
) -> None:
    """After a failed processing: due again at once, or set aside for good (``give_up``).
    ``tried=False``: the batch was claimed but never processed (an earlier batch of its claim
    failed), so the claim does not count as an attempt."""
    values: dict[str, Any] = {"lease_until": None, "failed_at": now if give_up else None}
    if tried:
        values["error"] = error[:2000]
    else:
        values["attempts"] = QueuedBatch.attempts - 1
    s.execute(
        update(QueuedBatch)
        .where(_held(claimed.batch_id, claimed.lease_until))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
