"""How much memory queued records hold, by estimate: the sender's queue is bounded by it; and
what they weigh against a batch's limits, which cut them into batches.

Counting calls would let a thousand ``log_scalar`` floats weigh as much as a thousand layers'
statistics; measuring Python objects exactly (``sys.getsizeof`` walks) costs more than the
records. The estimate counts a record's fixed part and its numbers.
"""

from __future__ import annotations

from collections.abc import Iterator

from collapsewatch.pipeline.wire import Record
from collapsewatch.schemas import COLUMN_VALUE_LOAD

# Memory estimates for the queue's bound: a record's dicts, keys and step as Python objects,
# and one value in a list (a pointer and a float).
RECORD_BYTES = 400
VALUE_BYTES = 32
#: A record still to be built is not known until the sender thread builds it (a scalar, or
#: host copies of vectors up to a k x k matrix): this is the first guess, then the sender uses
#: the average of the records it has built.
BUILT_RECORD_BYTES = 4096


def values(record: Record) -> int:
    """How many numbers a record carries (a packed vector counts its floats)."""
    total = 0
    for value in record["stats"].values():
        if isinstance(value, list):
            total += len(value)
        elif isinstance(value, dict):  # {"f32": base64}: 4 bytes a float, 4 chars per 3 bytes
            total += len(value.get("f32", "")) * 3 // 16
        else:
            total += 1
    return total


def footprint(records: list[Record]) -> int:
    """Estimated bytes of memory the records hold."""
    return sum(RECORD_BYTES + VALUE_BYTES * values(r) for r in records)


#: What a scalar record weighs against a batch's record limit (``Sender.batch_records``): it
#: travels in a column (``wire.encode``), which the server stores with no per-record work, so a
#: batch takes a hundred of them where it takes one layer's statistics.
SCALAR_LOAD = COLUMN_VALUE_LOAD


def weight(record: Record) -> float:
    """A record's weight against a batch's record limit."""
    return SCALAR_LOAD if record["kind"] == "scalar" else 1.0


def load(records: list[Record]) -> float:
    """The records' weight against a batch's record limit."""
    return sum(map(weight, records))


def batches(
    records: list[Record], max_load: float, max_values: int
) -> Iterator[tuple[list[Record], bool]]:
    """The records in order, cut into batches of at most ``max_load`` (:func:`load`) and
    ``max_values`` numbers (a record alone past either is a batch of its own); each with
    whether it is the last (the last may be empty)."""
    chunk: list[Record] = []
    size = 0
    heavy = 0.0
    for record in records:
        n, one = values(record), weight(record)
        if chunk and (heavy + one > max_load or size + n > max_values):
            yield chunk, False
            chunk, size, heavy = [], 0, 0.0
        chunk.append(record)
        size += n
        heavy += one
    yield chunk, True
