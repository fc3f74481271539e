"""The ingest request on the wire: encoding a batch, and one POST with its retries.

What an answer means for a batch (:class:`Outcome`) is decided here, once, for the sender and
for ``collapsewatch sync``:

- 2xx: ``STORED``, or ``DUPLICATE`` when the server already had this batch id;
- 401, 403, 404, 405 and redirects: ``REFUSED``. The token or the URL is wrong; the user can
  fix it, so the batch is kept for ``collapsewatch sync``;
- 429, and 503 with ``Retry-After``: ``THROTTLED``. The server is busy and says so; wait;
- 408 and other 5xx: retried here with backoff, then ``FAILED``. Either the server is in
  trouble or this batch breaks it (see :mod:`collapsewatch.pipeline.replay`);
- any other 4xx (400, 409 a batch id re-used with other content, 413, 422, ...): ``REJECTED``.
  Sending the same bytes again would get the same answer;
- no answer at all (connection refused, timeout): retried here, then ``UNREACHABLE``.
"""

from __future__ import annotations

import enum
import gzip
import json
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from collapsewatch._version import __version__
from collapsewatch.config import INGEST_PATH
from collapsewatch.pipeline.backoff import backoff_s, parse_retry_after
from collapsewatch.schemas import SCHEMA_VERSION

Record = dict[str, Any]

#: Answers that mean "fix the token or the URL, then sync": never a reason to discard data.
REFUSED_CODES = frozenset({401, 403, 404, 405})
#: How much of a refusal's body is kept (it is written beside a rejected batch).
DETAIL_CHARS = 2000


class Outcome(enum.StrEnum):
    """What became of one POST; see the module docstring."""

    STORED = "stored"
    DUPLICATE = "already stored"
    REJECTED = "rejected"
    REFUSED = "refused"
    THROTTLED = "throttled"
    FAILED = "failed"
    UNREACHABLE = "unreachable"

    @property
    def accepted(self) -> bool:
        return self in (Outcome.STORED, Outcome.DUPLICATE)


@dataclass(frozen=True)
class Answer:
    """The server's last word on a batch."""

    outcome: Outcome
    status: int | None = None  # the HTTP status, None when nothing answered
    reason: str = ""  # "HTTP 422", "ConnectError", ...
    detail: str = ""  # the start of the answer's body
    retry_after: float | None = None  # seconds, when the server asked for a pause
    #: the alerts firing on the run, from an accepted batch's answer (``IngestResult.firing``)
    firing: tuple[dict[str, Any], ...] | None = None

    def describe(self) -> str:
        """``reason`` and the server's own words, on one line."""
        detail = " ".join(self.detail.split())[:300]
        return f"{self.reason}: {detail}" if detail else self.reason


def headers(token: str | None) -> dict[str, str]:
    out = {
        "Content-Type": "application/json",
        "Content-Encoding": "gzip",
        "User-Agent": f"collapsewatch/{__version__}",
    }
    if token:
        out["Authorization"] = f"Bearer {token}"
    return out


def classify(response: httpx.Response) -> Answer:
    """The outcome of one answer, before any retry."""
    code = response.status_code
    reason = f"HTTP {code}"
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    if 200 <= code < 300:
        try:
            body = response.json()
            duplicate = bool(body.get("duplicate"))
            listed = body.get("firing")
        except (ValueError, AttributeError):
            duplicate, listed = False, None
        firing = (
            tuple(a for a in listed if isinstance(a, dict)) if isinstance(listed, list) else None
        )
        outcome = Outcome.DUPLICATE if duplicate else Outcome.STORED
        return Answer(outcome, code, reason, firing=firing)
    detail = response.text[:DETAIL_CHARS]
    if 300 <= code < 400:
        where = response.headers.get("location", "")
        return Answer(Outcome.REFUSED, code, reason, f"redirected to {where!r}")
    if code in REFUSED_CODES:
        return Answer(Outcome.REFUSED, code, reason, detail)
    if code == 429 or (code == 503 and retry_after is not None):
        return Answer(Outcome.THROTTLED, code, reason, detail, retry_after)
    if code == 408 or code >= 500:
        return Answer(Outcome.FAILED, code, reason, detail, retry_after)
    return Answer(Outcome.REJECTED, code, reason, detail)


