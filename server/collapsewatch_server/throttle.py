"""Throttling of failed authentication, per client address.

A client may get a token wrong a few times (a typo, an old token); past ``free`` failures in a
row its address is blocked, for 1 s after the first failure past them, doubling with each one,
at most ``max_block_s``. While blocked, no admin-token check from it is even tried (a guess
that happens to be right is refused alike, so guessing gains nothing), and it is answered 429
with ``Retry-After``. Ingest tokens stay usable: they are 256-bit random, never worth guessing,
and a trainer behind the same address must not stall for its neighbour's typo.

One server process keeps its own counts; several processes behind a load balancer each
throttle what reaches them.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

#: Addresses remembered at most: a flood of addresses cannot grow the table without bound.
MAX_ADDRESSES = 10_000
#: Failures older than this are forgotten.
FORGET_AFTER_S = 15 * 60.0


@dataclass
class _Record:
    failures: int
    last_failure: float
    blocked_until: float


class AuthThrottle:
    """Failed-authentication counts per client address; thread-safe (sync routes run in a
    thread pool)."""

    def __init__(
        self, free: int, max_block_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.free = free
        self.max_block_s = max_block_s
        self._clock = clock
        self._records: OrderedDict[str, _Record] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, address: str) -> int | None:
        """Whole seconds until ``address`` may try again, or None when it is not blocked."""
        with self._lock:
            record = self._records.get(address)
            if record is None:
                return None
            left = record.blocked_until - self._clock()
        return max(1, math.ceil(left)) if left > 0 else None

    def failed(self, address: str) -> None:
        """Count a failure of ``address``; past ``free`` of them, block it."""
        now = self._clock()
        with self._lock:
            record = self._records.pop(address, None)
            if record is None or now - record.last_failure > FORGET_AFTER_S:
                record = _Record(0, now, 0.0)
            record.failures += 1
            record.last_failure = now
            past = record.failures - self.free
            if past > 0:
                record.blocked_until = now + min(self.max_block_s, 2.0 ** (past - 1))
            self._records[address] = record  # newest last
            while len(self._records) > MAX_ADDRESSES:
                self._records.popitem(last=False)

    def succeeded(self, address: str) -> None:
        """A right token: the address starts afresh."""
        with self._lock:
            self._records.pop(address, None)
