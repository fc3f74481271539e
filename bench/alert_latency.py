"""How fast an alert reaches a webhook receiver: prints numbers, asserts nothing.

Starts the real server (``collapsewatch serve`` in a subprocess, on a free port and a temporary
SQLite file), a webhook receiver on 127.0.0.1 in this process, a webhook (generic JSON) and a
rule ``value`` of probe ``latency`` above 0.5 with no pending period. Then the SDK watches a
tiny model and logs ``latency`` alternately above and below the threshold, one step at a time:
each crossing upwards fires the rule, each crossing back resolves it, and each of those events
is one webhook.

What is measured, per alert: from the moment the SDK's sender thread hands the batch carrying
the crossing to its HTTP client (an httpx ``request`` event hook on the client given to
``watch(http_client=...)``; the hook reads the step out of the gzipped batch) to the moment the
receiver has read the signed webhook for that step. That covers the ingest request, validation,
indicators, rule evaluation and the commit on the server, the deliverer's wake-up, claim,
rendering, signing, and the POST to the receiver. It leaves out the SDK's batching window (the
sender gathers records for up to ``batch_seconds``, 1 s by default, before it posts): that is a
throughput setting of the client, printed separately as "queued -> posted" and shortened here
to 10 ms so that the alerts can follow each other quickly. "of which ingest" is the part until
the server answered the ingest request (its transaction, rules included, committed by then);
the rest is the deliverer's. Both clocks are this process's
``time.perf_counter``. Alerts are sent one at a time (the next crossing waits for the previous
webhook), after a few unmeasured warm-up alerts.

    python bench/alert_latency.py                  # 200 alerts
    python bench/alert_latency.py --alerts 1000 --db postgresql://user@host/db
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import torch
from torch import nn

import collapsewatch
from collapsewatch_server.webhooks import signing

PROJECT = "bench"
PROBE = "latency"
RULE = {
    "name": "latency above 0.5",
    "indicator": "value",
    "probe": PROBE,
    "condition": "above",
    "threshold": 0.5,
    "severity": "warning",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Receiver:
    """Records when each step's webhook arrived; checks every signature."""

    def __init__(self) -> None:
        self.secret = ""
        self.arrived: dict[int, float] = {}
        self.bad_signatures = 0
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                at = time.perf_counter()
                try:
                    signing.verify(receiver.secret, dict(self.headers.items()), body)
                except signing.SignatureError:
                    receiver.bad_signatures += 1
                alerts = json.loads(body).get("alerts") or [{}]
                step = alerts[0].get("step")  # one crossing per notification (no grouping)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
                with receiver._cond:
                    receiver.arrived.setdefault(step, at)
                    receiver._cond.notify_all()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def wait(self, step: int, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while step not in self.arrived:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            return self.arrived[step]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class PostTimes:
    """httpx event hooks: when the batch carrying each step of the probe was posted, and when
    the server answered that ingest request (its commit, rules included, is done by then)."""

    def __init__(self) -> None:
        self.posted: dict[int, float] = {}
        self.answered: dict[int, float] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _steps(request: httpx.Request) -> list[int]:
        if not request.url.path.endswith("/ingest"):
            return []
        body = request.content
        if request.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        return [r["step"] for r in json.loads(body)["records"] if r["probe"] == PROBE]

    def request(self, request: httpx.Request) -> None:
        at = time.perf_counter()
        with self._lock:
            for step in self._steps(request):
                self.posted.setdefault(step, at)

    def response(self, response: httpx.Response) -> None:
        at = time.perf_counter()
        with self._lock:
            for step in self._steps(response.request):
                self.answered.setdefault(step, at)


def start_server(db_url: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLAPSEWATCH_")}
    # the latency of the pipeline itself: no group wait or interval (they add their seconds)
    env |= {"COLLAPSEWATCH_NOTIFY_GROUP_WAIT_S": "0", "COLLAPSEWATCH_NOTIFY_GROUP_INTERVAL_S": "0"}
    cmd = [sys.executable, "-m", "collapsewatch_server.cli", "serve", "--port", str(port)]
    cmd += ["--db", db_url, "--log-level", "warning"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the server exited with {proc.returncode}; see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    sys.exit("the server did not start within 60 s")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (no interpolation: p99 of 200 is the 198th value)."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--alerts", type=int, default=200, help="measured alerts (default 200)")
    parser.add_argument("--warmup", type=int, default=10, help="unmeasured alerts first")
    parser.add_argument("--db", help="database URL (default: a temporary SQLite file)")
    parser.add_argument("--timeout", type=float, default=10.0, help="per alert, seconds")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="collapsewatch-bench-"))
    db_url = args.db or f"sqlite:///{tmp}/bench.db"
    port = free_port()
    server_url = f"http://127.0.0.1:{port}"
    server = start_server(db_url, port, tmp / "server.log")
    receiver = Receiver()
    hook = PostTimes()
    client = httpx.Client(
        timeout=10, event_hooks={"request": [hook.request], "response": [hook.response]}
    )
    try:
        with httpx.Client(base_url=server_url, timeout=10) as api:
            created = api.post(f"/api/v1/projects/{PROJECT}/webhooks", json={"url": receiver.url})
            created.raise_for_status()
            receiver.secret = created.json()["secret"]
            api.post(f"/api/v1/projects/{PROJECT}/rules", json=RULE).raise_for_status()

        torch.manual_seed(0)
        monitor = collapsewatch.watch(
            nn.Linear(4, 4),
            project=PROJECT,
            run=f"latency-{int(time.time())}",
            server=server_url,
            http_client=client,
            spool_dir=tmp / "spool",
            every=1,  # scalars travel with the sampled steps: sample every step
        )
        # The SDK's batching window (see the module docstring); private, bench only.
        monitor._transport.batch_seconds = 0.01  # type: ignore[union-attr]

        queued: dict[int, float] = {}
        latencies: list[float] = []
        batching: list[float] = []
        ingest: list[float] = []
        lost = 0
        for i in range(args.warmup + args.alerts):
            step = monitor.stats["step"]
            queued[step] = time.perf_counter()
            monitor.log_scalar(PROBE, 0.9 if i % 2 == 0 else 0.1)  # crosses every time
            monitor.step()
            arrived = receiver.wait(step, args.timeout)
            if i < args.warmup:
                continue
            posted = hook.posted.get(step)
            if arrived is None or posted is None:
                lost += 1
                continue
            latencies.append((arrived - posted) * 1000)
            batching.append((posted - queued[step]) * 1000)
            if step in hook.answered:
                ingest.append((hook.answered[step] - posted) * 1000)
        monitor.finish()
    finally:
        client.close()
        receiver.close()
        server.terminate()
        server.wait(timeout=15)
        shutil.rmtree(tmp, ignore_errors=True)

    backend = db_url.split(":", 1)[0]
    print("alert latency, batch posted by the SDK -> signed webhook at a loopback receiver")
    print(f"server: collapsewatch serve on {backend}; {len(latencies)} alerts measured "
          f"(firing and resolved alternately), {args.warmup} warm-up, {lost} lost, "
          f"{receiver.bad_signatures} bad signatures")  # fmt: skip
    if not latencies:
        return
    print(f"{'':24}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}")
    rows = (
        ("posted -> webhook", latencies),
        ("  of which ingest", ingest),
        ("queued -> posted", batching),
    )
    for name, values in rows:
        cells = [percentile(values, q) for q in (50, 90, 99)] + [max(values)]
        print(f"{name + ' (ms)':24}" + "".join(f"{v:9.1f}" for v in cells))
    print(f"mean posted -> webhook: {statistics.fmean(latencies):.1f} ms")


if __name__ == "__main__":
    main()
