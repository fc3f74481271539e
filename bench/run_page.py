"""How fast a run page of a big run answers and paints: prints numbers, asserts nothing.

Ingests one run of ``--layers`` activation layers x ``--steps`` sampled steps through the real
ingest API of a real ``collapsewatch serve`` process on a SQLite file (synthetic statistics:
every step carries the per-unit positive counts behind ``dead_fraction``; every
``--full-every``-th step also the sums, unit sums and covariance spectrum behind the other
activation indicators). Layer ``layers.137`` (the middle one of a smaller model) loses every
unit from the middle of the run on, so the page has a collapse, an alert and a red heatmap row
to draw.

Then it measures:

* server time, as the client sees it (``httpx``, keep-alive, median of ``--repeat``): the run
  page's HTML, the figures of ``dead_fraction`` (one line per layer, every step: the biggest
  chart on the page), of ``effective_rank`` (every ``--full-every``-th step), the health and the
  spectrum endpoints, and the runs overview;
* in headless Chromium (Playwright, Debian's ``/usr/bin/chromium``), from the navigation's
  start: the HTML received (``responseEnd``), first contentful paint (Paint Timing), DOM
  content loaded, the first card's figures requested, received, its lines drawn, its heatmap
  drawn (the ``cw-first-*`` marks of run.js), and the first chart drawn (the
  ``cw-first-chart`` mark that run.js sets when the first figure has been fetched and
  rendered). "cold" is a fresh browser profile (the 4.8 MB
  Plotly bundle is fetched and compiled), "warm" a reload in the same profile.

    python bench/run_page.py                       # 200 layers x 10k steps (ingest ~6 min)
    python bench/run_page.py --db /tmp/big.db      # keep the database; later runs reuse it
    python bench/run_page.py --layers 20 --steps 1000
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from servers import post_ingest, start_server, timed_get, wait_processed

PROJECT = "bench"
RUN_NAME = "big-run"
CHROMIUM = "/usr/bin/chromium"
#: The layer that collapses half-way (the middle one of smaller models).
VICTIM = 137


# ----------------------------------------------------------------------------- ingest


def record(layer: int, step: int, args: argparse.Namespace) -> dict[str, Any]:
    width, n = args.width, 64.0
    dead = width if layer == args.victim and step >= args.steps // 2 else 0
    # a little drift per layer and step, so lines and heatmap rows differ
    alive = n * (0.3 + 0.2 * ((layer * 7 + step // 97) % 10) / 10)
    stats: dict[str, Any] = {
        "n": n,
        "width": float(width),
        "pos": [0.0] * dead + [alive] * (width - dead),
    }
    if step % args.full_every == 0:
        decay = 0.7 + 0.25 * (layer % 5) / 5 - (0.3 if dead else 0.0)
        stats |= {
            "sum": [0.1 * n] * width,
            "sumsq": [1.5 * n] * width,
            "unit_sum": [0.2 * n / width**0.5] * width,
            "eig": [decay**i for i in range(width)],
            "cov_n": n,
        }
    return {"probe": f"layers.{layer}", "kind": "activation", "step": step, "stats": stats}


def ingest(url: str, run_id: str, args: argparse.Namespace) -> float:
    """Send the run in batches of ``--batch-steps`` steps, two requests in flight."""
    probes = [
        {
            "name": f"layers.{i}",
            "kind": "activation",
            "module": "Linear" if i % 4 else "Conv2d",
            "order": i,
            "width": args.width,
            "params": args.width * (args.width + 1),
        }
        for i in range(args.layers)
    ]
    run = {
        "run_id": run_id,
        "project": PROJECT,
        "name": RUN_NAME,
        "host": socket.gethostname(),
        "torch_version": "synthetic",
        "config": {"layers": args.layers, "steps": args.steps, "width": args.width},
        "started_at": datetime.now(UTC).isoformat(),
        "probes": probes,
    }

    def send(start: int) -> None:
        steps = range(start, min(start + args.batch_steps, args.steps))
        records = [record(layer, s, args) for s in steps for layer in range(args.layers)]
        body = {"batch_id": str(uuid.uuid4()), "run": run, "records": records}
        post_ingest(client, url, json.dumps(body).encode(), HEADERS)

    t0 = time.perf_counter()
    done = 0
    with httpx.Client(timeout=300) as client, ThreadPoolExecutor(2) as pool:
        for _ in pool.map(send, range(0, args.steps, args.batch_steps)):
            done += args.batch_steps
            if done % (args.batch_steps * 40) == 0:
                rate = done * args.layers / (time.perf_counter() - t0)
                print(f"  ingested {done}/{args.steps} steps ({rate:,.0f} records/s)", flush=True)
    return time.perf_counter() - t0


HEADERS = {"content-type": "application/json"}


# ---------------------------------------------------------------------------- measure


def browser_times(page_url: str, repeat: int) -> list[dict[str, float]]:
    from playwright.sync_api import sync_playwright

    script = """() => {
      const nav = performance.getEntriesByType('navigation')[0];
      const paint = performance.getEntriesByName('first-contentful-paint')[0];
      const at = (name) => {
        const mark = performance.getEntriesByName(name)[0];
        return mark ? mark.startTime : NaN;
      };
      return {html: nav.responseEnd, fcp: paint ? paint.startTime : NaN,
              dcl: nav.domContentLoadedEventEnd, request: at('cw-first-request'),
              fetched: at('cw-first-fetched'), lines: at('cw-first-lines'),
              heatmap: at('cw-first-heatmap'), chart: at('cw-first-chart')};
    }"""
    out = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        for i in range(repeat):
            context = browser.new_context(viewport={"width": 1360, "height": 900})
            page = context.new_page()
            for label in ("cold", "warm"):
                if label == "cold":
                    page.goto(page_url)
                else:
                    page.reload()
                deadline = time.monotonic() + 120
                while not page.evaluate("performance.getEntriesByName('cw-first-chart').length"):
                    if time.monotonic() > deadline:
                        sys.exit("no chart drawn within 120 s")
                    page.wait_for_timeout(50)
                out.append({"label": label, "round": i, **page.evaluate(script)})
            context.close()
        browser.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=200)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--width", type=int, default=16, help="units per layer")
    parser.add_argument("--full-every", type=int, default=100)
    parser.add_argument("--batch-steps", type=int, default=25)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--db", help="SQLite file to use, and to reuse if it holds the run")
    args = parser.parse_args()
    args.victim = VICTIM if args.layers > VICTIM else args.layers // 2

    tmp = Path(tempfile.mkdtemp(prefix="cw-bench-"))
    db = Path(args.db) if args.db else tmp / "bench.db"
    # migrating a big file adds an index: a longer start
    proc, url = start_server(f"sqlite:///{db}", tmp / "server.log", timeout=120)
    try:
        with httpx.Client(timeout=300) as client:
            runs = client.get(f"{url}/api/v1/overview", params={"q": RUN_NAME}).json()
            if runs:
                run_id = runs[0]["run_id"]
                print(f"reusing run {run_id} in {db}")
            else:
                run_id = str(uuid.uuid4())
                print(f"ingesting {args.layers} layers x {args.steps} steps into {db} ...")
                took = ingest(url, run_id, args)
                print(f"  done in {took:.0f} s ({args.layers * args.steps / took:,.0f} records/s)")
            total = wait_processed(client, url, run_id)
            print(f"run {run_id}: {total:,} points in {db.stat().st_size / 2**20:,.0f} MiB\n")

            base = f"{url}/api/v1/runs/{run_id}"
            rows = [
                ("run page (HTML)", f"{url}/runs/{run_id}"),
                ("figures dead_fraction", f"{base}/figures/dead_fraction"),
                ("figures effective_rank", f"{base}/figures/effective_rank"),
                ("health", f"{base}/health"),
                ("spectrum", f"{base}/spectrum?probe=layers.{args.victim}&step={args.steps}"),
                ("runs overview", f"{url}/api/v1/overview"),
            ]
            print(f"server time, median of {args.repeat} (ms)")
            for name, target in rows:
                ms, size = timed_get(client, target, args.repeat)
                print(f"  {name:<24} {ms:8.0f} ms  {size / 1024:8.0f} KiB")
            body = client.get(f"{base}/figures/dead_fraction").json()
            lines, heat = (len(json.dumps(body[k])) / 1024 for k in ("lines", "heatmap"))
            print(
                f"  dead_fraction: {len(body['lines']['data'])} line traces,"
                f" lines {lines:,.0f} KiB, heatmap {heat:,.0f} KiB"
            )

        print(f"\nbrowser (headless Chromium), ms from navigation start, {args.repeat} rounds")
        results = browser_times(f"{url}/runs/{run_id}", args.repeat)
        for label in ("cold", "warm"):
            rs = [r for r in results if r["label"] == label]
            print(f"  {label}:")
            for key, name in (
                ("html", "HTML received"),
                ("fcp", "first contentful paint"),
                ("dcl", "DOM content loaded"),
                ("request", "figures requested"),
                ("fetched", "figures received"),
                ("lines", "lines drawn"),
                ("heatmap", "heatmap drawn"),
                ("chart", "first chart drawn"),
            ):
                values = [r[key] for r in rs]
                if any(v != v for v in values):  # NaN: a run.js without that mark
                    continue
                print(
                    f"    {name:<24} median {statistics.median(values):7.0f}"
                    f"   min {min(values):7.0f}   max {max(values):7.0f}"
                )
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        # the temporary directory holds the server's log and, without --db, the database
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
