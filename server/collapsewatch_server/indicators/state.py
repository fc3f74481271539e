"""Recurrent / state-space state collapse (the ``state`` family of docs/indicators.md), from the
statistics of ``log_state`` (probe kind ``state``): the state at positions past the training
length against the state within it.

States are summarised per log2 position bucket (bucket b: positions 2^b <= t < 2^(b+1), bucket 0
also t = 0). The indicators compare the highest non-empty bucket (the longest positions
evaluated) with the reference bucket: the one holding position ``train_length - 1`` (the last
trained position) or, when that is empty, the highest non-empty one below it; without
``train_length``, or with no state logged at or below it, the lowest non-empty bucket. A bucket
can span positions on both sides of the training length (8..15 for a length of 12): log the
positions ``train_length - 1`` and powers of two for a clean reading.
"""

from __future__ import annotations

import math

import numpy as np

from collapsewatch.schemas import ProbeKind
from collapsewatch.schemas import StateStat as H
from collapsewatch_server.indicators.catalogue import Stats, indicator

_STATE = ProbeKind.state
_SOURCES = ("Stuffed Mamba",)


def bucket_of(position: int) -> int:
    """The log2 bucket of a position (as the SDK files it)."""
    return max(position.bit_length() - 1, 0)


def compared_buckets(stats: Stats) -> tuple[int, int] | None:
    """``(longest, reference)`` buckets, or None when no bucket lies above the reference."""
    count = np.asarray(stats[H.count], dtype=np.float64)
    filled = np.flatnonzero(count > 0)
    if filled.size == 0:
        return None
    reference = int(filled[0])
    train = stats.get(H.train_length)
    if train is not None and math.isfinite(float(train)) and float(train) >= 1:
        within = filled[filled <= bucket_of(int(train) - 1)]
        if within.size:
            reference = int(within[-1])
    longest = int(filled[-1])
    return (longest, reference) if longest > reference else None


def _ratio(top: float, reference: float) -> float:
    if reference > 0:
        return top / reference
    return 1.0 if top == 0 else math.nan  # a zero state that grows: cannot be a finite ratio


@indicator(
    "state_norm_ratio",
    title="State norm ratio (longest / training length)",
    family="state",
    applies_to=_STATE,
    direction="high_is_bad",
    warn=2.0,
    meaning="Mean ||h_t|| of the states at the longest positions evaluated divided by the mean "
    "at the training length (log2 position buckets; without train_length, at the shortest "
    "positions logged). A recurrent or state-space model that never learned to forget keeps "
    "accumulating past the length it was trained on: its state grows, a few channels explode, "
    "and the outputs fall apart there (state collapse). Above 2 the state has doubled.",
    what_to_try="Train on longer sequences (or a mix of lengths), push the forget gates / "
    "decays to forget more (state normalisation, a smaller initial gate bias), or truncate or "
    "reset the state past the training length (sliding window).",
    sources=_SOURCES,
)
def state_norm_ratio(stats: Stats) -> float | None:
    buckets = compared_buckets(stats)
    if buckets is None:
        return None  # nothing logged past the reference positions
    count = np.asarray(stats[H.count], dtype=np.float64)
    norm_sum = np.asarray(stats[H.norm_sum], dtype=np.float64)
    top, ref = buckets
    return _ratio(norm_sum[top] / count[top], norm_sum[ref] / count[ref])


@indicator(
    "state_max_ratio",
    title="State max |h| ratio (longest / training length)",
    family="state",
    applies_to=_STATE,
    direction="info",
    meaning="The largest |h_t,j| over the states at the longest positions evaluated divided "
    "by the largest at the training length (buckets as for the norm ratio): a few exploding "
    "channels show here before they dominate the norm. Maxima depend on how many states were "
    "logged, so this is shown without a threshold.",
    what_to_try="As for the state norm ratio.",
    sources=_SOURCES,
)
def state_max_ratio(stats: Stats) -> float | None:
    buckets = compared_buckets(stats)
    if buckets is None:
        return None
    peak = np.asarray(stats[H.max_abs], dtype=np.float64)
    top, ref = buckets
    return _ratio(float(peak[top]), float(peak[ref]))
