"""The operator's test: ``kill -9`` of the server process while the SDK streams into it, on
SQLite and Postgres. The SDK spools while the server is gone; once it is back (same port,
same database) the spool is re-sent or synced, the killed process's half-processed batches are
taken over when their lease ends, and every record is stored exactly once."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from torch import nn

import collapsewatch
from collapsewatch.pipeline.replay import sync
from tests.e2e.conftest import LiveServer, start_server
from tests.helpers import free_port, stored_records

STEPS = 600
SCALARS = 20
#: a batch leased by the killed process is processed by the next one after this long
LEASE_S = "2"
#: the server stays down at least this long (the SDK sends once a second or more often)
OUTAGE_S = 3.0


def stored_counts(db_url: str, run_id: str) -> tuple[int, int]:
    """(records, distinct (probe, step)) of the run in the database."""
    records = stored_records(db_url, run_id)
    return len(records), len(set(records))


def serve(db_url: str, port: int, log: Path) -> LiveServer:
    return start_server(db_url, port=port, log=log, env={"COLLAPSEWATCH_INGEST_LEASE_S": LEASE_S})


@pytest.mark.slow
def test_kill_9_mid_stream_loses_and_duplicates_nothing(db_url: str, tmp_path: Path) -> None:
    port = free_port()
    server = serve(db_url, port, tmp_path / "first.log")
    monitor = collapsewatch.watch(
        nn.Linear(2, 2), project="ops", server=server.url, every=10_000, spool_dir=tmp_path
    )
    killed_at = 0.0
    try:
        for step in range(STEPS):
            for p in range(SCALARS):
                monitor.log_scalar(f"s{p}", float(step * SCALARS + p))
            monitor.step()
            if step == STEPS // 3:
                server.process.send_signal(signal.SIGKILL)  # kill -9: no shutdown of any kind
                server.process.wait(timeout=10)
                server.stop()
                killed_at = time.monotonic()
            elif step == 2 * STEPS // 3:
                # down for longer than the SDK's batch window: it sends into the outage
                time.sleep(max(0.0, killed_at + OUTAGE_S - time.monotonic()))
                server = serve(db_url, port, tmp_path / "second.log")
            time.sleep(0.002)  # a training step's pace: the stream spans the outage
        monitor.finish(timeout=300)
        stats = monitor.stats
        assert stats["batches_spooled"] > 0, "the SDK saw the outage and spooled"
        assert stats["records"] >= STEPS * SCALARS
        assert stats["dropped"] == stats["rejected"] == stats["pending"] == 0, stats
        assert stats["stored"] + stats["spooled"] == stats["records"], stats
        if stats["spooled"]:
            report = sync(tmp_path / str(monitor.run_id), server=server.url)
            assert report.complete and report.rejected == 0
        deadline = time.monotonic() + 120
        while stored_counts(db_url, str(monitor.run_id))[0] < stats["records"]:
            assert time.monotonic() < deadline, (stored_counts(db_url, str(monitor.run_id)), stats)
            time.sleep(0.5)
        total, distinct = stored_counts(db_url, str(monitor.run_id))
        assert total == distinct == stats["records"], "every record stored exactly once"
    finally:
        server.stop()
