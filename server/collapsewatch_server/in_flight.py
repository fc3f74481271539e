"""Ingest requests a server process is accepting, and the processor giving way to them.

A client waits for an ingest answer (and gives up after a few seconds); the processor's work is
queued already and can wait. On a machine short of CPU (measured with ``bench/trainers.py``:
trainers and the server on two shared cores) the two compete for the process's one GIL and its
share of the cores: an accept that takes 20 ms of CPU answered after 0.7 s, while the processor
computed indicators beside it. So the processor, at points where it holds no lock, waits while
requests are being accepted -- for a bounded time, so that a steady stream of them cannot stop
it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class InFlight:
    """Requests being accepted (:meth:`accepting`, any thread), and :meth:`give_way` for
    the processor."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._count = 0

    @contextmanager
    def accepting(self) -> Iterator[None]:
        """Count a request as being accepted for the duration of the block."""
        with self._cond:
            self._count += 1
        try:
            yield
        finally:
            with self._cond:
                self._count -= 1
                if not self._count:
                    self._cond.notify_all()

    def give_way(self, longest: float) -> None:
        """Wait while requests are being accepted, ``longest`` seconds at most (the GIL is
        released while waiting)."""
        if not self._count:  # an int read: no lock needed for a hint
            return
        with self._cond:
            self._cond.wait_for(lambda: not self._count, timeout=longest)

    def courtesy(self, budget: float) -> Callable[[], None]:
        """A :meth:`give_way` for one piece of work, to call at each of its points where it
        may wait: all its waits together last ``budget`` seconds at most."""
        left = budget

        def give_way() -> None:
            nonlocal left
            if left > 0 and self._count:
                started = time.monotonic()
                self.give_way(left)
                left -= time.monotonic() - started

        return give_way

    def __len__(self) -> int:
        return self._count