class Endpoint:
    """The ingest URL of one server, with its token and HTTP client (made on first use)."""

    def __init__(
        self,
        server: str,
        token: str | None,
        client: httpx.Client | None = None,
        *,
        timeout: float = 5.0,
    ) -> None:
        self.server = server
        self.url = server + INGEST_PATH
        self.token = token
        self._client = client
        self._own_client = client is None
        self._timeout = timeout
        #: the server refused scalar columns (it is older than them): send them as records
        self.records_only = False

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(timeout=self._timeout)
        return self._client

    def post(
        self,
        body: bytes,
        *,
        attempts: int = 4,
        base_delay: float = 0.25,
        max_delay: float = 5.0,
        stop: threading.Event | None = None,
    ) -> Answer:
        """POST one gzipped batch; retry ``FAILED`` and ``UNREACHABLE`` with backoff and jitter.

        Every other outcome returns at once: waiting out a ``THROTTLED`` answer is the
        caller's business (the sender spools meanwhile). ``stop`` cuts the retries short.
        Never raises.
        """
        stop = stop or threading.Event()
        if self.records_only:
            body = without_columns(body) or body
        answer = Answer(Outcome.UNREACHABLE, reason="not sent")
        for attempt in range(1, attempts + 1):
            try:
                response = self.client.post(self.url, content=body, headers=headers(self.token))
            except httpx.TransportError as exc:
                answer = Answer(Outcome.UNREACHABLE, reason=type(exc).__name__, detail=str(exc))
            except Exception as exc:  # a broken client or app: not worth retrying, never raise
                return Answer(Outcome.UNREACHABLE, reason=type(exc).__name__, detail=str(exc))
            else:
                answer = classify(response)
                if refuses_columns(answer) and not self.records_only:
                    # a server older than scalar columns: records from now on
                    self.records_only = True
                    return self.post(
                        body,
                        attempts=attempts,
                        base_delay=base_delay,
                        max_delay=max_delay,
                        stop=stop,
                    )
                if answer.outcome not in (Outcome.FAILED, Outcome.UNREACHABLE):
                    return answer
            if attempt == attempts:
                break
            delay = backoff_s(attempt, base_delay, max_delay)
            if answer.retry_after is not None:
                delay = max(delay, min(answer.retry_after, max_delay))
            if stop.wait(delay):
                break
        return answer

    def healthy(self) -> bool:
        """Whether the server says it and its database are fine (``GET /healthz``)."""
        try:
            response = self.client.get(self.server + "/healthz")
            return response.status_code == 200 and response.json().get("status") == "ok"
        except Exception:  # anything but a clear yes is a no
            return False

    def close(self) -> None:
        """Close the HTTP client if it was made here (a client handed in is the caller's)."""
        if self._own_client and self._client is not None:
            self._client.close()
            self._client = None


def encode(run: dict[str, Any], records: list[Record], status: str | None) -> tuple[str, bytes]:
    """An ``IngestBatch`` as gzipped JSON, with a fresh batch id; NaN and inf stay as such.
    Scalar records go as columns (``IngestBatch.scalars``, one per probe): the server stores
    a column with no per-record work."""
    batch_id = str(uuid.uuid4())
    kept, columns = _columns(records)
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "batch_id": batch_id,
        "run": run,
        "records": kept,
        "sent_at": datetime.now(UTC).isoformat(),
    }
    if columns:  # only then: servers older than columns keep taking batches without them
        doc["scalars"] = columns
    if status is not None:
        doc["status"] = status
    return batch_id, _gzip(doc)


def _gzip(doc: dict[str, Any]) -> bytes:
    raw = json.dumps(doc, allow_nan=True, separators=(",", ":")).encode()
    # level 1: 5-10x faster than the default for about 5% more bytes on float-heavy JSON
    return gzip.compress(raw, compresslevel=1)


def _columns(records: list[Record]) -> tuple[list[Record], list[dict[str, Any]]]:
    """The records that are not a plain scalar, and the scalars as columns (probes in order
    of first record, steps in record order)."""
    kept: list[Record] = []
    columns: dict[str, dict[str, Any]] = {}
    for record in records:
        stats = record["stats"]
        if record["kind"] != "scalar" or len(stats) != 1 or "value" not in stats:
            kept.append(record)
            continue
        column = columns.get(record["probe"])
        if column is None:
            column = columns[record["probe"]] = {
                "probe": record["probe"],
                "steps": [],
                "values": [],
            }
        column["steps"].append(record["step"])
        column["values"].append(stats["value"])
    return kept, list(columns.values())


def refuses_columns(answer: Answer) -> bool:
    """Whether a server older than scalar columns refused a batch for having them: a 422
    whose errors include ``extra_forbidden`` at the batch's ``scalars`` field itself (a broken
    column, refused by a server that takes columns, is located inside it)."""
    if answer.status != 422:
        return False
    try:
        errors = json.loads(answer.detail).get("detail")
    except (ValueError, AttributeError):
        return False
    return isinstance(errors, list) and any(
        isinstance(e, dict)
        and e.get("type") == "extra_forbidden"
        and list(e.get("loc") or [])[-1:] == ["scalars"]
        for e in errors
    )


def without_columns(body: bytes) -> bytes | None:
    """A gzipped batch with its scalar columns as ``scalar`` records (the same batch id), for
    a server older than columns; None when it has none."""
    doc = json.loads(gzip.decompress(body))
    columns = doc.pop("scalars", None)
    if not columns:
        return None
    doc["records"] = [*doc.get("records", [])] + [
        {"probe": c["probe"], "kind": "scalar", "step": step, "stats": {"value": value}}
        for c in columns
        for step, value in zip(c["steps"], c["values"], strict=True)
    ]
    return _gzip(doc)
