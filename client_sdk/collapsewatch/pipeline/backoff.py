"""When to try again: exponential backoff with full jitter, and the ``Retry-After`` header.

One home for both, used by the SDK's ingest requests and by the server's webhook deliverer.
"""

from __future__ import annotations

import email.utils
import random
from datetime import UTC, datetime


def backoff_s(retry: int, base_s: float, max_s: float, rng: random.Random | None = None) -> float:
    """Full-jitter delay before retry number ``retry`` (1 for the first retry): a delay drawn
    from ``[0, min(max_s, base_s * 2**(retry-1))]``, so clients that failed together do not
    come back together."""
    ceiling = min(max_s, base_s * 2.0 ** min(max(retry - 1, 0), 60))
    return (rng or random).uniform(0.0, ceiling)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds asked for by a ``Retry-After`` header (delta seconds or an HTTP date), or None
    when there is no usable header."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
