"""A real webhook receiver for tests, and a way to put alert events in the outbox directly.

:class:`Receiver` is an HTTP server on 127.0.0.1 in a thread: it verifies each request's
signature with :func:`collapsewatch_server.webhooks.signing.verify`, records what arrived, and
answers from a script (e.g. 503 three times, then 200). It can go down (the port refuses
connections) and come back up on the same port.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from collapsewatch_server.repositories import outbox
from collapsewatch_server.services.context import ServiceContext
from collapsewatch_server.services.projects import project_for_writing
from collapsewatch_server.tables import AlertEvent, Run, utcnow
from collapsewatch_server.webhooks import signing


@dataclass(frozen=True)
class Answer:
    """What the receiver says to one request."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: str = "ok"
    delay_s: float = 0.0


@dataclass(frozen=True)
class Arrival:
    """One request as received (with the time it arrived, ``time.time()``)."""

    headers: dict[str, str]
    body: bytes
    at: float
    answered: int
    signature_error: str | None  # None: the signature verified

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """A scripted webhook receiver on 127.0.0.1; use as a context manager."""

    def __init__(self, *script: Answer | int, secret: str | None = None) -> None:
        self.secret = secret
        self._script = [a if isinstance(a, Answer) else Answer(a) for a in script]
        self.arrivals: list[Arrival] = []
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def script(self, *answers: Answer | int) -> None:
        """Answers for the next requests, in order; after them, 200."""
        with self._lock:
            self._script = [a if isinstance(a, Answer) else Answer(a) for a in answers]

    # ------------------------------------------------------------------------- lifecycle

    def up(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver._handle(self, body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: pytest shows what matters

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        # a short poll: shutdown() waits for it
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def down(self) -> None:
        """Stop listening: connections to the port are refused until :meth:`up`."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None
            self._thread.join(timeout=5)
            self._server = None

    def __enter__(self) -> Receiver:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    # ------------------------------------------------------------------------ requests

    def _handle(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        headers = {k.lower(): v for k, v in handler.headers.items()}
        error: str | None = "no secret to verify with"
        if self.secret is not None:
            try:
                signing.verify(self.secret, headers, body)
                error = None
            except signing.SignatureError as exc:
                error = str(exc)
        with self._lock:
            answer = self._script.pop(0) if self._script else Answer()
        if answer.delay_s:
            time.sleep(answer.delay_s)
        with self._arrived:
            self.arrivals.append(Arrival(headers, body, time.time(), answer.status, error))
            self._arrived.notify_all()
        payload = answer.body.encode()
        try:
            handler.send_response(answer.status)
            for name, value in answer.headers.items():
                handler.send_header(name, value)
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
        except OSError:
            pass  # the sender gave up (timeout) before the answer

    def delivered(self) -> list[Arrival]:
        """Arrivals answered with a 2xx."""
        with self._lock:
            return [a for a in self.arrivals if 200 <= a.answered < 300]

    def wait_for(
        self, count: int, timeout: float = 10.0, *, delivered: bool = True
    ) -> list[Arrival]:
        """Block until ``count`` arrivals (answered 2xx, by default) or fail saying how many."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while True:
                got = [a for a in self.arrivals if not delivered or 200 <= a.answered < 300]
                if len(got) >= count:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"expected {count} webhook(s) at {self.url} within {timeout} s, got "
                        f"{len(got)} (all arrivals: {[a.answered for a in self.arrivals]})"
                    )
                self._arrived.wait(left)


def put_events(
    ctx: ServiceContext,
    project: str,
    count: int = 1,
    *,
    severity: str = "warning",
    status: str = "firing",
    run_name: str = "run-a",
    run_id: uuid.UUID | None = None,
    one_run: bool = True,
    probe: str = "latency",
) -> list[str]:
    """``count`` alert events of one run (each of its own run, ``run_name-i``, unless
    ``one_run``: so one notification each), with their deliveries, written the way the ingest
    service writes them (one transaction, through the outbox repository, grouped by ``ctx``'s
    policy), then the doorbell of ``ctx``'s deliverer rung as the service rings it. Returns
    event ids."""
    now = utcnow()
    ids = []
    with ctx.db.write() as s:
        proj = project_for_writing(s, project)
        run_ids = []
        for i in range(1 if one_run else count):
            rid = str(run_id or uuid.uuid4()) if one_run else str(uuid.uuid4())
            if s.get(Run, rid) is None:
                name = run_name if one_run else f"{run_name}-{i}"
                s.add(Run(id=rid, project_id=proj.id, name=name, started_at=now, last_seen_at=now))
                s.flush()
            run_ids.append(rid)
        events = [
            AlertEvent(
                id=str(uuid.uuid4()),
                project_id=proj.id,
                run_id=run_ids[0] if one_run else run_ids[i],
                rule_name="latency high",
                probe=probe,
                indicator="value",
                status=status,
                severity=severity,
                value=0.9,
                threshold=0.5,
                step=i,
                message=f"latency 0.9 above 0.5 at step {i}",
                created_at=now,
            )
            for i in range(count)
        ]
        s.add_all(events)
        s.flush()
        queued = outbox.enqueue(s, events, ctx.group_policy, now)
        ids = [e.id for e in events]
    if queued:
        ctx.wake_deliverer()
    return ids
