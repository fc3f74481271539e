"""Ingest throughput through HTTP: prints numbers, asserts nothing.

For each configuration (backend x server processes x concurrent runs) it starts real
``collapsewatch serve`` processes on a fresh database (a SQLite file, or a new Postgres
database), then every run posts its batches one after the other from its own thread, as a
trainer's sender does, runs spread over the server processes. A batch is ``--probes`` scalar
probes (``log_scalar``) x ``--batch-steps`` steps: one point per value. Bodies are built and
gzipped before the clock starts, so the client's CPU goes to HTTP only.

``--shape columns`` (the default) builds the bodies with the SDK's own encoder, as it sends
``log_scalar`` values: one column per probe (``IngestBatch.scalars``), a batch as large as the
SDK makes one (``Sender.batch_records`` over ``footprint.SCALAR_LOAD``: 200,000 values, 2,000
steps of 100 probes). ``--shape records`` sends one ``scalar`` record per point, 20 steps a
batch: what SDKs before columns sent, and the worst case per point.

Printed per configuration: points stored per second (from the first POST until every point is
readable through ``GET /api/v1/runs/{id}/series``: a server that answers before it has computed
the points is timed until it has), points per second answered, server CPU per 1,000 points
(user + system of the server processes, Postgres' own processes not included), the answer time
percentiles, and how many answers were 5xx or asked to wait (429/503 with Retry-After: the
client waits and sends again, as the SDK does).

    python bench/ingest.py                              # sqlite x1, postgres x1 and x2; 1/8/32 runs
    python bench/ingest.py --backend sqlite --runs 8 --points 1000000
    python bench/ingest.py --backend sqlite --shape records --points 200000
"""

from __future__ import annotations

import argparse
import gzip
import inspect
import json
import statistics
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
from servers import cpu_s, database, machine_load, percentile, servers

from collapsewatch.pipeline.footprint import SCALAR_LOAD
from collapsewatch.pipeline.sender import Sender
from collapsewatch.pipeline.wire import encode

PROJECT = "bench"


