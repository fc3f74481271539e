"""Monitors that have not finished yet, so ``collapsewatch.finish()`` and exit can end them."""

from __future__ import annotations

import atexit
import sys
import threading
import time
from typing import Protocol


class _Finishable(Protocol):
    def _finish(self, status: str, timeout: float) -> None: ...


_live: set[_Finishable] = set()
_lock = threading.Lock()
_atexit_registered = False


def add(monitor: _Finishable) -> None:
    global _atexit_registered
    with _lock:
        _live.add(monitor)
        if not _atexit_registered:
            atexit.register(_at_exit)
            _atexit_registered = True


def discard(monitor: _Finishable) -> None:
    with _lock:
        _live.discard(monitor)


def finish_all(timeout: float = 10.0, status: str = "finished") -> None:
    """Finish every live monitor, sharing one deadline."""
    deadline = time.monotonic() + timeout
    with _lock:
        monitors = list(_live)
    for monitor in monitors:
        monitor._finish(status, max(0.0, deadline - time.monotonic()))


def _at_exit() -> None:
    # the interpreter sets sys.last_value when the program dies of an uncaught exception
    crashed = getattr(sys, "last_value", None) is not None
    finish_all(status="crashed" if crashed else "finished")
