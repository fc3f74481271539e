"""What the repositories share: the dialect's INSERT (for ON CONFLICT DO NOTHING)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

#: Statements per compound SELECT: SQLite allows at most 500 terms in one.
UNION_PARTS = 400


def insert(s: Session, table: Any) -> Any:
    """``INSERT`` of the session's dialect, which has ``on_conflict_do_nothing``."""
    return (pg_insert if s.get_bind().dialect.name == "postgresql" else sqlite_insert)(table)
