"""The background loop the ingest processor and the webhook worker both run on the server's
event loop: a round of work, then sleep until a wake-up or the delay the round asked for.

A round that raises (a broken database, most often) is logged once, not on every poll, and
retried after the poll interval; the loop itself never dies of it. :meth:`PollLoop.wake` may be
called from any thread (a service that just committed work in a worker thread rings it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

#: One round of work; returns the seconds to sleep before the next round (unless woken).
Round = Callable[[], Awaitable[float]]


class PollLoop:
    """Runs ``work`` in a task until :meth:`stop`: :meth:`start` on the loop, :meth:`wake`
    from any thread, :meth:`wake_on_loop` from the loop's own callbacks."""

    def __init__(
        self, name: str, work: Round, poll_s: float, log: logging.Logger, what: str
    ) -> None:
        """``name`` names the task, ``poll_s`` is the wait after a failed round, and ``what``
        says in the log line whose round failed."""
        self.name = name
        self._work = work
        self._poll_s = poll_s
        self._log = log
        self._what = what
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._failing = False  # log a broken database once, not every poll

    @property
    def running(self) -> bool:
        """Started and not yet stopped."""
        return self._task is not None

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop the task runs on (None before :meth:`start`)."""
        return self._loop

    @property
    def stopping(self) -> bool:
        """A stop was asked for: a round in hand should finish what it holds and return."""
        return self._stopping

    def start(self) -> None:
        """Start the loop on the running event loop."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name=self.name)

    def wake(self) -> None:
        """Run the next round now instead of after its delay; callable from any thread."""
        loop, event = self._loop, self._wake
        if loop is None or event is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop already closed: nothing to wake
            loop.call_soon_threadsafe(event.set)

    def wake_on_loop(self) -> None:
        """:meth:`wake` from the event loop's own thread (no hop through the loop)."""
        if self._wake is not None and not self._stopping:
            self._wake.set()

    async def stop(self) -> None:
        """Let the round in hand finish, then end the loop."""
        if self._task is None:
            return
        self._stopping = True
        assert self._wake is not None
        self._wake.set()
        await self._task
        self._task = None

    async def _run(self) -> None:
        assert self._wake is not None
        while not self._stopping:
            self._wake.clear()
            delay = self._poll_s
            try:
                delay = await self._work()
                self._failing = False
            except Exception:
                if not self._failing:
                    self._log.exception("%s: round failed; retrying every poll", self._what)
                self._failing = True
            if self._stopping:
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
