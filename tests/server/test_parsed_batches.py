"""The parsed batches a process keeps for its processor: bounded, and when full the batches
the processor reaches first (the oldest) are kept, unless they were taken elsewhere long ago."""

from __future__ import annotations

import uuid

from collapsewatch.schemas import IngestBatch
from collapsewatch_server.services.parsed_batches import ParsedBatches
from tests.alert_helpers import scalar_batch


def batch() -> IngestBatch:
    return IngestBatch.model_validate(scalar_batch(uuid.uuid4(), [0.5]))


def test_when_full_the_oldest_stay_until_they_are_stale() -> None:
    now = [0.0]
    kept = ParsedBatches(max_bytes=300, max_age_s=60.0, clock=lambda: now[0])
    first, second, third, fourth = batch(), batch(), batch(), batch()
    kept.put(first, 100)
    now[0] = 10.0
    kept.put(second, 200)
    kept.put(third, 100)  # full: the batch being accepted is left out
    assert len(kept) == 2 and kept.take(str(third.batch_id)) is None
    now[0] = 65.0  # the first was taken elsewhere long ago: it makes room
    kept.put(fourth, 100)
    assert kept.take(str(first.batch_id)) is None
    assert kept.take(str(second.batch_id)) is second
    assert kept.take(str(fourth.batch_id)) is fourth
    kept.put(batch(), 301)  # larger than the bound: never kept
    assert len(kept) == 0
