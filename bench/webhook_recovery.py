"""How soon alerts arrive after a webhook receiver's outage: prints numbers, asserts nothing.

The real app (in this process, a temporary SQLite file, its worker running, default delivery
settings: backoff up to 30 s, a recovered receiver's backlog released 20 a second) and a
receiver on 127.0.0.1 that goes down for ``--outage`` seconds. During the outage ``--alerts``
runs each fire a rule (one notification each: a run is a group), spread over the outage's first
90 % (a later one would still be in its 10 s group wait at the return). Then
the receiver comes back on the same port; printed: when the alerts arrived after its return
(median, last), how many requests it got, and whether each arrived exactly once.

    python bench/webhook_recovery.py                      # 43 alerts, a 180 s outage
    python bench/webhook_recovery.py --outage 30 --alerts 20
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from fastapi.testclient import TestClient

from collapsewatch_server import create_app
from collapsewatch_server.config import Settings

RULE = {"name": "loss high", "indicator": "value", "probe": "loss", "condition": "above",
        "threshold": 0.5, "severity": "critical"}  # fmt: skip


class Receiver:
    """Answers 200 and notes when each notification's alerts arrived; can go down and up."""

    def __init__(self) -> None:
        self.arrived: list[tuple[float, list[str]]] = []
        self.requests = 0
        self.port = 0
        self.server: ThreadingHTTPServer | None = None
        self.lock = threading.Lock()

    def up(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                import json

                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                with receiver.lock:
                    receiver.requests += 1
                    receiver.arrived.append((time.time(), [a["event_id"] for a in body["alerts"]]))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def down(self) -> None:
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()


def scalar_batch(run: str, value: float) -> dict[str, Any]:
    return {
        "batch_id": str(uuid.uuid4()),
        "run": {"run_id": run, "project": "bench", "name": f"run-{run[:6]}",
                "started_at": datetime.now(UTC).isoformat(),
                "probes": [{"name": "loss", "kind": "scalar"}]},
        "records": [{"probe": "loss", "kind": "scalar", "step": 0, "stats": {"value": value}}],
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--outage", type=float, default=180.0, help="seconds the receiver is down")
    parser.add_argument("--alerts", type=int, default=43)
    args = parser.parse_args()
    receiver = Receiver()
    receiver.up()
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(Settings(db_url=f"sqlite:///{tmp}/b.db"))
        with TestClient(app, base_url="http://127.0.0.1") as client:  # a Host the server trusts
            client.post(
                "/api/v1/projects/bench/webhooks",
                json={"url": f"http://127.0.0.1:{receiver.port}/hook"},
            )
            client.post("/api/v1/projects/bench/rules", json=RULE)
            receiver.down()
            start = time.monotonic()
            for i in range(args.alerts):  # spread over the outage's first 90 %
                time.sleep(max(0.0, start + 0.9 * args.outage * i / args.alerts - time.monotonic()))
                client.post("/api/v1/ingest", json=scalar_batch(str(uuid.uuid4()), 0.9))
            fired = {
                e["id"]
                for e in client.get(
                    "/api/v1/alerts", params={"project": "bench", "limit": 1000}
                ).json()
            }
            time.sleep(max(0.0, start + args.outage - time.monotonic()))
            receiver.up()
            back = time.time()
            deadline = time.monotonic() + 600
            while (
                sum(len(ids) for _, ids in receiver.arrived) < len(fired)
                and time.monotonic() < deadline
            ):
                time.sleep(0.1)
            time.sleep(2.0)
    receiver.down()
    delays = sorted(at - back for at, ids in receiver.arrived for _ in ids)
    counts = Counter(i for _, ids in receiver.arrived for i in ids)
    exact = set(counts) == fired and set(counts.values()) == {1}
    print(f"{len(fired)} alerts fired during a {args.outage:g} s outage")
    median, last = statistics.median(delays), delays[-1]
    print(f"  after the receiver's return: median {median:.1f} s, last {last:.1f} s")
    print(f"  {receiver.requests} requests after the return; each alert exactly once: {exact}")


if __name__ == "__main__":
    main()
