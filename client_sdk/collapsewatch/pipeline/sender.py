"""The background sender: batches records, gzips them, posts them, spools what is not taken.

Built like Sentry's worker: the training thread only appends to an in-memory queue, and a
named daemon thread, started lazily and started again in a forked child, does the rest.
Nothing here raises into the caller.

The delivery guarantee (:mod:`collapsewatch.pipeline.ledger`): every record handed to
:meth:`Sender.submit` ends stored by the server, spooled on disk, set aside in the spool's
``rejected/`` folder with the server's answer, or counted as dropped with a reason.

- The queue is bounded by the memory its records take, not by calls: consecutive records
  share one entry, and when the bound is reached the queued records are spooled, not dropped.
- Whatever the server does not take is spooled, and sent again (:mod:`.replay`) before newer
  batches once the server takes batches again. A 429 or 503 with ``Retry-After`` holds sending
  for that long (at most ``max_pause``); a server that cannot be reached, or that refuses the
  token or the URL, holds it for ``offline_retry``. Batches made meanwhile go to the spool.
- ``close`` sends what is left within its timeout, then spools everything still in memory,
  including batches in flight (a late answer only makes a spooled batch a duplicate).
- Pacing: a batch is sent ``batch_seconds`` after its first record, or longer when the server
  answers slowly -- ``PACE`` times its last answer time, up to ``max_batch_seconds`` -- so a
  server shared by many trainers gets fewer, larger batches as it fills up (each request costs
  it the same fixed work whatever its size), and a lone trainer's stay one second apart.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from collapsewatch.pipeline import notices
from collapsewatch.pipeline.footprint import BUILT_RECORD_BYTES, batches, footprint
from collapsewatch.pipeline.footprint import load as records_load
from collapsewatch.pipeline.ledger import Fate, Ledger
from collapsewatch.pipeline.replay import Replay, Round
from collapsewatch.pipeline.spool import Spool
from collapsewatch.pipeline.wire import Answer, Endpoint, Outcome, Record, encode

logger = logging.getLogger("collapsewatch")

#: Records, or a function that builds them: host-side work the sender thread can do instead of
#: the training thread.
Records = list[Record] | Callable[[], list[Record]]

#: The counters :meth:`Sender.counters` returns (records by fate, then batches).
COUNTERS = (
    "stored",
    "spooled",
    "rejected",
    "dropped",
    "pending",
    "batches_sent",
    "batches_spooled",
    "failures",
)

#: The wait after a 429 that names no ``Retry-After``.
THROTTLE_DEFAULT = 2.0
#: A batch window is at least this many times the server's last answer time (see the module's
#: docstring): the sender keeps a slow server's time per request under an eighth of its own.
PACE = 8.0
#: How long ``close`` waits for the sender thread to finish building a batch it has taken.
BUILD_GRACE = 2.0

DROP_AFTER_CLOSE = "logged after finish"
DROP_BUILD_FAILED = "statistics could not be built"
DROP_NO_DISK = "not sent and the spool could not be written"
DROP_SENDER_ERROR = "sender error"
DROP_STUCK = "still being encoded at the finish timeout"


@dataclass(slots=True)
class _Entry:
    """Queued records (or a function that builds ``count`` of them) and their memory."""

    records: Records
    count: int
    size: int
    load: float  # weight against ``batch_records`` (``footprint.load``)


class Sender:
    """Sends the records of one run; see the module docstring. Never raises."""

    def __init__(
        self,
        *,
        server: str,
        token: str | None,
        spool: Spool,
        run: Callable[[], dict[str, Any]],
        client: httpx.Client | None = None,
        on_firing: Callable[[tuple[dict[str, Any], ...]], None] | None = None,
        queue_bytes: int = 32 * 2**20,
        batch_records: int = 2000,
        batch_values: int = 500_000,
        batch_seconds: float = 1.0,
        max_batch_seconds: float = 8.0,
        offline_retry: float = 30.0,
        max_pause: float = 60.0,
    ) -> None:
        self.server = server
        self.spool = spool
        self._run = run
        #: hears the alerts firing on the run, from each accepted batch's answer
        self._on_firing = on_firing
        self._endpoint = Endpoint(server, token, client)
        self._replay = Replay(self._endpoint)
        self.ledger = Ledger()
        self._notices = notices.Notices()
        self.queue_bytes = queue_bytes
        self.batch_records = batch_records
        self.batch_values = batch_values
        self.batch_seconds = batch_seconds
        self.max_batch_seconds = max(batch_seconds, max_batch_seconds)
        #: the batch window now: ``batch_seconds``, widened while the server answers slowly
        self.window = batch_seconds
        self.offline_retry = offline_retry
        self.max_pause = max_pause
        #: seconds spent building and encoding batches: it competes with training for the GIL
        self.encode_seconds = 0.0
        self._built_size = BUILT_RECORD_BYTES  # bytes a record to be built is taken to hold
        self._closed = False
        self._pid = os.getpid()
        self._reset()

    def _reset(self) -> None:
        """Fresh thread state: at start, and in a child after ``fork`` (threads do not survive)."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self.ledger.after_fork(parent_pending="left to the parent process at fork")
            self.spool.after_fork()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._intake: list[_Entry] = []
        self._intake_records = self._intake_bytes = 0
        self._intake_load = 0.0
        self._first_at = 0.0
        self._building: int | None = None  # records the worker took and is building
        self._outgoing: dict[str, bytes] = {}  # encoded batches not settled yet
        self._closing: tuple[str, float] | None = None  # final status and deadline
        self._final_made = False
        self._hold_until = 0.0  # no request before this (offline, throttled, refused)
        self._stop = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def counters(self) -> dict[str, int]:
        """Records by fate and batch counters, consistent with each other (see COUNTERS)."""
        counts = self.ledger.counts()
        return {name: counts[name] for name in COUNTERS}

    # ----------------------------------------------------------------- training thread side

    def submit(self, records: Records, count: int | None = None, load: float | None = None) -> None:
        """Queue records, or a function the sender calls to build them (``count`` records
        of ``load``, see ``footprint.load``; by default one a record); never blocks on the
        network, never raises."""
        count = len(records) if isinstance(records, list) else (count or 0)
        if not count:
            return
        try:
            if not self._closed:
                self._ensure_thread()  # first: in a forked child it resets the ledger's pending
            self.ledger.accept(count)
            if self._closed:
                self.ledger.drop(count, DROP_AFTER_CLOSE)
                return
            size = footprint(records) if isinstance(records, list) else count * self._built_size
            if load is None:
                load = records_load(records) if isinstance(records, list) else float(count)
            with self._lock:
                before, before_load = self._intake_records, self._intake_load
                last = self._intake[-1] if self._intake else None
                if (
                    isinstance(records, list)
                    and last is not None
                    and isinstance(last.records, list)
                ):
                    last.records.extend(records)  # many small calls share one entry
                    last.count += count
                    last.size += size
                    last.load += load
                else:  # a list is copied: it may be extended
                    entry = list(records) if isinstance(records, list) else records
                    self._intake.append(_Entry(entry, count, size, load))
                if not before:
                    self._first_at = time.monotonic()
                self._intake_records += count
                self._intake_bytes += size
                self._intake_load += load
                if not before or before_load < self.batch_records <= self._intake_load:
                    self._wake.notify()
                full = self._intake_bytes > self.queue_bytes
            if full:
                self._spill()
        except Exception:
            logger.exception("collapsewatch: queueing statistics failed")

    def _spill(self) -> None:
        """The queue is full (the server is slower than training): spool its oldest batch.

        One batch at a time, so a call that finds the queue full pays for one batch's encoding,
        never for the whole queue's.
        """
        with self._lock:
            items = self._take_intake(self.batch_records)
        self._notices.spilled(self.spool.directory)
        for batch_id, body in self._encode(self._build(items), None):
            self._write(batch_id, body)

    def _ensure_thread(self) -> None:
        if self._pid != os.getpid():
            self._reset()
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._work, name="collapsewatch-sender", daemon=True
                    )
                    self._thread.start()

    def close(self, status: str, timeout: float) -> None:
        """Send what is queued plus a final batch with ``status``, within ``timeout`` seconds;
        spool whatever is not settled by then, and log the account if not all is stored."""
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + max(0.0, timeout)
        try:
            self._ensure_thread()
            with self._lock:
                self._closing = (status, deadline)
                self._wake.notify_all()
            try:
                finished = self._done.wait(max(0.0, deadline - time.monotonic()))
            except BaseException:
                # Ctrl-C while waiting: stop the worker (it may be inside torch, building
                # statistics: a daemon thread unwound there at exit aborts the process) and
                # spool what is left, then let the interrupt through
                self._take_over(status)
                raise
            if not finished or self._intake or self._outgoing or not self._final_made:
                self._take_over(status)  # out of time, or the worker died: nothing is left out
            counts = self.ledger.counts()
            message = notices.account(counts, self.ledger.drop_reasons, self.spool.directory)
            if message:
                logger.warning(message)
            self._endpoint.close()
        except Exception:
            logger.exception("collapsewatch: closing the sender failed")

    def _take_over(self, status: str) -> None:
        """Out of time: stop the worker and spool everything still in memory."""
        self._stop.set()
        with self._lock:
            give_up = time.monotonic() + BUILD_GRACE
            while self._building is not None and time.monotonic() < give_up:
                self._wake.wait(give_up - time.monotonic())
            stuck, self._building = self._building, None
            outgoing, self._outgoing = self._outgoing, {}
            items = self._take_intake()
            final_made = self._final_made
        if stuck:
            self.ledger.drop(stuck, DROP_STUCK)
        for batch_id, body in outgoing.items():
            self._write(batch_id, body)
        records = self._build(items)
        if records or not final_made:
            for batch_id, body in self._encode(records, None if final_made else status):
                self._write(batch_id, body)

    # ------------------------------------------------------------------------ worker side

    def _work(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    final = self._work_once()
                except Exception:  # a bug here must not kill the worker silently
                    logger.exception("collapsewatch: sender failed")
                    with self._lock:
                        if self._building:
                            self.ledger.drop(self._building, DROP_SENDER_ERROR)
                        self._building = None
                        self._wake.notify_all()
                    final = self._closing
                if final is not None:
                    return
        finally:
            self._done.set()

    def _work_once(self) -> tuple[str, float] | None:
        """Wait for a batch's worth of records (or the batch window), send them; returns the
        closing status and deadline once the final batch is out."""
        with self._lock:
            while not self._intake and self._closing is None:
                self._wake.wait()
            while self._closing is None and self._intake_load < self.batch_records:
                left = self._first_at + self.window - time.monotonic()
                if left <= 0:
                    break
                self._wake.wait(left)
            closing = self._closing
            items = self._take_intake()
            self._building = sum(entry.count for entry in items)
        batches = self._encode(self._build(items), closing[0] if closing else None)
        with self._lock:
            self._outgoing.update(batches)
            self._building = None
            self._final_made = closing is not None
            self._wake.notify_all()
        for batch_id, body in batches:
            if self._stop.is_set():
                break
            self._ship(batch_id, body, closing)
        if closing is not None:
            self._drain(closing[1])
        return closing

    def _drain(self, deadline: float) -> None:
        """At close: replay the spool while that moves batches and pauses end in time."""
        while self.spool.has_pending() and not self._stop.is_set():
            left = self._hold_until - time.monotonic()
            if left > 0 and (time.monotonic() + left >= deadline or self._stop.wait(left)):
                return
            result = self._replay_spool(None)
            moved = result.accepted or result.rejected or result.struck
            busy = result.wait is not None and result.wait.outcome is Outcome.THROTTLED
            if not (moved or busy):
                return  # the same answer again would change nothing before the deadline

    def _take_intake(self, limit: int | None = None) -> list[_Entry]:
        """The queued entries, oldest first: all of them, or about ``limit`` records (a list
        is split; a records function is taken whole). Call with the lock held."""
        if limit is None or limit >= self._intake_records:
            items, self._intake = self._intake, []
            self._intake_records = self._intake_bytes = 0
            self._intake_load = 0.0
            return items
        items = []
        taken = 0
        while self._intake and taken < limit:
            entry = self._intake[0]
            if isinstance(entry.records, list) and entry.count > limit - taken:
                n = limit - taken
                size = entry.size * n // entry.count
                head = entry.records[:n]
                load = records_load(head)
                items.append(_Entry(head, n, size, load))
                entry.records, entry.count, entry.size, entry.load = (
                    entry.records[n:],
                    entry.count - n,
                    entry.size - size,
                    entry.load - load,
                )
            else:
                items.append(self._intake.pop(0))
            taken += items[-1].count
            self._intake_records -= items[-1].count
            self._intake_bytes -= items[-1].size
            self._intake_load -= items[-1].load
        if not self._intake:
            self._intake_load = 0.0  # no float residue of the subtractions
        return items

    def _build(self, items: list[_Entry]) -> list[Record]:
        records: list[Record] = []
        for entry in items:
            if isinstance(entry.records, list):
                records.extend(entry.records)
                continue
            t0 = time.perf_counter()
            try:
                built = entry.records()
            except Exception:
                logger.exception("collapsewatch: building statistics failed")
                self.ledger.drop(entry.count, DROP_BUILD_FAILED)
                continue
            records.extend(built)
            if built:  # what the next records to build will hold, about
                self._built_size = (self._built_size + footprint(built) // len(built)) // 2
            self.encode_seconds += time.perf_counter() - t0
        return records

    def _encode(self, records: list[Record], status: str | None) -> list[tuple[str, bytes]]:
        """Batches within the record and value limits; the last one carries ``status``."""
        out = []
        for chunk, last in batches(records, self.batch_records, self.batch_values):
            if not chunk and (status is None or not last):
                continue
            t0 = time.perf_counter()
            batch_id, body = encode(self._run(), chunk, status if last else None)
            self.encode_seconds += time.perf_counter() - t0
            self.ledger.batch(batch_id, len(chunk))
            out.append((batch_id, body))
        return out

    def _ship(self, batch_id: str, body: bytes, closing: tuple[str, float] | None) -> None:
        if self._held(closing):
            if self._claim(batch_id):
                self._write(batch_id, body)
            return
        if self.spool.has_pending():  # spooled batches go first: this one joins them
            if self._claim(batch_id):
                self._write(batch_id, body)
            self._replay_spool(None)
            return
        sent = time.monotonic()
        answer = self._endpoint.post(body, stop=self._stop)
        self._pace(time.monotonic() - sent)
        if not self._claim(batch_id):
            return  # the closer spooled it meanwhile
        if answer.outcome.accepted:
            self.ledger.settle(batch_id, Fate.STORED)
            if answer.firing is not None and self._on_firing is not None:
                self._on_firing(answer.firing)
            return
        path = self._write(batch_id, body)
        if path is None:
            self._after(answer)
        else:
            self._replay_spool((path, answer))

    def _pace(self, answer_s: float) -> None:
        """The next batch window, from how long the server took to answer."""
        self.window = min(self.max_batch_seconds, max(self.batch_seconds, PACE * answer_s))

    def _held(self, closing: tuple[str, float] | None) -> bool:
        """Whether sending is on hold; at close, a hold that ends before the deadline is
        waited out."""
        left = self._hold_until - time.monotonic()
        if left <= 0:
            return False
        if closing is not None and time.monotonic() + left < closing[1]:
            return self._stop.wait(left)
        return True

    def _claim(self, batch_id: str) -> bool:
        """Take a batch out of the outgoing set; False if the closer took it first."""
        with self._lock:
            return self._outgoing.pop(batch_id, None) is not None

    def _write(self, batch_id: str, body: bytes) -> Path | None:
        """Spool a batch; a batch the disk refuses is dropped and counted."""
        try:
            path = self.spool.write(batch_id, body)
        except OSError as exc:
            self.ledger.settle(batch_id, Fate.DROPPED, DROP_NO_DISK)
            self._notices.disk(self.spool.directory, exc)
            return None
        self.ledger.settle(batch_id, Fate.SPOOLED)
        return path

    def _replay_spool(self, answered: tuple[Path, Answer] | None) -> Round:
        """One replay round over the spool (with the batch just answered, if any)."""
        pending = [p for p in self.spool.pending() if answered is None or p != answered[0]]
        result = self._replay.round(pending, answered=answered, stop=self._stop)
        for batch_id in result.accepted:
            self.ledger.settle(batch_id, Fate.STORED)
        for batch_id in result.rejected:
            self.ledger.settle(batch_id, Fate.REJECTED)
            self._notices.rejected(self.server, result.answers[batch_id], self.spool.directory)
        for _ in result.answers:
            self.ledger.failure()
        if result.wait is not None:
            self._after(result.wait)
        return result

    def _after(self, answer: Answer) -> None:
        """Hold sending as the answer asks, and tell the user once what is going on."""
        if self._stop.is_set():
            return  # closed: the account is given; a request cut short says nothing new
        where = self.spool.directory
        if answer.outcome is Outcome.THROTTLED:
            asked = answer.retry_after
            pause = min(THROTTLE_DEFAULT if asked is None else asked, self.max_pause)
            self._notices.throttled(self.server, pause)
        elif answer.outcome is Outcome.REFUSED:
            pause = self.offline_retry
            project = str(self._run().get("project", ""))
            self._notices.refused(self.server, project, answer, where)
        elif answer.outcome is Outcome.REJECTED:
            self._notices.rejected(self.server, answer, where)
            return
        else:
            pause = self.offline_retry
            self._notices.unreachable(self.server, answer, where)
        self._hold_until = time.monotonic() + pause
