"""The database: engine creation, schema migration (Alembic, applied at start) and the
sessions services open their transactions on."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from collapsewatch_server.write_gate import WriteGate

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def normalise_url(url: str) -> str:
    """Accept ``postgres://`` and ``postgresql://`` and use psycopg 3 for them."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def create_private_file(path: Path) -> None:
    """Create the SQLite file readable by its owner only (0600) when it does not exist yet: it
    holds webhook secrets and everything a run sent. SQLite gives its -wal and -shm files the
    same mode. An existing file keeps the mode its owner gave it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


def make_engine(url: str, *, echo: bool = False) -> Engine:
    """An engine for a SQLite file (WAL, foreign keys, busy timeout) or Postgres."""
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            create_private_file(Path(parsed.database).expanduser())
        engine = create_engine(
            url, echo=echo, connect_args={"check_same_thread": False, "timeout": 30}
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # WAL lets the dashboard read while ingest writes; NORMAL sync is safe under WAL.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    engine = create_engine(url, echo=echo, pool_size=10, max_overflow=10)
    _ping_when_idle(engine)
    return engine


#: A pooled Postgres connection unused this long is tested before it is handed out.
IDLE_PING_S = 10.0


def _ping_when_idle(engine: Engine) -> None:
    """Test a pooled connection before use only when it has sat unused ``IDLE_PING_S``: one
    that died (a Postgres restart, a proxy's timeout) is replaced, not handed to a request.
    SQLAlchemy's ``pool_pre_ping`` tests every checkout, a round trip per transaction: under
    load an ingest request opens three, and each round trip waits for a busy CPU."""

    @event.listens_for(engine, "checkin")
    def _idle_from(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < IDLE_PING_S:
            return  # new, or used a moment ago
        try:
            with dbapi_conn.cursor() as cur:
                cur.execute("SELECT 1")
            dbapi_conn.rollback()  # end the transaction the ping opened
        except Exception as exc:
            # the pool drops this connection and hands out a fresh one
            raise DisconnectionError(str(exc)) from exc


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


#: Postgres advisory lock taken while migrating: replicas started together migrate in turn.
_MIGRATION_LOCK = 0x636F6C6C  # "coll"


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision``; safe to call at every start, and from several server
    processes at once (on Postgres they wait for each other; the later ones find it done)."""
    if engine.dialect.name != "postgresql":
        command.upgrade(alembic_config(engine), revision)
        return
    with engine.connect() as lock:
        lock.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _MIGRATION_LOCK})
        try:
            command.upgrade(alembic_config(engine), revision)
        finally:
            lock.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _MIGRATION_LOCK})


_TURN = "collapsewatch_write_turn"


def _take_turn(session: Session, _transaction: Any, _connection: Any) -> None:
    """A gated write transaction's first statement waits for its turn to write."""
    turn = session.info.pop(_TURN, None)
    if turn is not None:
        gate, urgent, stack = turn
        stack.enter_context(gate.hold(urgent))


class Database:
    """An engine and its sessions. A service opens one transaction per use case with
    :meth:`write` (committed at the end of the block, rolled back on an error) or reads with
    :meth:`read`; repositories take the session and never open their own."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        # SQLite writes one transaction at a time: this process's writers take turns here
        self._gate = WriteGate() if engine.dialect.name == "sqlite" else None
        event.listen(self._sessions, "after_begin", _take_turn)

    def read(self) -> Session:
        """A session for reads: ``with db.read() as s:`` (nothing is committed)."""
        return self._sessions()

    def write(self, urgent: bool = False) -> AbstractContextManager[Session]:
        """A transaction: ``with db.write() as s:`` commits at the end of the block. On
        SQLite an ``urgent`` one (a client waits for it) goes before this process's other
        writers (:mod:`collapsewatch_server.write_gate`)."""
        if self._gate is None:
            return self._sessions.begin()
        return self._gated(self._gate, urgent)

    @contextlib.contextmanager
    def _gated(self, gate: WriteGate, urgent: bool) -> Iterator[Session]:
        # The turn is taken at the transaction's first statement (``_take_turn``), as SQLite
        # takes its lock, and given back once it has committed or rolled back.
        with contextlib.ExitStack() as turn, self._sessions.begin() as s:
            s.info[_TURN] = (gate, urgent, turn)
            yield s

    def ping(self) -> bool:
        """True when the database answers."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False
