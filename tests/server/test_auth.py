"""Tokens: admin token for reads, project ingest tokens stored hashed, loopback-only default."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from collapsewatch_server import create_app, errors
from collapsewatch_server.config import Settings
from collapsewatch_server.services import ingest_tokens
from collapsewatch_server.tables import IngestToken
from tests.helpers import make_batch

ADMIN = "admin-secret-for-tests"


@pytest.fixture
def locked(sqlite_url: str) -> Any:
    app = create_app(Settings(db_url=sqlite_url, admin_token=ADMIN))
    with TestClient(app) as c:
        yield c


def ingest(client: Any, batch: dict[str, Any], token: str | None) -> Any:
    headers = {"content-type": "application/json", "content-encoding": "gzip"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    return client.post(
        "/api/v1/ingest", content=gzip.compress(json.dumps(batch).encode()), headers=headers
    )


def test_reads_need_the_admin_token(locked: Any) -> None:
    r = locked.get("/api/v1/runs")
    assert r.status_code == 401
    assert r.json()["detail"] == errors.AUTH_MISSING
    assert r.headers["www-authenticate"] == "Bearer"
    assert locked.get("/api/v1/runs", headers={"authorization": "Bearer wrong"}).status_code == 401
    assert (
        locked.get("/api/v1/runs", headers={"authorization": f"Bearer {ADMIN}"}).status_code == 200
    )
    assert locked.get("/healthz").status_code == 200  # load balancers need no token


def test_project_token_ingests_only_into_its_project(locked: Any) -> None:
    ctx = locked.app.state.context
    created = ingest_tokens.create_token(ctx, "vision", "laptop")
    assert created.token.startswith("cw_")

    assert ingest(locked, make_batch(project="vision"), None).status_code == 401
    assert ingest(locked, make_batch(project="vision"), "cw_forged").status_code == 401
    assert ingest(locked, make_batch(project="vision"), created.token).status_code == 202
    other = ingest(locked, make_batch(project="audio"), created.token)
    assert other.status_code == 403
    assert other.json()["detail"] == errors.AUTH_WRONG_PROJECT.format(project="vision")
    assert ingest(locked, make_batch(project="audio"), ADMIN).status_code == 202
    # a project token is not a read token
    assert (
        locked.get("/api/v1/runs", headers={"authorization": f"Bearer {created.token}"}).status_code
        == 401
    )

    ingest_tokens.revoke_token(ctx, "vision", created.id)
    assert ingest(locked, make_batch(project="vision"), created.token).status_code == 401


def test_tokens_are_stored_hashed(locked: Any) -> None:
    ctx = locked.app.state.context
    created = ingest_tokens.create_token(ctx, "vision")
    with ctx.db.engine.connect() as conn:
        rows = conn.execute(select(IngestToken.token_hash, IngestToken.prefix)).all()
    assert len(rows) == 1
    token_hash, prefix = rows[0]
    assert created.token not in token_hash
    assert created.token.startswith(prefix) and len(prefix) < len(created.token) // 3
    assert [t.prefix for t in ingest_tokens.list_tokens(ctx, "vision")] == [prefix]


def test_cli_token_create_prints_a_working_token(sqlite_url: str) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "collapsewatch_server.cli",
            "token",
            "create",
            "--project",
            "nlp",
            "--db",
            sqlite_url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    token = out.stdout.strip()
    app = create_app(Settings(db_url=sqlite_url, admin_token=ADMIN))
    with TestClient(app) as c:
        assert ingest(c, make_batch(project="nlp"), token).status_code == 202


def test_serve_refuses_a_public_address_without_a_token(sqlite_url: str) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "collapsewatch_server.cli",
            "serve",
            "--host",
            "0.0.0.0",
            "--db",
            sqlite_url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"},
    )
    assert out.returncode != 0
    assert errors.REFUSE_PUBLIC_WITHOUT_TOKEN.format(host="0.0.0.0") in out.stderr
