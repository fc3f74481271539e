"""Fixtures that build real things: a SQLite file, a fresh Postgres database, the real app."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

# FastAPI's TestClient sends ``Host: testserver``: the tests' servers answer to it (and to
# loopback names, as every server does); production defaults never trust it. Set for the whole
# process, so apps built by fixtures of any scope and servers in subprocesses see it.
os.environ["COLLAPSEWATCH_ALLOWED_HOSTS"] = "testserver"
# An ingest answer waits for its batch's points up to 30 s (the default, 0.5 s, keeps a loaded
# server's answers short): tests read right after a 202, and under two xdist workers a batch
# can take longer than 0.5 s to process. Whole process and subprocesses, as above; a test of
# the default builds its Settings with ``ingest_wait_s`` given.
os.environ["COLLAPSEWATCH_INGEST_WAIT_S"] = "30"

PG_ADMIN_URL = os.environ.get(
    "COLLAPSEWATCH_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def _pg_available() -> bool:
    import psycopg

    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The Postgres admin URL; a missing Postgres skips locally and fails under CI."""
    if not _pg_available():
        if os.environ.get("CI"):
            pytest.fail(f"Postgres is required in CI and not reachable at {PG_ADMIN_URL}")
        pytest.skip(f"no Postgres at {PG_ADMIN_URL}")
    return PG_ADMIN_URL


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A fresh, empty Postgres database for one test, dropped afterwards."""
    import psycopg
    from psycopg import sql

    name = f"cw_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    base = pg_server.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture
def sqlite_url(tmp_path: Any) -> str:
    return f"sqlite:///{tmp_path}/collapsewatch.db"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """Both backends: every test using it runs on a SQLite file and on a real Postgres."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("pg_url")


@pytest.fixture
def settings(db_url: str) -> Any:
    from collapsewatch_server.config import Settings

    # an ingest answer waits for its batch's points up to 30 s, not 2: tests read right after
    # a 202, and on a loaded machine a 1,000-record batch takes longer than 2 s to process
    return Settings(db_url=db_url, ingest_wait_s=30.0)


@pytest.fixture
def app(settings: Any) -> Any:
    from collapsewatch_server import create_app

    return create_app(settings)


@pytest.fixture
def client(app: Any) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    with TestClient(app) as c:
        yield c
