"""Many trainers on one server: prints numbers, asserts nothing.

Starts ``--procs`` real ``collapsewatch serve`` processes on a fresh database (a SQLite file,
or a new Postgres database), then ``--trainers`` training processes at once, each a small MLP
on 1 torch thread with ``collapsewatch.watch(..., every=5)`` for ``--minutes``, spread over the
server processes (no proxy: each trainer is given one server's URL). Each trainer's HTTP client
notes every ingest answer (status and time from request to answer; a request with no answer
within the SDK's 5 s is counted as "no answer"). At the end each trainer calls ``finish()``
and reports ``monitor.stats``; once the servers have nothing left to process, the records
stored per run are counted in the database.

Printed: records made, stored (%), still spooled and dropped by the SDKs; ingest answers
(2xx, 429 with Retry-After, 5xx, no answer) and their p50/p99/max time; the server
processes' resident memory over time (MiB, every ``--sample-s``).

``--nice N`` runs the trainers at a lower OS priority (``nice`` N): in a lab the trainers run on
their own machines, here they share the two cores with the server, and at the default priority
32 of them leave the server a thirty-second of the CPU. Both figures are worth printing.

    python bench/trainers.py                                   # 32 trainers, 3 minutes, SQLite
    python bench/trainers.py --backend postgres --procs 2 --minutes 10
    python bench/trainers.py --nice 10      # trainers below the server's priority
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from servers import database, machine_load, percentile, rss_mb, servers

PROJECT = "trainers"


# ------------------------------------------------------------------------- one trainer


def train(server: str, name: str, seconds: float, out: Path, spool: Path) -> None:
    """One trainer process: the two collapsewatch lines around a plain PyTorch loop."""
    import httpx
    import torch
    from torch import nn

    import collapsewatch

    torch.set_num_threads(1)
    answers: list[tuple[int, float]] = []
    started: list[float] = []

    def on_request(request: httpx.Request) -> None:
        if request.url.path.endswith("/ingest"):
            request.extensions["t0"] = time.perf_counter()
            started.append(time.perf_counter())

    def on_response(response: httpx.Response) -> None:
        t0 = response.request.extensions.get("t0")
        if t0 is not None:
            answers.append((response.status_code, (time.perf_counter() - t0) * 1000))

    client = httpx.Client(
        timeout=5.0, event_hooks={"request": [on_request], "response": [on_response]}
    )
    torch.manual_seed(hash(name) % 1000)
    model = nn.Sequential(
        nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1)
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    criterion = nn.MSELoss()
    monitor = collapsewatch.watch(
        model,
        optimizer=optimizer,
        criterion=criterion,
        every=5,
        project=PROJECT,
        run=name,
        server=server,
        http_client=client,
        spool_dir=spool,
    )
    x = torch.randn(512, 20)
    y = torch.sin(x[:, :1] * 2) + x[:, 1:2] ** 2
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        idx = torch.randint(0, 512, (64,))
        optimizer.zero_grad()
        loss = criterion(model(x[idx]), y[idx])
        loss.backward()
        optimizer.step()
    monitor.finish(timeout=120)
    out.write_text(
        json.dumps(
            {
                "run_id": str(monitor.run_id),
                "stats": monitor.stats,
                "answers": answers,
                "requests": len(started),
            }
        )
    )


# ----------------------------------------------------------------------------- counting


def stored_per_run(db_url: str) -> dict[str, int]:
    """Statistic records stored per run id (hyphens or not, as the backend keeps them)."""
    query = "SELECT run_id, count(*) FROM stat_records GROUP BY run_id"
    if db_url.startswith("sqlite"):
        import sqlite3

        with sqlite3.connect(db_url.split("///", 1)[1]) as conn:
            rows = conn.execute(query).fetchall()
    else:
        import psycopg

        with psycopg.connect(db_url) as conn:
            rows = conn.execute(query).fetchall()
    return {str(r).replace("-", ""): int(n) for r, n in rows}


def wait_drained(db_url: str, expected: int, timeout: float) -> float:
    """Seconds until the stored records stop changing (or reach ``expected``)."""
    t0 = time.monotonic()
    last, since = -1, time.monotonic()
    while time.monotonic() - t0 < timeout:
        now = sum(stored_per_run(db_url).values())
        if now >= expected:
            break
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since > 10:
            break
        time.sleep(1)
    return time.monotonic() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--procs", type=int, default=1, help="server processes")
    parser.add_argument("--trainers", type=int, default=32)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--sample-s", type=float, default=10.0, help="memory sampling period")
    parser.add_argument("--nice", type=int, default=0, help="OS niceness of the trainers")
    parser.add_argument("--trainer", nargs=4, help=argparse.SUPPRESS)  # server name seconds out
    args = parser.parse_args()
    if args.trainer:
        server, name, seconds, out = args.trainer
        train(server, name, float(seconds), Path(out), Path(out).with_suffix(".spool"))
        return

    tmp = Path(tempfile.mkdtemp(prefix="cw-bench-trainers-"))
    print(f"{args.trainers} trainers x {args.minutes:g} min (nice {args.nice}), {args.backend} x "
          f"{args.procs} server process(es); at start: {machine_load()}", flush=True)  # fmt: skip
    try:
        with database(args.backend, tmp) as db_url, servers(db_url, args.procs, tmp) as started:
            urls = [u for _, u in started]
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            trainers = []
            for i in range(args.trainers):
                out = tmp / f"trainer-{i}.json"
                cmd = [sys.executable, __file__, "--trainer", urls[i % len(urls)], f"mlp-{i}"]
                cmd += [str(args.minutes * 60), str(out)]
                log = open(tmp / f"trainer-{i}.log", "wb")  # noqa: SIM115 (closed with the process)
                proc = subprocess.Popen(
                    cmd,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    preexec_fn=(lambda: os.nice(args.nice)) if args.nice else None,
                )
                trainers.append((proc, out, log))
            memory: list[list[float]] = []
            t0 = time.monotonic()
            while any(p.poll() is None for p, _, _ in trainers):
                memory.append([rss_mb(p.pid) for p, _ in started])
                time.sleep(args.sample_s)
            trained = time.monotonic() - t0
            reports: list[dict[str, Any]] = []
            for p, out, log in trainers:
                log.close()
                if p.returncode != 0 or not out.exists():
                    print(f"  a trainer failed (exit {p.returncode}); see {log.name}")
                    continue
                reports.append(json.loads(out.read_text()))
            made = sum(r["stats"]["records"] for r in reports)
            drained = wait_drained(db_url, made, 600)
            memory.append([rss_mb(p.pid) for p, _ in started])
            stored = stored_per_run(db_url)
    finally:
        end_load = machine_load()

    stored_total = sum(stored.get(r["run_id"].replace("-", ""), 0) for r in reports)
    spooled = sum(r["stats"].get("spooled", 0) for r in reports)
    dropped = sum(r["stats"].get("dropped", 0) for r in reports)
    answers = [a for r in reports for a in r["answers"]]
    requests = sum(r["requests"] for r in reports)
    ok = sum(1 for code, _ in answers if 200 <= code < 300)
    throttled = sum(1 for code, _ in answers if code == 429)
    five = sum(1 for code, _ in answers if code >= 500)
    times = [ms for _, ms in answers]
    finished = sum(1 for r in reports if r["stats"].get("pending", 0) == 0)
    share = 100 * stored_total / max(1, made)
    print(f"trained {trained:.0f} s; {len(reports)} trainers reported, {finished} with nothing "
          f"pending; servers drained {drained:.0f} s after the last trainer")  # fmt: skip
    print(f"records: made {made:,}, stored {stored_total:,} ({share:.2f}%), "
          f"left spooled {spooled:,}, dropped {dropped:,}")  # fmt: skip
    print(f"ingest requests {requests:,}: 2xx {ok:,}, throttled (429) {throttled:,}, 5xx "
          f"{five:,}, no answer {requests - len(answers):,}")  # fmt: skip
    print(f"answer time ms: p50 {percentile(times, 50):.0f}  p99 {percentile(times, 99):.0f}  "
          f"max {max(times, default=float('nan')):.0f}")  # fmt: skip
    print(f"server RSS MiB every {args.sample_s:g} s (per process):")
    for i in range(len(memory[0]) if memory else 0):
        print("  " + " ".join(f"{m[i]:.0f}" for m in memory))
    print(f"at end: {end_load}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
