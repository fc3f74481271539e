"""Where every record ends up: prints stored / spooled / rejected / dropped, asserts nothing.

Starts the real server (``collapsewatch serve`` in a subprocess, on a free port and a temporary
SQLite file) and runs the cases of issue 15 through the public SDK API:

- ``scalars``: ``log_scalar`` of 100 floats a step for 2,000 steps (200,000 points), then
  ``finish(timeout=120)``: the send queue must not drop under a tracker's everyday load;
- ``tensors``: the same with 0-d tensors instead of floats;
- ``slow-finish``: a server that answers after 2 s, 2,051 tensor scalars logged just before
  ``finish(timeout=1)`` (they reach the sender as two packs of 1,024 and one of 3, so one
  flush holds more than a batch): whatever is not stored by then must be on disk, not lost.

"stored" is counted in the server's database, "spooled" and "rejected" by reading the spool's
files right after ``finish()`` returned (a batch both on disk and stored counts as stored),
"dropped" is what the SDK says it dropped; "made" is ``monitor.stats["records"]``. "lost" is
what none of them accounts for and must be 0. "logging s" is the training loop's time, "slowest
step ms" its longest step (100 ``log_scalar`` calls and ``step()``): a stall shows there.

    python bench/delivery.py                       # every case
    python bench/delivery.py --case scalars
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import torch
from servers import NO_NOTIFY_GROUPING, start_server
from torch import nn

import collapsewatch

PROBES = 100
STEPS = 2000
SLOW_RECORDS = 2051
SLOW_SECONDS = 2.0


def stored(db: Path, run_id: str) -> int:
    with sqlite3.connect(db) as conn:
        (count,) = conn.execute(
            "SELECT count(*) FROM stat_records WHERE run_id IN (?, ?)",
            (run_id, run_id.replace("-", "")),
        ).fetchone()
    return int(count)


def spool_snapshot(spool: Path) -> dict[str, tuple[int, bool]]:
    """The batches on disk now: batch id -> (records, set aside as rejected)."""
    out = {}
    for path in spool.rglob("*.json.gz") if spool.is_dir() else []:
        doc = json.loads(gzip.decompress(path.read_bytes()))
        out[doc["batch_id"]] = (len(doc["records"]), "rejected" in path.relative_to(spool).parts)
    return out


def on_disk(snapshot: dict[str, tuple[int, bool]], db: Path) -> tuple[int, int]:
    """Records waiting in the spool and set aside as rejected, as ``finish()`` left them; a
    spooled batch the server stored anyway (its answer came after the timeout) counts as
    stored, not twice."""
    with sqlite3.connect(db) as conn:
        known = {row[0] for row in conn.execute("SELECT batch_id FROM ingested_batches")}
    waiting = sum(n for b, (n, rej) in snapshot.items() if not rej and b not in known)
    rejected = sum(n for b, (n, rej) in snapshot.items() if rej and b not in known)
    return waiting, rejected


def slow_client(seconds: float) -> httpx.Client:
    """A client whose every request reaches the real server ``seconds`` late."""
    inner = httpx.Client(timeout=30)

    def handler(request: httpx.Request) -> httpx.Response:
        time.sleep(seconds)
        answer = inner.send(
            inner.build_request(
                request.method, request.url, headers=request.headers, content=request.content
            )
        )
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)

    return httpx.Client(transport=httpx.MockTransport(handler))


def run_case(case: str, server: str, db: Path, spool: Path) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"project": "bench", "run": case, "server": server}
    kwargs["spool_dir"] = spool
    if case == "slow-finish":
        kwargs["http_client"] = slow_client(SLOW_SECONDS)
    monitor = collapsewatch.watch(nn.Linear(2, 2), every=1000, **kwargs)
    started = time.perf_counter()
    slowest = 0.0  # the longest training step: a stall the SDK caused shows here
    if case == "slow-finish":
        for i in range(SLOW_RECORDS):
            monitor.log_scalar("tail", torch.tensor(float(i)))
        timeout = 1.0
    else:
        for step in range(STEPS):
            t0 = time.perf_counter()
            for p in range(PROBES):
                value = float(step * PROBES + p)
                monitor.log_scalar(f"s{p}", torch.tensor(value) if case == "tensors" else value)
            monitor.step()
            slowest = max(slowest, time.perf_counter() - t0)
        timeout = 120.0
    logged = time.perf_counter() - started
    monitor.finish(timeout=timeout)
    total = time.perf_counter() - started
    stats = monitor.stats
    snapshot = spool_snapshot(spool / str(monitor.run_id))  # what finish() left on disk
    time.sleep(SLOW_SECONDS + 1 if case == "slow-finish" else 0)  # let a late answer land
    waiting, rejected = on_disk(snapshot, db)
    row = {
        "case": case,
        "made": stats["records"],
        "stored": stored(db, str(monitor.run_id)),
        "spooled": waiting,
        "rejected": rejected,
        "dropped": stats["dropped"],
        "logging s": round(logged, 2),
        "slowest step ms": round(slowest * 1000, 1),
        "until finished s": round(total, 2),
    }
    row["lost"] = row["made"] - row["stored"] - row["spooled"] - row["rejected"] - row["dropped"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", choices=["scalars", "tensors", "slow-finish"], action="append")
    args = parser.parse_args()
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="cw-delivery-"))
    db_url = f"sqlite:///{tmp / 'bench.db'}"
    proc, url = start_server(db_url, tmp / "server.log", env=NO_NOTIFY_GROUPING, timeout=60)
    try:
        rows = [
            run_case(case, url, tmp / "bench.db", tmp / "spool")
            for case in args.case or ["scalars", "tensors", "slow-finish"]
        ]
    finally:
        proc.terminate()
        proc.wait(10)
    keys = list(rows[0])
    print("  ".join(f"{k:>16}" for k in keys))
    for row in rows:
        print("  ".join(f"{row[k]!s:>16}" for k in keys))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
