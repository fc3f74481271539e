"""The order in which one server process's threads write to SQLite.

SQLite lets one transaction write at a time. Left to itself, a writer that finds the database
locked sleeps in SQLite's busy handler (up to 100 ms a turn) and tries again, and nobody is
first in line: the ingest processor, committing batch after batch, takes the lock again before
a sleeping writer wakes up, and an ingest answer waited seconds for it under load (measured:
``bench/trainers.py``). Here the threads of a process queue for the lock instead, are woken
as soon as it is free, and *urgent* writers -- accepting an ingest batch, a client waiting for
the answer -- go before the others, whose work is already queued and waits anyway.

Postgres locks rows, not the database: its writers do not queue here. Other processes on
the same SQLite file still meet in SQLite's busy handler.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

#: Urgent writers that go before a waiting other one, in a row, before it gets its turn: a
#: steady stream of accepts must not stop the processing of what they accepted.
URGENT_IN_A_ROW = 8


class WriteGate:
    """One writer at a time, urgent ones first (but at most ``URGENT_IN_A_ROW`` of them
    before a waiting other one): ``with gate.hold(urgent=...):``. Not re-entrant (a thread
    holding it must not open a second write transaction: on SQLite that would wait for
    itself anyway)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._busy = False
        self._waiting = {True: 0, False: 0}  # urgent or not -> threads waiting
        self._urgent_streak = 0  # urgent turns since the last other one

    def _may_go(self, urgent: bool) -> bool:
        if self._busy:
            return False
        others_due = self._waiting[False] > 0 and self._urgent_streak >= URGENT_IN_A_ROW
        return not others_due if urgent else (not self._waiting[True] or others_due)

    @contextmanager
    def hold(self, urgent: bool = False) -> Iterator[None]:
        """Wait for the turn to write, then hold it until the block ends."""
        with self._cond:
            self._waiting[urgent] += 1
            try:
                self._cond.wait_for(lambda: self._may_go(urgent))
            finally:
                self._waiting[urgent] -= 1
            self._busy = True
            self._urgent_streak = self._urgent_streak + 1 if urgent else 0
        try:
            yield
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()
