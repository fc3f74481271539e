"""When to try again (backoff, Retry-After), and what each answer means for a batch."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import httpx
import pytest

from collapsewatch.pipeline.backoff import backoff_s, parse_retry_after
from collapsewatch.pipeline.wire import Outcome, classify


def test_retry_after_in_seconds_or_as_an_http_date() -> None:
    now = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after("Thu, 01 May 2025 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("Thu, 01 May 2025 11:00:00 GMT", now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


def test_backoff_doubles_with_full_jitter_up_to_the_cap() -> None:
    rng = random.Random(1)
    for retry, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (10, 512.0), (11, 600.0), (50, 600.0)]:
        delays = [backoff_s(retry, 1.0, 600.0, rng) for _ in range(200)]
        assert min(delays) >= 0 and max(delays) <= ceiling
        assert max(delays) > 0.8 * ceiling  # jitter spreads over the whole range


@pytest.mark.parametrize(
    ("status", "headers", "outcome"),
    [
        (202, {}, Outcome.STORED),
        (401, {}, Outcome.REFUSED),
        (403, {}, Outcome.REFUSED),
        (404, {}, Outcome.REFUSED),
        (307, {"location": "https://elsewhere"}, Outcome.REFUSED),
        (400, {}, Outcome.REJECTED),
        (409, {}, Outcome.REJECTED),
        (413, {}, Outcome.REJECTED),
        (422, {}, Outcome.REJECTED),
        (429, {}, Outcome.THROTTLED),
        (503, {"retry-after": "5"}, Outcome.THROTTLED),
        (503, {}, Outcome.FAILED),
        (500, {}, Outcome.FAILED),
        (408, {}, Outcome.FAILED),
    ],
)
def test_each_answer_has_one_meaning(
    status: int, headers: dict[str, str], outcome: Outcome
) -> None:
    assert classify(httpx.Response(status, headers=headers)).outcome is outcome


def test_an_answer_that_says_duplicate_is_already_stored() -> None:
    answer = classify(httpx.Response(202, json={"duplicate": True, "records": 0}))
    assert answer.outcome is Outcome.DUPLICATE and answer.outcome.accepted
    busy = classify(httpx.Response(503, headers={"retry-after": "7"}))
    assert busy.retry_after == 7.0
