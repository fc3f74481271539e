"""The background loop of a server process: deliver due webhooks, raise nodata for silent runs.

It runs on the server's event loop (started by the app's lifespan). Each round it claims as
many due deliveries as it has free slots (``webhook_concurrency``) and sends each in its own
task, then sleeps until the earliest of: a wake-up (a service of this process just committed
deliveries and called :meth:`Worker.wake`, the doorbell of the worker's
:class:`~collapsewatch_server.services.context.ServiceContext`), a freed slot, the next due
retry, the poll interval. The poll is what other server processes' deliveries and expired
leases are found by. Services are blocking (SQLAlchemy), so they run in threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime

from collapsewatch_server.config import Settings
from collapsewatch_server.db import Database
from collapsewatch_server.metrics import Metrics
from collapsewatch_server.poll_loop import PollLoop
from collapsewatch_server.services import alerts, deliveries, retention
from collapsewatch_server.services.context import ServiceContext
from collapsewatch_server.tables import utcnow
from collapsewatch_server.webhooks.deliverer import Deliverer, DeliveryJob
from collapsewatch_web.api_schemas.webhooks import DeliveryStatus

log = logging.getLogger("collapsewatch.webhooks")

#: How often silent runs are looked for (nodata events).
SCAN_EVERY_S = 5.0
#: On shutdown, sends in flight get this long to finish before they are cancelled.
STOP_GRACE_S = 2.0


def lease_s(settings: Settings) -> float:
    """How long a claim is ours: comfortably longer than one attempt can take."""
    return max(30.0, 4 * settings.webhook_timeout_s)


class Worker:
    """Deliverer loop plus the stall scan; :meth:`start` on the loop, :meth:`stop` to finish."""

    def __init__(self, db: Database, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        #: The services this worker runs; their doorbell is this worker's.
        self.context = ServiceContext(
            db, settings, wake_deliverer=self.wake, metrics=metrics or Metrics()
        )
        self._poll = PollLoop(
            "collapsewatch-worker", self._round, settings.worker_poll_s, log, "webhook worker"
        )
        self._next_scan = 0.0
        self._deliverer: Deliverer | None = None
        self._in_flight: dict[asyncio.Task[DeliveryStatus], DeliveryJob] = {}

    # ---------------------------------------------------------------------------- control

    def start(self) -> None:
        """Start the loop on the running event loop."""
        self._deliverer = Deliverer(self.settings)
        self._next_scan = asyncio.get_running_loop().time() + SCAN_EVERY_S
        self._poll.start()

    def wake(self) -> None:
        """Deliver now instead of at the next poll; callable from any thread."""
        self._poll.wake()

    async def stop(self) -> None:
        """Stop claiming, give sends in flight a moment, cancel the rest and hand their
        claims back so the next process (or this one after a restart) sends them at once."""
        if not self._poll.running:
            return
        await self._poll.stop()
        if self._in_flight:
            _, pending = await asyncio.wait(list(self._in_flight), timeout=STOP_GRACE_S)
            unsent = [self._in_flight[t] for t in pending]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            if unsent:
                # A claim whose result got recorded meanwhile no longer matches: left alone.
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(deliveries.release_claims, self.context, unsent)
        assert self._deliverer is not None
        await self._deliverer.aclose()

    # ------------------------------------------------------------------------------ loop

    async def _round(self) -> float:
        """Send what is due, scan for silent runs when it is time; the seconds to sleep."""
        await self._claim_and_send()
        now = asyncio.get_running_loop().time()
        if now >= self._next_scan:
            self._next_scan = now + SCAN_EVERY_S
            await asyncio.to_thread(alerts.scan_stalled, self.context, utcnow())
            await asyncio.to_thread(retention.prune_raw, self.context, utcnow())
        return await self._delay()

    async def _claim_and_send(self) -> None:
        free = self.settings.webhook_concurrency - len(self._in_flight)
        if free <= 0:
            return
        jobs = await asyncio.to_thread(
            deliveries.claim_due, self.context, free, lease_s(self.settings), utcnow()
        )
        assert self._deliverer is not None
        for job in jobs:
            task = asyncio.create_task(deliveries.deliver(self.context, self._deliverer, job))
            self._in_flight[task] = job
            task.add_done_callback(self._done)
        if len(jobs) == free:
            self._poll.wake_on_loop()  # there may be more due: go round again (a slot frees first)

    def _done(self, task: asyncio.Task[DeliveryStatus]) -> None:
        job = self._in_flight.pop(task, None)
        if not task.cancelled() and task.exception() is None:
            self.context.metrics.deliveries.labels(task.result().value).inc()
        if not task.cancelled() and task.exception() is not None and job is not None:
            # The claim stays until its lease expires; then the delivery is due again.
            log.error("delivery %s failed unexpectedly", job.delivery_id, exc_info=task.exception())
        self._poll.wake_on_loop()  # a slot is free

    async def _delay(self) -> float:
        """Seconds until the next round: the poll, or sooner when a retry falls due."""
        if len(self._in_flight) >= self.settings.webhook_concurrency:
            return self.settings.worker_poll_s  # a finishing send wakes us
        due: datetime | None = await asyncio.to_thread(deliveries.next_due_at, self.context)
        if due is None:
            return self.settings.worker_poll_s
        wait = (due - utcnow()).total_seconds()
        # a floor, so a row another process is claiming right now does not make us spin
        return min(self.settings.worker_poll_s, max(0.01, wait))
