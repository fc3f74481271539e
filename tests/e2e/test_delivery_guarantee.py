"""The SDK's delivery guarantee against the real app and a real SQLite file: every record ends
stored, spooled, set aside as rejected, or counted as dropped, and the counts are exact.

The app runs in-process (Starlette's TestClient is the SDK's HTTP client); what we do not own
(a network that goes down, a server that answers slowly) is an ``httpx.MockTransport`` that
forwards to it. Counts of stored records are read from the database.
"""

from __future__ import annotations

import gzip
import json
import logging
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import torch
from fastapi.testclient import TestClient
from torch import nn

import collapsewatch
from collapsewatch.pipeline.replay import sync
from collapsewatch.pipeline.sender import Sender
from collapsewatch.pipeline.spool import Spool
from collapsewatch.pipeline.wire import encode
from collapsewatch.schemas import IngestBatch
from collapsewatch_server import create_app
from collapsewatch_server.config import Settings
from collapsewatch_server.services import ingest_tokens
from collapsewatch_server.tables import IngestedBatch, QueuedBatch
from tests.e2e.conftest import LiveServer
from tests.helpers import loss_record

SERVER = "http://testserver"
ADMIN = "admin-token-for-delivery-tests"
#: a step the database cannot hold: today a 500 from the server, a 422 once it checks bounds;
#: either way the batch must end in rejected/ and not block the batches after it
POISON_STEP = 2**63


@pytest.fixture
def app(sqlite_url: str) -> Iterator[TestClient]:
    # the server's own errors come back as 500 answers, as over a network
    with TestClient(
        create_app(Settings(db_url=sqlite_url)), raise_server_exceptions=False
    ) as client:
        yield client


@pytest.fixture
def locked(sqlite_url: str) -> Iterator[TestClient]:
    """The app with auth on: ingest needs a project's token."""
    settings = Settings(db_url=sqlite_url, admin_token=ADMIN)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def stored(sqlite_url: str, run_id: str | uuid.UUID) -> int:
    """Records of the run's batches the server has processed (taken off its queue): each
    value of a scalar column counts as one, as the SDK counts it (a value logged twice at one
    step is stored as one point)."""
    engine = sa.create_engine(sqlite_url)
    try:
        with engine.connect() as conn:
            processed = sa.select(sa.func.sum(IngestedBatch.records)).where(
                IngestedBatch.run_id == str(run_id),
                IngestedBatch.batch_id.not_in(sa.select(QueuedBatch.batch_id)),
            )
            return int(conn.scalar(processed) or 0)
    finally:
        engine.dispose()


def stored_eventually(sqlite_url: str, run_id: str | uuid.UUID, expected: int) -> int:
    """Stat records of the run once the server's processor has taken every accepted batch (a
    202 means accepted and queued, not yet processed), or after two minutes."""
    deadline = time.monotonic() + 120
    count = stored(sqlite_url, run_id)
    while count < expected and time.monotonic() < deadline:
        time.sleep(0.5)
        count = stored(sqlite_url, run_id)
    return count


def spooled_records(directory: Path) -> int:
    """Records in the batches waiting in a spool directory (rejected/ left out)."""
    return sum(
        IngestBatch.model_validate_json(gzip.decompress(p.read_bytes())).size
        for p in directory.glob("*.json.gz")
    )


def forwarding(app: TestClient, down: threading.Event | None = None, delay: float = 0.0) -> Any:
    """A network to the app that can be down (``down`` set) or slow (``delay`` seconds)."""

    def handler(request: httpx.Request) -> httpx.Response:
        if down is not None and down.is_set():
            raise httpx.ConnectError("connection refused", request=request)
        time.sleep(delay)
        answer = app.request(
            request.method, request.url.path, content=request.content, headers=request.headers
        )
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)

    return httpx.Client(transport=httpx.MockTransport(handler))


def run_doc(project: str = "delivery") -> dict[str, Any]:
    return {
        "run_id": str(uuid.uuid4()),
        "project": project,
        "name": "r",
        "started_at": "2024-01-01T00:00:00Z",
    }