@dataclass
class Tally:
    """What the clients saw."""

    answer_ms: list[float] = field(default_factory=list)
    server_errors: int = 0
    throttled: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def bodies(
    run_index: int, points: int, probes: int, batch_steps: int, shape: str
) -> tuple[str, list[bytes]]:
    """A run's batches, gzipped as the SDK sends them: ``points`` in all."""
    run_id = str(uuid.uuid4())
    run = {
        "run_id": run_id,
        "project": PROJECT,
        "name": f"ingest-{run_index}",
        "started_at": datetime.now(UTC).isoformat(),
    }
    steps = max(1, points // probes)
    out = []
    for start in range(0, steps, batch_steps):
        records = [
            {
                "probe": f"metric/{p}",
                "kind": "scalar",
                "step": s,
                "stats": {"value": 1.0 / (1 + s) + p * 1e-3},
            }
            for s in range(start, min(start + batch_steps, steps))
            for p in range(probes)
        ]
        if shape == "columns":
            out.append(encode(run, records, None)[1])
            continue
        doc = {"batch_id": str(uuid.uuid4()), "run": run, "records": records}
        out.append(gzip.compress(json.dumps(doc, separators=(",", ":")).encode(), 1))
    return run_id, out


def post_all(url: str, batches: list[bytes], tally: Tally) -> None:
    """One run's sender: each batch in turn, waiting when the server asks for it."""
    headers = {"content-type": "application/json", "content-encoding": "gzip"}
    with httpx.Client(timeout=60) as client:
        for body in batches:
            while True:
                t0 = time.perf_counter()
                r = client.post(f"{url}/api/v1/ingest", content=body, headers=headers)
                ms = (time.perf_counter() - t0) * 1000
                with tally.lock:
                    tally.answer_ms.append(ms)
                    if r.status_code >= 500 and "retry-after" not in r.headers:
                        tally.server_errors += 1
                    if r.status_code in (429, 503) and "retry-after" in r.headers:
                        tally.throttled += 1
                if r.status_code in (429, 503) and "retry-after" in r.headers:
                    time.sleep(min(float(r.headers["retry-after"]), 5.0))
                    continue
                if r.status_code >= 500:
                    time.sleep(0.5)
                    continue
                r.raise_for_status()
                break


def stored_points(url: str, run_ids: list[str]) -> int:
    with httpx.Client(timeout=600) as client:
        return sum(
            s["points"]
            for run_id in run_ids
            for s in client.get(f"{url}/api/v1/runs/{run_id}/series").json()
        )


def one(
    backend: str, procs: int, runs: int, args: argparse.Namespace, tmp: Path
) -> dict[str, object]:
    per_run = args.points // runs
    made = [bodies(i, per_run, args.probes, args.batch_steps, args.shape) for i in range(runs)]
    expected = sum(max(1, per_run // args.probes) * args.probes for _ in range(runs))
    run_ids = [run_id for run_id, _ in made]
    tally = Tally()
    with database(backend, tmp) as db_url, servers(db_url, procs, tmp) as started:
        urls = [u for _, u in started]
        pids = [p.pid for p, _ in started]
        cpu0 = sum(cpu_s(pid) for pid in pids)
        t0 = time.perf_counter()
        threads = [
            threading.Thread(target=post_all, args=(urls[i % procs], batches, tally))
            for i, (_, batches) in enumerate(made)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        answered = time.perf_counter() - t0
        deadline = time.monotonic() + args.drain_timeout
        while True:
            polled = time.perf_counter()
            have = stored_points(urls[0], run_ids)
            if have >= expected or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        stored_s = max(answered, polled - t0)
        cpu = sum(cpu_s(pid) for pid in pids) - cpu0
    return {
        "backend": backend,
        "procs": procs,
        "runs": runs,
        "points": have,
        "expected": expected,
        "stored/s": have / stored_s,
        "answered/s": have / answered,
        "cpu ms/1k": cpu * 1000 / max(1, have) * 1000,
        "p50 ms": percentile(tally.answer_ms, 50),
        "p99 ms": percentile(tally.answer_ms, 99),
        "max ms": max(tally.answer_ms),
        "5xx": tally.server_errors,
        "throttled": tally.throttled,
        "mean ms": statistics.fmean(tally.answer_ms),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres"], action="append")
    parser.add_argument("--procs", type=int, action="append", help="server processes")
    parser.add_argument("--runs", type=int, action="append", help="concurrent runs")
    parser.add_argument("--points", type=int, default=400_000, help="per configuration")
    parser.add_argument("--probes", type=int, default=100, help="scalars per step")
    parser.add_argument("--shape", choices=["columns", "records"], default="columns")
    parser.add_argument(
        "--batch-steps", type=int, help="steps per batch (default: as the SDK batches the shape)"
    )
    parser.add_argument("--drain-timeout", type=float, default=600.0)
    args = parser.parse_args()
    if args.batch_steps is None:
        sdk_batch = inspect.signature(Sender).parameters["batch_records"].default
        columns = max(1, int(sdk_batch / SCALAR_LOAD) // args.probes)
        args.batch_steps = columns if args.shape == "columns" else 20
    configs = []
    for backend in args.backend or ["sqlite", "postgres"]:
        default_procs = [1] if backend == "sqlite" else [1, 2]
        for procs in args.procs or default_procs:
            for runs in args.runs or [1, 8, 32]:
                configs.append((backend, procs, runs))

    print(f"ingest through HTTP: {args.points:,} scalar points per configuration as "
          f"{args.shape}, batches of {args.probes} probes x {args.batch_steps} steps; "
          f"{machine_load()}")  # fmt: skip
    head = ("backend", "procs", "runs", "stored/s", "answered/s", "cpu ms/1k", "p50 ms", "p99 ms")
    print(
        "{:<9}{:>6}{:>6}{:>12}{:>12}{:>11}{:>9}{:>9}{:>6}{:>10}".format(*head, "5xx", "throttled")
    )
    with tempfile.TemporaryDirectory(prefix="cw-bench-ingest-", ignore_cleanup_errors=True) as d:
        tmp = Path(d)
        for backend, procs, runs in configs:
            row = one(backend, procs, runs, args, tmp)
            note = "" if row["points"] == row["expected"] else f"  ONLY {row['points']:,} stored"
            print(
                f"{backend:<9}{procs:>6}{runs:>6}{row['stored/s']:>12,.0f}"
                f"{row['answered/s']:>12,.0f}{row['cpu ms/1k']:>11.1f}{row['p50 ms']:>9.0f}"
                f"{row['p99 ms']:>9.0f}{row['5xx']:>6}{row['throttled']:>10}{note}",
                flush=True,
            )


if __name__ == "__main__":
    main()
