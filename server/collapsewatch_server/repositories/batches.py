"""Ingested batch ids and their content hashes: what makes ``POST /api/v1/ingest``
idempotent, and a re-used id with other content a conflict."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from collapsewatch_server.tables import IngestedBatch


def content_hash_of(s: Session, batch_id: uuid.UUID) -> str | None:
    """The stored content hash of a batch id: None when the id is new, ``""`` when the batch
    was stored before hashes were kept."""
    row = s.execute(
        select(IngestedBatch.content_hash).where(IngestedBatch.batch_id == str(batch_id))
    ).first()
    if row is None:
        return None
    return row[0] or ""


def claim(s: Session, batch_id: uuid.UUID, run_id: str, content_hash: str, records: int) -> None:
    """Write the batch id first: a concurrent twin of the batch blocks here, then fails on the
    primary key."""
    s.add(
        IngestedBatch(
            batch_id=str(batch_id), run_id=run_id, records=records, content_hash=content_hash
        )
    )
    s.flush()
