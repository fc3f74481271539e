"""How many webhooks a many-layer collapse sends, per event and grouped: prints numbers,
asserts nothing.

The real app (in this process, a temporary SQLite file, its worker running) with one generic
webhook to a receiver on 127.0.0.1 and the default rule pack. A run whose every one of
``--layers`` Linear layers loses 9 of its 10 units is ingested in two batches (half the layers
each), then its recovery: every default rule that fires on a layer fires (and resolves) there.

- "per event": ``notify_group_by`` = every label (run, family, rule, probe, severity) and no
  group wait or interval: one webhook per (rule, run, layer) transition, as before grouping;
- "grouped": the defaults (by run and family, 10 s group wait; ``--wait`` shortens it).

    python bench/notification_grouping.py                 # 24 layers
    python bench/notification_grouping.py --layers 48 --wait 2
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from fastapi.testclient import TestClient

from collapsewatch_server import create_app
from collapsewatch_server.config import Settings

WIDTH = 10
DEAD = 9


class Receiver:
    """Counts the webhooks and the alerts they carry."""

    def __init__(self) -> None:
        self.webhooks = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.webhooks += 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def activation(dead: int) -> dict[str, Any]:
    n = 8.0
    return {
        "n": n,
        "width": float(WIDTH),
        "sum": [1.0] * WIDTH,
        "sumsq": [2.0] * WIDTH,
        "pos": [0.0] * dead + [n] * (WIDTH - dead),
        "unit_sum": [0.5] * WIDTH,
        "eig": [float(WIDTH - i) for i in range(WIDTH)],
        "cov_n": n,
    }


def batch(run: str, layers: list[str], dead: int, start: int) -> dict[str, Any]:
    return {
        "batch_id": str(uuid.uuid4()),
        "run": {
            "run_id": run,
            "project": "bench",
            "name": "deep-net",
            "started_at": datetime(2025, 1, 1, tzinfo=UTC).isoformat(),
            "probes": [
                {"name": p, "kind": "activation", "module": "Linear", "order": i, "width": WIDTH}
                for i, p in enumerate(layers)
            ],
        },
        "records": [
            {"probe": p, "kind": "activation", "step": start + i, "stats": activation(dead)}
            for p in layers
            for i in range(8)
        ],
    }


def measure(layers: int, settings: dict[str, Any]) -> tuple[int, int]:
    """(alert events, webhooks received) for one collapse and its recovery."""
    names = [f"block{i:02d}" for i in range(layers)]
    receiver = Receiver()
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(Settings(db_url=f"sqlite:///{tmp}/b.db", worker_poll_s=0.1, **settings))
        with TestClient(app, base_url="http://127.0.0.1") as client:  # a Host the server trusts
            client.post("/api/v1/projects/bench/webhooks", json={"url": receiver.url})
            run = str(uuid.uuid4())
            half = layers // 2
            for part, dead, start in (
                (names[:half], DEAD, 0),
                (names[half:], DEAD, 0),
                (names, 0, 8),
            ):
                assert (
                    client.post("/api/v1/ingest", json=batch(run, part, dead, start)).status_code
                    == 202
                )
            events = len(client.get("/api/v1/alerts", params={"run_id": run, "limit": 1000}).json())
            quiet_since, last = time.monotonic(), -1
            while time.monotonic() - quiet_since < settings.get("notify_group_wait_s", 10) + 2:
                if receiver.webhooks != last:
                    quiet_since, last = time.monotonic(), receiver.webhooks
                time.sleep(0.1)
    receiver.server.shutdown()
    return events, receiver.webhooks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--wait", type=float, default=10.0, help="group wait of 'grouped' (s)")
    args = parser.parse_args()
    per_event = {
        "notify_group_by": ["run", "family", "rule", "probe", "severity"],
        "notify_group_wait_s": 0.0,
        "notify_group_interval_s": 0.0,
    }
    events, before = measure(args.layers, per_event)
    _, after = measure(args.layers, {"notify_group_wait_s": args.wait})
    print(f"{args.layers} layers collapsing then recovering: {events} alert events")
    print(f"  per event: {before} webhooks")
    print(f"  grouped (by run and family, group wait {args.wait:g} s): {after} webhooks")


if __name__ == "__main__":
    main()
