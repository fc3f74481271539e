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
import contextlib
import logging

from collapsewatch_server.services import processing
from collapsewatch_server.services.context import ServiceContext

log = logging.getLogger("collapsewatch.ingest")


class Processor:
    """:meth:`start` on the loop, :meth:`wake` from any thread, :meth:`stop` to finish."""

    def __init__(self, context: ServiceContext) -> None:
        self.context = context
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._waiters: dict[str, asyncio.Future[int]] = {}
        self._failing = False  # log a broken database once, not every poll

    def start(self) -> None:
        """Start the loop on the running event loop."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="collapsewatch-processor")

    def wake(self) -> None:
        """Look at the queue now instead of at the next poll; callable from any thread."""
        loop, event = self._loop, self._wake
        if loop is None or event is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop already closed: nothing to wake
            loop.call_soon_threadsafe(event.set)

    def expect(self, batch_id: str) -> asyncio.Future[int] | None:
        """A future for the points of ``batch_id``, set when this process has processed it
        (None when the processor is not running). Made before the batch is accepted, so a
        batch processed at once is not missed; :meth:`forget` it afterwards."""
        if self._task is None:
            return None
        return self._waiters.setdefault(batch_id, asyncio.get_running_loop().create_future())

    def forget(self, batch_id: str) -> None:
        self._waiters.pop(batch_id, None)

    @staticmethod
    async def wait(future: asyncio.Future[int], timeout: float) -> int | None:
        """The points of an expected batch, or None after ``timeout`` seconds (another
        process may have it, or the queue is busy)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                return await asyncio.shield(future)
        return None

    async def stop(self) -> None:
        """Finish the batch in hand and stop."""
        if self._task is None:
            return
        self._stopping = True
        assert self._wake is not None
        self._wake.set()
        await self._task
        self._task = None

    async def _run(self) -> None:
        assert self._wake is not None
        poll_s = self.context.settings.ingest_poll_s
        while not self._stopping:
            self._wake.clear()
            try:
                while not self._stopping:
                    done = await asyncio.to_thread(processing.process_next, self.context)
                    if done is None:
                        break
                    waiter = self._waiters.get(done.batch_id)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(done.points)
                self._failing = False
            except Exception:
                if not self._failing:
                    log.exception("ingest processor: round failed; retrying every poll")
                self._failing = True
            if self._stopping:
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(poll_s):
                    await self._wake.wait()
