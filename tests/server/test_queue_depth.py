"""The accept's reading of the queue's depth: read again once too old, with this process's
own accepts added in between."""

from __future__ import annotations

import pytest

from collapsewatch_server.services.queue_depth import QueueDepth


def test_a_reading_serves_until_it_is_too_old_and_counts_own_accepts() -> None:
    now = [100.0]
    readings = iter([(3, 300), (1, 50)])
    reads: list[float] = []

    def read() -> tuple[int, int]:
        reads.append(now[0])
        return next(readings)

    depth = QueueDepth(max_age_s=0.5, clock=lambda: now[0])
    assert depth.get(read) == (3, 300)
    depth.add(20)
    now[0] += 0.4
    assert depth.get(read) == (4, 320), "the reading plus the batch accepted since"
    now[0] += 0.2
    assert depth.get(read) == (1, 50), "too old: read again"
    assert reads == [100.0, pytest.approx(100.6)]