def wait_for(condition: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def counts(sender: Sender) -> tuple[int, int, int, int, int]:
    c = sender.counters()
    return c["stored"], c["spooled"], c["rejected"], c["dropped"], c["pending"]


def test_a_poison_batch_is_set_aside_and_the_later_batches_are_stored(
    app: TestClient, sqlite_url: str, tmp_path: Path
) -> None:
    run = run_doc()
    spool = Spool(tmp_path / "run")
    sender = Sender(
        server=SERVER, token=None, spool=spool, run=lambda: run, client=app, batch_records=1
    )
    sender.submit([loss_record(POISON_STEP)])
    wait_for(lambda: sender.counters()["pending"] == 0)  # refused or failed: on disk
    for step in range(5):
        sender.submit([loss_record(step)])
    sender.close("finished", timeout=60)

    assert counts(sender) == (5, 0, 1, 0, 0)
    assert stored_eventually(sqlite_url, run["run_id"], 5) == 5
    assert spool.pending() == []
    (poison,) = spool.rejected.glob("*.json.gz")
    assert [r["step"] for r in json.loads(gzip.decompress(poison.read_bytes()))["records"]] == [
        POISON_STEP
    ]
    (note,) = spool.rejected.glob("*.answer.json")
    assert json.loads(note.read_text())["status"] in (422, 500)
    status = app.get(f"/api/v1/runs/{run['run_id']}").json()["status"]
    assert status == "finished", "the run is closed despite the poison batch"


def test_sync_sets_a_poison_batch_aside_and_sends_the_rest(
    app: TestClient, sqlite_url: str, tmp_path: Path
) -> None:
    run = run_doc()
    spool = Spool(tmp_path / "spool" / run["run_id"])
    for records in (
        [loss_record(0), loss_record(1)],
        [loss_record(POISON_STEP)],
        [loss_record(2)],
        [loss_record(3)],
    ):
        spool.write(*encode(run, records, None))

    report = sync(tmp_path / "spool", server=SERVER, http_client=app)
    assert (report.sent, report.duplicate, report.rejected, report.kept) == (3, 0, 1, 0)
    assert stored_eventually(sqlite_url, run["run_id"], 4) == 4
    assert [p.name for p in spool.rejected.iterdir()] != []
    assert spool.pending() == []
    again = sync(tmp_path / "spool", server=SERVER, http_client=app)
    assert (again.sent, again.rejected, again.kept) == (0, 0, 0), "rejected/ is left alone"


def test_a_token_revoked_during_an_outage_loses_nothing_and_sync_recovers_it(
    locked: TestClient, sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = locked.app.state.context
    first = ingest_tokens.create_token(ctx, "delivery", "laptop")
    down = threading.Event()
    run = run_doc()
    spool = Spool(tmp_path / "spool" / run["run_id"])
    sender = Sender(
        server=SERVER, token=first.token, spool=spool, run=lambda: run,
        client=forwarding(locked, down), batch_records=5, offline_retry=0.0,
    )  # fmt: skip
    sender.submit([loss_record(s) for s in range(10)])
    wait_for(lambda: sender.counters()["stored"] == 10)

    down.set()  # the outage
    sender.submit([loss_record(s) for s in range(10, 20)])
    wait_for(lambda: sender.counters()["spooled"] == 10)
    ingest_tokens.revoke_token(ctx, "delivery", first.id)  # meanwhile the token is revoked
    down.clear()
    with caplog.at_level(logging.WARNING, logger="collapsewatch"):
        sender.submit([loss_record(s) for s in range(20, 30)])  # answered 401
        sender.close("finished", timeout=30)

    assert counts(sender) == (10, 20, 0, 0, 0), "refused batches are kept, not deleted"
    assert spooled_records(spool.directory) == 20
    refused = [r.getMessage() for r in caplog.records if "refused the" in r.getMessage()]
    assert len(refused) == 1 and "token" in refused[0] and "collapsewatch sync" in refused[0]

    second = ingest_tokens.create_token(ctx, "delivery", "laptop, again")
    wrong = sync(tmp_path / "spool", server=SERVER, token=first.token, http_client=locked)
    assert (wrong.sent, wrong.kept) == (0, len(spool.pending())) and "401" in wrong.problems[0]
    report = sync(tmp_path / "spool", server=SERVER, token=second.token, http_client=locked)
    assert (report.rejected, report.kept) == (0, 0)
    assert stored_eventually(sqlite_url, run["run_id"], 30) == 30, "every record recovered"
    status = locked.get(
        f"/api/v1/runs/{run['run_id']}", headers={"authorization": f"Bearer {ADMIN}"}
    ).json()["status"]
    assert status == "finished"


def test_a_wrong_token_spools_the_run_and_sync_with_the_right_one_stores_it(
    locked: TestClient, sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = nn.Linear(4, 4)
    with caplog.at_level(logging.WARNING, logger="collapsewatch"):
        monitor = collapsewatch.watch(
            model, project="delivery", server=SERVER, token="cw_wrong", http_client=locked,
            every=1, spool_dir=tmp_path / "spool",
        )  # fmt: skip
        for step in range(20):
            model(torch.randn(8, 4))
            monitor.log_scalar("lr", 0.1 * step)
            monitor.step()
        monitor.finish()
    stats = monitor.stats
    assert stats["spooled"] == stats["records"] > 0, "401 spools: nothing dropped"
    assert stats["stored"] == stats["dropped"] == stats["rejected"] == stats["pending"] == 0
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2, said  # what to fix, once; the account at finish
    assert "HTTP 401" in said[0] and "COLLAPSEWATCH_TOKEN" in said[0]
    assert f"{stats['records']} spooled" in said[1]

    token = ingest_tokens.create_token(locked.app.state.context, "delivery").token
    run_dir = tmp_path / "spool" / str(monitor.run_id)
    report = sync(run_dir, server=SERVER, token=token, http_client=locked)
    assert report.complete and report.sent == stats["batches_spooled"]
    assert stored_eventually(sqlite_url, monitor.run_id, stats["records"]) == stats["records"]


def test_a_slow_server_at_finish_leaves_every_record_stored_or_spooled(
    app: TestClient, sqlite_url: str, tmp_path: Path
) -> None:
    """2,051 scalars (and, at finish, the weights as the run ends: 3 records) reach the sender
    as packs of 1,024, 1,024 and 6; finish() times out while the first batch is in flight."""
    model = nn.Linear(2, 2)
    monitor = collapsewatch.watch(
        model, server=SERVER, http_client=forwarding(app, delay=1.0), every=10_000,
        spool_dir=tmp_path / "spool",
    )  # fmt: skip
    for i in range(2051):
        monitor.log_scalar("tail", torch.tensor(float(i)))
    monitor.finish(timeout=0.3)
    stats = monitor.stats
    run_dir = tmp_path / "spool" / str(monitor.run_id)
    on_disk = spooled_records(run_dir)

    total = 2051 + 3  # weight, bias and their (global) sparsity sums
    assert stats["records"] == total
    assert stats["stored"] + stats["spooled"] == total, stats
    assert stats["dropped"] == stats["rejected"] == stats["pending"] == 0
    assert on_disk == stats["spooled"] > 0

    for thread in threading.enumerate():  # the batch in flight may still land: let it
        if thread.name == "collapsewatch-sender":
            thread.join(timeout=30)
    report = sync(run_dir, server=SERVER, http_client=app)
    assert report.complete
    assert stored_eventually(sqlite_url, monitor.run_id, total) == total


@pytest.mark.slow
def test_a_tracker_load_of_scalars_is_stored_whole(
    app: TestClient, sqlite_url: str, tmp_path: Path
) -> None:
    """100 float scalars a step for 2,000 steps: the queue spools instead of dropping, and the
    spooled part is sent before finish() returns."""
    monitor = collapsewatch.watch(
        nn.Linear(2, 2), server=SERVER, http_client=app, every=10_000, spool_dir=tmp_path
    )
    for step in range(2000):
        for p in range(100):
            monitor.log_scalar(f"s{p}", float(step * 100 + p))
        monitor.step()
    monitor.finish(timeout=600)
    stats = monitor.stats
    assert stats["records"] >= 200_000
    assert stats["stored"] == stats["records"], stats
    assert stats["spooled"] == stats["dropped"] == stats["rejected"] == 0
    assert stored_eventually(sqlite_url, monitor.run_id, stats["records"]) == stats["records"]


# ------------------------------------------------------------------ collapsewatch sync (CLI)


def cli_sync(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "collapsewatch_server.cli", "sync", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_sync_of_a_missing_directory_fails(tmp_path: Path) -> None:
    done = cli_sync(str(tmp_path / "nonexistent"))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "no spool directory" in done.stderr


def test_sync_reports_sent_rejected_and_kept_with_its_exit_code(
    live_server: LiveServer, tmp_path: Path
) -> None:
    run = run_doc()
    spool = Spool(tmp_path / "spool" / run["run_id"])
    spool.write(*encode(run, [loss_record(0)], None))
    spool.write(str(uuid.uuid4()), gzip.compress(b"{not json"))  # answered 400
    spool.write(*encode(run, [loss_record(1)], "finished"))

    done = cli_sync(str(tmp_path / "spool"), "--server", live_server.url)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "2 batches sent, 0 already stored, 1 rejected" in done.stdout
    assert "0 kept" in done.stdout and "HTTP 400" in done.stderr

    again = cli_sync(str(tmp_path / "spool"), "--server", live_server.url)
    assert again.returncode == 0 and "0 batches sent" in again.stdout
    retry = cli_sync(str(spool.rejected), "--server", live_server.url)
    assert retry.returncode == 1 and "1 rejected" in retry.stdout  # still refused, kept aside
    assert len(list(spool.rejected.glob("*.json.gz"))) == 1

    gone = cli_sync(str(tmp_path / "spool"), "--server", "http://127.0.0.1:9")
    assert gone.returncode == 0, "nothing left to send is a success"
