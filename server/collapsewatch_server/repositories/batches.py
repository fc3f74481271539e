"""Ingested batch ids: what makes ``POST /api/v1/ingest`` idempotent."""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from collapsewatch_server.tables import IngestedBatch


def seen(s: Session, batch_id: uuid.UUID) -> bool:
    """True when a batch of that id is stored."""
    return s.get(IngestedBatch, str(batch_id)) is not None


def claim(s: Session, batch_id: uuid.UUID, run_id: str) -> None:
    """Write the batch id first: a concurrent twin of the batch blocks here, then fails on the
    primary key."""
    s.add(IngestedBatch(batch_id=str(batch_id), run_id=run_id, records=0))
    s.flush()


def set_records(s: Session, batch_id: uuid.UUID, records: int) -> None:
    """How many statistic records the batch stored."""
    s.get_one(IngestedBatch, str(batch_id)).records = records
