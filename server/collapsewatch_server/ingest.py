"""The ingest service: decode a batch's statistics, compute indicators, store it atomically."""

from __future__ import annotations

from collapsewatch.schemas import IngestBatch, IngestResult
from collapsewatch_server.codec import as_arrays, encode_stats
from collapsewatch_server.indicators import compute_indicators
from collapsewatch_server.store import Store


def ingest_batch(store: Store, batch: IngestBatch) -> IngestResult:
    """Compute every applicable indicator of every record, then store all in one transaction."""
    encoded: list[bytes] = []
    values: list[dict[str, float]] = []
    for record in batch.records:
        values.append(compute_indicators(record.kind, as_arrays(record.stats)))
        encoded.append(encode_stats(record.stats))
    return store.save_batch(batch, encoded, values)
