"""The ingest service: decode a batch's statistics, compute indicators, store it atomically."""

from __future__ import annotations

from collapsewatch.schemas import IngestBatch, IngestResult
from collapsewatch_server.codec import as_arrays, encode_stats
from collapsewatch_server.indicators import compute_indicators
from collapsewatch_server.store import Store
from collapsewatch_server.windows import BatchWindows


def ingest_batch(store: Store, batch: IngestBatch) -> IngestResult:
    """Compute every applicable indicator of every record, then store all in one transaction.

    Windowed indicators (dead units over the last few sampled steps) also read the probe's
    previous records: the batch's own and, loaded in one query, the stored ones.
    """
    arrays = [as_arrays(record.stats) for record in batch.records]
    windows = BatchWindows(store, batch, arrays)
    encoded: list[bytes] = []
    values: list[dict[str, float]] = []
    for i, (record, stats) in enumerate(zip(batch.records, arrays, strict=True)):
        values.append(compute_indicators(record.kind, stats, windows.of(i)))
        encoded.append(encode_stats(record.stats))
    return store.save_batch(batch, encoded, values)
