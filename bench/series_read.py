"""Reads of long series: prints numbers, asserts nothing.

Ingests, through the real ingest API of a real ``collapsewatch serve`` process (SQLite file by
default) and the SDK's encoder (scalars in columns, stored as blocks of points), one run with a
scalar probe ``metric`` of ``--points`` steps (1M by default: a 1M-point
series) and ``--heatmap-probes`` more scalar probes ``layer/i`` of ``--points /
--heatmap-probes`` steps each (a layer x step heatmap of as many points again). Then it measures
server time as the client sees it (``httpx`` on loopback, keep-alive, median of ``--repeat``):

* points: ``GET /api/v1/runs/{id}/series/value?probe=metric&max_points=1000``;
* figure: ``GET /api/v1/runs/{id}/figures/value`` restricted to the one long series is not an
  endpoint, so the figure of the run's ``value`` indicator is timed on a second run that holds
  only ``metric`` (the same 1M points);
* listing: ``GET /api/v1/runs/{id}/series``;
* heatmap: the figures endpoint of the run with the ``layer/i`` probes (lines and heatmap).

    python bench/series_read.py                        # 1M points
    python bench/series_read.py --db /tmp/series.db    # keep the database; later runs reuse it
    python bench/series_read.py --points 200000 --db postgresql://postgres@127.0.0.1/cw
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx
from servers import machine_load, post_ingest, servers, timed_get

from collapsewatch.pipeline.wire import encode

PROJECT = "bench"
HEADERS = {"content-type": "application/json", "content-encoding": "gzip"}


def ingest(url: str, name: str, probes: dict[str, int], batch_records: int) -> str:
    """A run whose probes have the given numbers of steps; returns its id."""
    run_id = str(uuid.uuid4())
    run = {
        "run_id": run_id,
        "project": PROJECT,
        "name": name,
        "started_at": datetime.now(UTC).isoformat(),
    }
    longest = max(probes.values())
    per_step = len(probes)
    steps_per_batch = max(1, batch_records // per_step)

    def send(start: int) -> None:
        records = [
            {
                "probe": probe,
                "kind": "scalar",
                "step": s,
                # a slow decay with a wiggle, and a spike every 100k steps
                "stats": {"value": 1.0 / (1 + s / 1000) + (s % 7) * 1e-3 + (s % 100_000 == 5)},
            }
            for s in range(start, min(start + steps_per_batch, longest))
            for probe, steps in probes.items()
            if s < steps
        ]
        post_ingest(client, url, encode(run, records, None)[1], HEADERS)  # as the SDK sends

    with httpx.Client(timeout=600) as client, ThreadPoolExecutor(2) as pool:
        list(pool.map(send, range(0, longest, steps_per_batch)))
    return run_id


def wait_stored(client: httpx.Client, url: str, run_id: str, expected: int) -> None:
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        listed = client.get(f"{url}/api/v1/runs/{run_id}/series").json()
        if sum(s["points"] for s in listed) >= expected:
            return
        time.sleep(0.5)
    raise SystemExit(f"run {run_id}: points still missing after 30 minutes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--heatmap-probes", type=int, default=16)
    parser.add_argument("--batch-records", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--db", help="SQLite file or database URL to use, and reuse")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="cw-bench-series-"))
    db_url = args.db or f"sqlite:///{tmp}/series.db"
    if "://" not in db_url:
        db_url = f"sqlite:///{Path(db_url).resolve()}"
    try:
        with servers(db_url, 1, tmp) as [(_, url)], httpx.Client(timeout=600) as client:
            found = {r["name"]: r["run_id"] for r in client.get(f"{url}/api/v1/runs").json()}
            layers = {
                f"layer/{i}": args.points // args.heatmap_probes for i in range(args.heatmap_probes)
            }
            wanted = {
                "long": {"metric": args.points},
                "heatmap": layers,
            }
            ids = {}
            for name, probes in wanted.items():
                if name in found:
                    ids[name] = found[name]
                    print(f"reusing run {name} ({found[name]})")
                    continue
                t0 = time.perf_counter()
                ids[name] = ingest(url, name, probes, args.batch_records)
                wait_stored(client, url, ids[name], sum(probes.values()))
                took = time.perf_counter() - t0
                total = sum(probes.values())
                print(f"ingested run {name}: {total:,} points in {took:.0f} s "
                      f"({total / took:,.0f} points/s)", flush=True)  # fmt: skip

            base = f"{url}/api/v1/runs"
            rows = [
                (
                    "points (max_points=1000)",
                    f"{base}/{ids['long']}/series/value?probe=metric&max_points=1000",
                ),
                ("figure of the series", f"{base}/{ids['long']}/figures/value"),
                ("series listing", f"{base}/{ids['long']}/series"),
                (
                    f"heatmap ({args.heatmap_probes} probes)",
                    f"{base}/{ids['heatmap']}/figures/value",
                ),
                ("heatmap run's listing", f"{base}/{ids['heatmap']}/series"),
            ]
            print(f"\nserver time, median of {args.repeat}, {machine_load()}")
            for name, target in rows:
                ms, size = timed_get(client, target, args.repeat)
                print(f"  {name:<28} {ms:8.1f} ms  {size / 1024:8.0f} KiB", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
