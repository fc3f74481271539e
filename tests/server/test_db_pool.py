"""The Postgres pool hands out live connections: one that sat idle is tested first, and one
whose server process died is replaced (real Postgres)."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, exc, text
from sqlalchemy.pool import NullPool

from collapsewatch_server import db

pytestmark = pytest.mark.postgres


def _kill(url: str, pid: int) -> None:
    """End a server process from another connection (a restart, a proxy's timeout)."""
    killer = create_engine(db.normalise_url(url), poolclass=NullPool)
    with killer.connect() as conn:
        conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    killer.dispose()


def _pooled_backend(engine: object) -> int:
    with engine.connect() as conn:  # type: ignore[attr-defined]
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def test_an_idle_connection_that_died_is_replaced(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "IDLE_PING_S", 0.0)  # every pooled connection counts as idle
    engine = db.make_engine(pg_url)
    dead = _pooled_backend(engine)
    _kill(pg_url, dead)
    assert _pooled_backend(engine) != dead, "a fresh connection, no error"
    engine.dispose()


def test_a_connection_used_a_moment_ago_is_not_pinged(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the other side of the same rule: no ping, so a connection that died unseen fails once
    monkeypatch.setattr(db, "IDLE_PING_S", 3600.0)
    engine = db.make_engine(pg_url)
    dead = _pooled_backend(engine)
    _kill(pg_url, dead)
    with pytest.raises(exc.OperationalError):
        _pooled_backend(engine)
    assert _pooled_backend(engine) != dead, "the pool dropped it"
    engine.dispose()
