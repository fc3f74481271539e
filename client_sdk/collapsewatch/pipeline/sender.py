"""The background sender: batches records, gzips them, posts them, spools what cannot be sent.

Built like Sentry's worker: the training thread only does ``put_nowait`` on a bounded queue
(when full, records are counted as dropped), a named daemon thread started lazily does the
rest and is started again in a forked child. Nothing here raises into the caller.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from collapsewatch.config import INGEST_PATH
from collapsewatch.pipeline.spool import Spool
from collapsewatch.pipeline.wire import REJECTED, SENT, UNREACHABLE, Delivery, Record, encode, post

logger = logging.getLogger("collapsewatch")

#: Records, or a function that builds them: host-side work the sender thread can do instead of
#: the training thread.
Records = list[Record] | Callable[[], list[Record]]


def _size(record: Record) -> int:
    return sum(len(v) if isinstance(v, list) else 1 for v in record["stats"].values())


@dataclass
class _Close:
    status: str
    done: threading.Event


class Transport:
    """Sends records for one run; see the module docstring. Counters are plain ints."""

    def __init__(
        self,
        *,
        server: str,
        token: str | None,
        spool: Spool,
        run: Callable[[], dict[str, Any]],
        client: httpx.Client | None = None,
        queue_size: int = 256,
        batch_records: int = 2000,
        batch_values: int = 500_000,
        batch_seconds: float = 1.0,
        offline_retry: float = 30.0,
    ) -> None:
        self.server = server
        self.url = server + INGEST_PATH
        self.token = token
        self.spool = spool
        self._run = run
        self._client = client
        self._own_client = client is None
        self._queue_size = queue_size
        self.batch_records = batch_records
        self.batch_values = batch_values
        self.batch_seconds = batch_seconds
        self.offline_retry = offline_retry
        self.batches_sent = self.records_sent = self.failures = self.spooled = self.dropped = 0
        self._count_lock = threading.Lock()
        #: seconds the worker spent encoding: it competes with training for the GIL
        self.encode_seconds = 0.0
        self._logged: set[str] = set()
        self._warned = False
        self._closed = False
        self._reset()

    def _reset(self) -> None:
        """Fresh thread state: at start, and in a child after ``fork`` (threads do not survive)."""
        self._pid = os.getpid()
        self._queue: queue.Queue[Records | _Close] = queue.Queue(self._queue_size)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending: list[Record] = []
        self._unsent: dict[str, tuple[bytes, int]] = {}
        self._offline_until = 0.0
        self._spooled_any = False

    # ----------------------------------------------------------------- training thread side

    def submit(self, records: Records, count: int | None = None) -> None:
        """Queue records, or a function the sender calls to build them (``count`` records);
        never blocks, never raises."""
        count = len(records) if isinstance(records, list) else (count or 0)
        if not count:
            return
        if self._closed:
            self._count("dropped", count)
            return
        self._ensure_thread()
        try:
            self._queue.put_nowait(records)
        except queue.Full:
            self._count("dropped", count)
            self._log_once("queue", "collapsewatch: send queue full; records are being dropped")

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
        """Send what is queued plus a final batch with ``status``, within ``timeout`` seconds.

        Whatever is not delivered by then is written to the spool.
        """
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + max(0.0, timeout)
        self._ensure_thread()
        done = threading.Event()
        try:
            self._queue.put(_Close(status, done), timeout=max(0.0, deadline - time.monotonic()))
            queued = True
        except queue.Full:
            queued = False
        try:
            if not (queued and done.wait(max(0.0, deadline - time.monotonic()))):
                self._spool_leftovers(status, final_queued=queued)
            if self._own_client and self._client is not None:
                self._client.close()
        except Exception:
            logger.exception("collapsewatch: closing the sender failed")

    def _spool_leftovers(self, status: str, final_queued: bool) -> None:
        """Out of time: stop the worker sending and spool everything it still holds."""
        self._stop.set()
        spooled_before = self.spooled
        with self._lock:
            records, self._pending = self._pending, []
            unsent = list(self._unsent.items())
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Close):  # the worker never saw it: the final batch is made here
                final_queued = False
            else:
                records.extend(item if isinstance(item, list) else item())
        for batch_id, (body, count) in unsent:
            self._spool(batch_id, body, count)
        if records or not final_queued:
            for chunk, last in self._chunks(records):
                batch_id, body = encode(self._run(), chunk, status if last else None)
                self._spool(batch_id, body, len(chunk))
        if self.spooled > spooled_before:
            where = self.spool.directory
            self._warn(
                "unreachable",
                f"collapsewatch: server {self.server} did not take the last batches before the "
                f"finish timeout; they are spooled to {where}; upload later with "
                f"`collapsewatch sync {where}`",
            )

    # ------------------------------------------------------------------------ worker side

    def _work(self) -> None:
        started: float | None = None
        while True:
            timeout = None if started is None else started + self.batch_seconds - time.monotonic()
            try:
                item = self._queue.get(timeout=None if timeout is None else max(0.0, timeout))
            except queue.Empty:
                item = None
            if isinstance(item, _Close):
                try:
                    self._flush(item.status)
                except Exception:
                    logger.exception("collapsewatch: sender failed")
                finally:
                    item.done.set()
                return
            try:
                if item is not None:
                    if not isinstance(item, list):
                        t0 = time.perf_counter()
                        item = item()
                        self.encode_seconds += time.perf_counter() - t0
                    with self._lock:
                        self._pending.extend(item)
                    started = started or time.monotonic()
                full = len(self._pending) >= self.batch_records
                if item is None or full:
                    self._flush(None)
                    started = None
            except Exception:  # a bug here must not kill the worker silently
                logger.exception("collapsewatch: sender failed")

    def _flush(self, status: str | None) -> None:
        with self._lock:
            records, self._pending = self._pending, []
        if not records and status is None:
            return
        for chunk, last in self._chunks(records):
            t0 = time.perf_counter()
            batch_id, body = encode(self._run(), chunk, status if last else None)
            self.encode_seconds += time.perf_counter() - t0
            with self._lock:
                self._unsent[batch_id] = (body, len(chunk))
            self._ship(batch_id, body, len(chunk))
            with self._lock:
                self._unsent.pop(batch_id, None)

    def _chunks(self, records: list[Record]) -> Iterator[tuple[list[Record], bool]]:
        """Batches within the record and value limits; ``last`` marks the final one."""
        chunk: list[Record] = []
        values = 0
        for record in records:
            size = _size(record)
            if chunk and (len(chunk) >= self.batch_records or values + size > self.batch_values):
                yield chunk, False
                chunk, values = [], 0
            chunk.append(record)
            values += size
        yield chunk, True

    def _ship(self, batch_id: str, body: bytes, count: int) -> None:
        if self._stop.is_set() or time.monotonic() < self._offline_until:
            self._spool(batch_id, body, count)
            return
        # spooled batches go first so the server sees this run's batches in order
        if self._spooled_any and not self._drain():
            self._spool(batch_id, body, count)
            return
        result = self._post(body)
        if result.outcome == SENT:
            self._count("batches_sent")
            self._count("records_sent", count)
        elif result.outcome == REJECTED:
            self._rejected(result, count)
        else:
            self._unreachable(result)
            self._spool(batch_id, body, count)

    def _post(self, body: bytes) -> Delivery:
        if self._client is None:
            self._client = httpx.Client(timeout=5.0)
        return post(self._client, self.url, body, self.token, stop=self._stop)

    def _drain(self) -> bool:
        """Send spooled batches oldest first; False (and offline) if the server is still down."""
        for path in self.spool.pending():
            try:
                body = path.read_bytes()
            except OSError:
                continue
            result = self._post(body)
            if result.outcome == UNREACHABLE:
                self._unreachable(result)
                return False
            if result.outcome == SENT:
                self._count("batches_sent")
            else:
                self._rejected(result, 0)
            path.unlink(missing_ok=True)
        self._spooled_any = False
        return True

    def _spool(self, batch_id: str, body: bytes, count: int) -> None:
        try:
            if self.spool.write(batch_id, body):
                self._count("spooled")
                self._spooled_any = True
        except OSError as exc:
            self._count("dropped", count)
            self._warn(
                "spool",
                f"collapsewatch: cannot write the spool {self.spool.directory} "
                f"({exc}); {count} records were dropped",
            )

    def _unreachable(self, result: Delivery) -> None:
        self._count("failures")
        self._offline_until = time.monotonic() + self.offline_retry
        where = self.spool.directory
        self._warn(
            "unreachable",
            f"collapsewatch: server {self.server} unreachable "
            f"({result.reason}); statistics are spooled to {where}; upload later with "
            f"`collapsewatch sync {where}`",
        )

    def _rejected(self, result: Delivery, count: int) -> None:
        self._count("failures")
        self._count("dropped", count)
        self._warn(
            "rejected",
            f"collapsewatch: server {self.server} rejected a batch "
            f"({result.reason}); it was dropped",
        )

    # ---------------------------------------------------------------------------- reporting

    def _count(self, name: str, n: int = 1) -> None:
        # both threads update counters; += on an attribute is not atomic
        with self._count_lock:
            setattr(self, name, getattr(self, name) + n)

    def _log_once(self, key: str, message: str) -> bool:
        if key in self._logged:
            return False
        self._logged.add(key)
        logger.warning(message)
        return True

    def _warn(self, key: str, message: str) -> None:
        """Log each kind of problem once, and show the user one warning per monitor."""
        if not self._log_once(key, message) or self._warned:
            return
        self._warned = True
        # with warnings configured as errors, the log line above must do
        with contextlib.suppress(Exception):
            warnings.warn(message, RuntimeWarning, stacklevel=2)
