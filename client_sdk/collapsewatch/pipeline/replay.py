"""Sending spooled batches again: one policy for the sender and for ``collapsewatch sync``.

A round posts the waiting batches oldest first and settles each one by its answer
(:class:`~collapsewatch.pipeline.wire.Outcome`):

- accepted (stored, or already stored): the file is deleted;
- rejected (a 4xx that repeating cannot change): the file is set aside in ``rejected/`` with the
  server's answer, and the round goes on: one refused batch never blocks the batches after it;
- refused (401/403/404: token or URL), throttled (429/503 with Retry-After) or unreachable:
  the round stops and every file stays, since the next batch would get the same answer;
- failed (5xx after the request's own retries): the file stays and the round goes on. A batch
  that failed is tried after the batches that have not, so it cannot block them. When the
  server took other batches in the same round, or says it is healthy (``/healthz``), the
  failure counts against the batch; after ``poison_after`` such failures it is set aside like
  a rejected one. Otherwise the server is in trouble, nothing counts against the batch, and
  the round says to wait. ``stop_after`` failures in a row end a round early.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from collapsewatch.config import server_url, token_value
from collapsewatch.pipeline.spool import batch_files, batch_id, set_aside
from collapsewatch.pipeline.wire import Answer, Endpoint, Outcome

#: Failures of one batch, while the server takes others, before it is set aside.
POISON_AFTER = 3
#: Failures in a row that end a round: the server may be down, do not hammer it.
STOP_AFTER = 3
#: ``collapsewatch sync`` waits at most this long in all for a busy server.
SYNC_MAX_WAIT = 300.0


@dataclass
class Round:
    """What one round did, by batch id."""

    sent: list[str] = field(default_factory=list)
    duplicate: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    #: why the remaining batches should wait (refused, throttled, unreachable, failing server)
    wait: Answer | None = None
    #: failures counted against batches in this round
    struck: int = 0
    #: the last answer to each batch not accepted
    answers: dict[str, Answer] = field(default_factory=dict)

    @property
    def accepted(self) -> list[str]:
        return [*self.sent, *self.duplicate]


def answer_note(answer: Answer, why: str) -> dict[str, object]:
    """What is written beside a batch set aside."""
    return {
        "why": why,
        "status": answer.status,
        "reason": answer.reason,
        "detail": answer.detail,
    }


class Replay:
    """Rounds of sending against one endpoint; remembers which batches failed and how often."""

    def __init__(
        self, endpoint: Endpoint, *, poison_after: int = POISON_AFTER, stop_after: int = STOP_AFTER
    ) -> None:
        self.endpoint = endpoint
        self.poison_after = poison_after
        self.stop_after = stop_after
        self._strikes: dict[str, int] = {}

    def round(
        self,
        paths: list[Path],
        *,
        answered: tuple[Path, Answer] | None = None,
        stop: threading.Event | None = None,
    ) -> Round:
        """Send ``paths`` (spooled batches) and settle each; see the module docstring.

        ``answered`` is a batch already posted once, with its answer: the sender's live batch,
        just spooled. It is settled first, without posting it again.
        """
        result = Round()
        failing: list[tuple[Path, Answer]] = []
        in_row = 0
        # batches that failed before go last, in their order: they cannot block the others
        todo = sorted(paths, key=lambda p: batch_id(p) in self._strikes)
        if answered is not None:
            todo.insert(0, answered[0])
        for index, path in enumerate(todo):
            if result.wait is not None or in_row >= self.stop_after or (stop and stop.is_set()):
                result.kept += [batch_id(p) for p in todo[index:]]
                break
            if answered is not None and path == answered[0]:
                answer = answered[1]
            else:
                try:
                    body = path.read_bytes()
                except OSError:  # gone (another sync took it) or unreadable: leave it
                    result.kept.append(batch_id(path))
                    continue
                answer = self.endpoint.post(body, stop=stop)
            in_row = in_row + 1 if answer.outcome is Outcome.FAILED else 0
            self._settle(path, answer, result, failing)
        if failing:
            self._judge_failures(failing, result)
        return result

    def _settle(
        self, path: Path, answer: Answer, result: Round, failing: list[tuple[Path, Answer]]
    ) -> None:
        bid = batch_id(path)
        if answer.outcome.accepted:
            with contextlib.suppress(OSError):  # left behind, it is only sent again: a duplicate
                path.unlink()
            self._strikes.pop(bid, None)
            (result.sent if answer.outcome is Outcome.STORED else result.duplicate).append(bid)
            return
        result.answers[bid] = answer
        if answer.outcome is Outcome.REJECTED:
            self._set_aside(path, answer, "the server refused this batch", result)
        elif answer.outcome is Outcome.FAILED:
            failing.append((path, answer))
        else:  # refused, throttled, unreachable: every batch would get the same answer now
            result.kept.append(bid)
            result.wait = answer

    def _judge_failures(self, failing: list[tuple[Path, Answer]], result: Round) -> None:
        """A failure counts against its batch only when the server otherwise works."""
        works = bool(result.accepted) or self.endpoint.healthy()
        for path, answer in failing:
            bid = batch_id(path)
            if not works:
                self._strikes.setdefault(bid, 0)  # still tried after the others next time
                result.kept.append(bid)
                continue
            self._strikes[bid] = self._strikes.get(bid, 0) + 1
            result.struck += 1
            if self._strikes[bid] >= self.poison_after:
                why = (
                    f"the server failed on this batch {self._strikes[bid]} times while it "
                    "took other batches"
                )
                self._strikes.pop(bid)
                self._set_aside(path, answer, why, result)
            else:
                result.kept.append(bid)
        if not works and result.wait is None:
            result.wait = failing[-1][1]

    @staticmethod
    def _set_aside(path: Path, answer: Answer, why: str, result: Round) -> None:
        try:
            set_aside(path, answer_note(answer, why))
        except OSError:  # the batch stays where it is, to be tried again
            result.kept.append(batch_id(path))
        else:
            result.rejected.append(batch_id(path))


# ---------------------------------------------------------------------- collapsewatch sync


@dataclass
class SyncReport:
    """What ``collapsewatch sync`` did, in batches."""

    sent: int = 0
    duplicate: int = 0
    rejected: int = 0
    kept: int = 0
    #: the last answer that made batches wait or be set aside, for the user
    problems: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every batch is on the server."""
        return self.rejected == 0 and self.kept == 0


