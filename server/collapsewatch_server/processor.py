"""The ingest processor of a server process: takes accepted batches off the queue and computes
their indicators, points and alerts (:func:`.services.processing.process_next`).

It runs on the server's event loop (started by the app's lifespan) and processes in one
thread, one batch at a time: on SQLite that is the one writer of the process, on Postgres each
server process adds one (claims skip each other's batches). It works until the queue has
nothing it can claim, then sleeps until a wake-up (this process accepted a batch) or the poll
interval (batches other processes accepted, leases that expired).

An ingest answer may wait for its own batch (:meth:`Processor.expect`, when nothing else
was waiting): a lone trainer, and a test, then read their points right after the answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from collapsewatch_server.poll_loop import PollLoop
from collapsewatch_server.services import processing
from collapsewatch_server.services.context import ServiceContext

log = logging.getLogger("collapsewatch.ingest")

#: How often an answer waiting for its batch's points looks for other batches arriving.
COMPANY_POLL_S = 0.05


class Processor:
    """:meth:`start` on the loop, :meth:`wake` from any thread, :meth:`stop` to finish."""

    def __init__(self, context: ServiceContext) -> None:
        self.context = context
        self._poll = PollLoop(
            "collapsewatch-processor",
            self._process_queue,
            context.settings.ingest_poll_s,
            log,
            "ingest processor",
        )
        self._waiters: dict[str, asyncio.Future[int]] = {}

    def start(self) -> None:
        """Start the loop on the running event loop."""
        self._poll.start()

    def wake(self) -> None:
        """Look at the queue now instead of at the next poll; callable from any thread."""
        self._poll.wake()

    def expect(self, batch_id: str) -> asyncio.Future[int] | None:
        """A future for the points of ``batch_id``, set (on the event loop) when this process
        has processed it; None when the processor is not running. Callable from any thread;
        made before the batch is accepted, so a batch processed at once is not missed;
        :meth:`forget` it afterwards."""
        loop = self._poll.loop
        if not self._poll.running or loop is None:
            return None
        # a plain dict operation, atomic under the GIL; the future is only resolved and
        # awaited on the loop
        return self._waiters.setdefault(batch_id, loop.create_future())

    def forget(self, batch_id: str) -> None:
        """Stop expecting ``batch_id`` (any thread)."""
        self._waiters.pop(batch_id, None)

    @staticmethod
    async def wait(
        future: asyncio.Future[int], timeout: float, company: Callable[[], bool] = lambda: False
    ) -> int | None:
        """The points of an expected batch, or None after ``timeout`` seconds (another
        process may have it, or the queue is busy) or as soon as ``company()`` says other
        batches are arriving (the client is not alone: it gets its answer now)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not future.done():
            left = deadline - loop.time()
            if left <= 0 or company():
                return None
            await asyncio.wait({future}, timeout=min(left, COMPANY_POLL_S))
        return future.result()

    async def stop(self) -> None:
        """Finish the batch in hand and stop."""
        await self._poll.stop()

    async def _process_queue(self) -> float:
        """Process batches until none can be claimed; then sleep for the poll interval."""
        while not self._poll.stopping:
            done = await asyncio.to_thread(processing.process_next, self.context)
            if done is None:
                break
            for batch_id, points in done.batches.items():
                waiter = self._waiters.get(batch_id)
                if waiter is not None and not waiter.done():
                    waiter.set_result(points)
        return self.context.settings.ingest_poll_s
