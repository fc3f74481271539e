"""What the repositories share: a new row inserted, the dialect's INSERT (for ON CONFLICT),
the bulk path of each backend for many rows at once, and a project's row by id."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from collapsewatch_server import errors
from collapsewatch_server.tables import Project, Rule, Silence, Webhook

#: The tables whose rows belong to one project and are addressed by id under it.
_Owned = TypeVar("_Owned", Rule, Silence, Webhook)

#: Statements per compound SELECT: SQLite allows at most 500 terms in one.
UNION_PARTS = 400

_Row = TypeVar("_Row")


def inserted(s: Session, row: _Row) -> _Row:
    """``row`` added and flushed: it has its id, and rows added later may point at it (the
    tables declare no ORM relationships to order the inserts)."""
    s.add(row)
    s.flush()
    return row


def insert(s: Session, table: Any) -> Any:
    """``INSERT`` of the session's dialect, which has ``on_conflict_do_nothing``."""
    return (pg_insert if s.get_bind().dialect.name == "postgresql" else sqlite_insert)(table)


def owned_row(
    s: Session, table: type[_Owned], project: Project, row_id: int, missing: str
) -> _Owned:
    """The row ``row_id`` of ``table`` when it belongs to ``project``; NotFound with the message
    ``missing`` otherwise (another project's row is not found either)."""
    row = s.scalar(select(table).where(table.id == row_id, table.project_id == project.id))
    if row is None:
        raise errors.NotFound(missing)
    return row


def is_postgres(s: Session) -> bool:
    return s.get_bind().dialect.name == "postgresql"


def bulk_insert(
    s: Session, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """Append ``rows`` (tuples in ``columns`` order) to ``table`` in the caller's transaction
    by the backend's bulk path: ``COPY`` on Postgres, the driver's ``executemany`` on SQLite.
    Neither builds per-row parameters in SQLAlchemy (measured: bench/point_storage.py)."""
    if not rows:
        return
    names = ", ".join(f'"{c}"' for c in columns)
    dbapi: Any = s.connection().connection.dbapi_connection
    if is_postgres(s):
        with dbapi.cursor() as cur, cur.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        return
    marks = ", ".join("?" for _ in columns)
    cur = dbapi.cursor()
    try:
        cur.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", rows)
    finally:
        cur.close()


def execute_many(s: Session, statement: str, rows: Sequence[Sequence[Any]]) -> None:
    """One statement with positional ``?`` marks, run for every row (the driver's
    ``executemany``; psycopg pipelines it) in the caller's transaction."""
    if not rows:
        return
    if is_postgres(s):
        statement = statement.replace("?", "%s")
    dbapi: Any = s.connection().connection.dbapi_connection
    cur = dbapi.cursor()
    try:
        cur.executemany(statement, rows)
    finally:
        cur.close()