def sync(
    directory: str | os.PathLike[str],
    server: str | None = None,
    token: str | None = None,
    http_client: httpx.Client | None = None,
    *,
    max_wait: float = SYNC_MAX_WAIT,
) -> SyncReport:
    """Send the spooled batches under ``directory`` (a run's spool dir or the spool root).

    Rounds of :class:`Replay` until every batch is settled or the server says to stop;
    a busy server (throttled) is waited for, up to ``max_wait`` seconds in all. Server and
    token default to ``$COLLAPSEWATCH_SERVER`` and ``$COLLAPSEWATCH_TOKEN``. Raises
    ``FileNotFoundError`` when ``directory`` is not a directory.
    """
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"no spool directory at {root}")
    endpoint = Endpoint(server_url(server), token_value(token), http_client, timeout=30.0)
    replay = Replay(endpoint)
    report = SyncReport()
    waited = 0.0
    runs = {p.parent for p in batch_files(root)} - {root}
    settled: set[str] = set()  # set aside in this sync: not tried again (rejected/ itself)
    try:
        while files := [p for p in batch_files(root) if batch_id(p) not in settled]:
            result = replay.round(files)
            settled.update(result.rejected)
            report.sent += len(result.sent)
            report.duplicate += len(result.duplicate)
            report.rejected += len(result.rejected)
            for bid in result.rejected:
                report.problems.append(f"{bid} set aside: {result.answers[bid].describe()}")
            wait = result.wait
            if wait is not None and wait.outcome is Outcome.THROTTLED and waited < max_wait:
                pause = min(wait.retry_after or 1.0, max_wait - waited)
                time.sleep(pause)
                waited += pause
                continue
            if wait is not None:
                report.problems.append(f"stopped: {wait.describe()}")
                break
            if not (result.accepted or result.rejected or result.struck):
                break  # nothing moved: the rest is kept
    finally:
        endpoint.close()
    report.kept = len([p for p in batch_files(root) if batch_id(p) not in settled])
    for run_dir in runs:
        with contextlib.suppress(OSError):
            run_dir.rmdir()  # only succeeds once empty; the directory given is kept
    return report
