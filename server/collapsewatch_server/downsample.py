"""Server-side downsampling that keeps spikes: each bucket keeps its minimum and its maximum."""

from __future__ import annotations

import itertools

import numpy as np


def minmax_downsample(
    steps: np.ndarray, values: np.ndarray, max_points: int
) -> tuple[np.ndarray, np.ndarray]:
    """Reduce to at most ``max_points`` points (``max_points >= 2``), in step order.

    The steps are cut into ``max_points // 2`` buckets of equal point count; each bucket keeps
    the point of its minimum and of its maximum value (NaNs are kept when a bucket has nothing
    else, so a diverged stretch stays visible), the first and last points are always kept.
    """
    n = steps.size
    if n <= max_points:
        return steps, values
    buckets = max(1, max_points // 2)
    edges = np.linspace(0, n, buckets + 1).astype(np.int64)
    keep: list[int] = []
    for lo, hi in itertools.pairwise(edges):
        if hi <= lo:
            continue
        chunk = values[lo:hi]
        finite = np.isfinite(chunk)
        if not finite.any():
            keep.append(int(lo))
            continue
        masked_lo = np.where(finite, chunk, np.inf)
        masked_hi = np.where(finite, chunk, -np.inf)
        keep.append(int(lo + np.argmin(masked_lo)))
        keep.append(int(lo + np.argmax(masked_hi)))
    idx = np.unique(np.array([0, *keep, n - 1], dtype=np.int64))
    if idx.size > max_points:
        # first/last pushed us over by one or two: drop interior points evenly
        inner = idx[1:-1]
        pick = np.linspace(0, inner.size - 1, max_points - 2).round().astype(np.int64)
        idx = np.concatenate([idx[:1], inner[pick], idx[-1:]])
    return steps[idx], values[idx]
