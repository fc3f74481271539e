"""Rollups: bins at several resolutions that merge like the points they summarise (pure), and
charts read from them that agree with charts binned from the points (SQLite and Postgres)."""

from __future__ import annotations

import json
import math
import uuid
from typing import Any

import numpy as np
import pytest
from sqlalchemy import text

from collapsewatch_server import rollups
from collapsewatch_server.repositories import point_bins, point_rollups
from collapsewatch_server.services import runs
from tests.alert_helpers import scalar_batch


def brute(series: np.ndarray, steps: np.ndarray, values: np.ndarray, width: int) -> dict:
    """Each (series, bin)'s count, finite extremes and last value, point by point."""
    out: dict[tuple[int, int], dict[str, Any]] = {}
    for sid, step, value in sorted(
        zip(series.tolist(), steps.tolist(), values.tolist(), strict=True)
    ):
        b = out.setdefault((sid, step // width), {"count": 0, "low": math.inf, "high": -math.inf})
        b["count"] += 1
        b["last"] = value
        if math.isfinite(value):
            b["low"], b["high"] = min(b["low"], value), max(b["high"], value)
    return out


def test_every_level_matches_the_points_it_summarises() -> None:
    rng = np.random.default_rng(0)
    series = rng.integers(0, 3, 3000)
    steps = rng.choice(100_000, 3000, replace=False)
    values = rng.normal(size=3000)
    values[::97] = np.nan
    levels = rollups.levels_of(rollups.of_points(series, steps, values))
    for bins, width in zip(levels, rollups.LEVELS, strict=True):
        expected = brute(series, steps, values, width)
        assert len(bins) == len(expected)
        for i in range(len(bins)):
            want = expected[(int(bins.series[i]), int(bins.first_step[i]) // width)]
            assert bins.count[i] == want["count"]
            if math.isinf(want["low"]):
                assert math.isnan(bins.low[i]) and math.isnan(bins.high[i])
                continue
            assert (bins.low[i], bins.high[i]) == (want["low"], want["high"])
            # the steps of the extremes hold those values
            at = {
                int(t): v
                for t, v in zip(
                    steps[series == bins.series[i]], values[series == bins.series[i]], strict=True
                )
            }
            assert at[int(bins.low_step[i])] == bins.low[i]
            assert at[int(bins.high_step[i])] == bins.high[i]


def test_bins_merged_in_two_halves_equal_bins_of_the_whole() -> None:
    steps = np.arange(0, 5000, 3)
    values = np.sin(steps / 50.0)
    series = np.zeros(steps.size, dtype=np.int64)
    whole = rollups.merge(rollups.of_points(series, steps, values), 256)
    halves = [
        rollups.merge(rollups.of_points(series[part], steps[part], values[part]), 256)
        for part in (slice(0, 800), slice(800, None))
    ]
    joined = rollups.Bins(
        **{
            f: np.concatenate([getattr(h, f) for h in halves])
            for f in rollups.Bins.__dataclass_fields__
        }
    )
    again = rollups.merge(joined, 256)
    for field in rollups.Bins.__dataclass_fields__:
        np.testing.assert_array_equal(getattr(again, field), getattr(whole, field), field)


def test_as_points_keeps_the_spike() -> None:
    steps = np.arange(100_000)
    values = np.ones(steps.size)
    values[73_421] = -50.0
    bins = rollups.merge(rollups.of_points(np.zeros(steps.size, np.int64), steps, values), 4096)
    kept_steps, kept = rollups.as_points(bins)
    assert kept_steps.size <= 2 * len(bins)
    assert kept[list(kept_steps).index(73_421)] == -50.0


# ------------------------------------------------------------------------ through the store


def post(client: Any, batch: dict[str, Any]) -> None:
    r = client.post(
        "/api/v1/ingest", content=json.dumps(batch), headers={"content-type": "application/json"}
    )
    assert r.status_code == 202, r.text


def test_charts_from_rollups_agree_with_charts_from_points(client: Any) -> None:
    run = "6d0cbd1e-5a7e-4a8e-9c55-0d5b5c3f0a11"
    values = [math.sin(i / 40.0) for i in range(3000)]
    values[1234] = 9.0  # a spike
    values[2000] = math.nan
    starts = list(range(0, 3000, 700))
    for start in [starts[-1], *starts[:-1]]:  # several batches, the last one arriving first
        chunk = values[start : start + 700]
        post(client, scalar_batch(run, chunk, start=start * 2, every=2, probe="a"))
        post(client, scalar_batch(run, [v / 2 for v in chunk], start=start * 2, every=2, probe="b"))
    ctx = client.app.state.context
    with ctx.db.read() as s:
        raw = point_bins.indicator_bins(s, run, "value", 40)
        rolled = point_bins.indicator_bins(s, run, "value", 40, raw_points=0)
    assert rolled.total == raw.total == 6000
    assert rolled.width in rollups.LEVELS and rolled.width >= raw.width
    assert rolled.bins <= 40
    for a, b in zip(raw.probes, rolled.probes, strict=True):
        assert a.probe == b.probe
        assert sum(b.count) == sum(a.count) == 3000
        assert np.nanmax([v for v in b.high if v is not None]) == max(
            v for v in a.high if v is not None
        )
        assert np.nanmin([v for v in b.low if v is not None]) == min(
            v for v in a.low if v is not None
        )
        assert sum(b.nonfinite) == sum(a.nonfinite) == 1
    listed = {s.probe: s for s in runs.list_series(ctx, uuid.UUID(run))}
    assert (listed["a"].points, listed["a"].last_step) == (3000, 5998)
    assert listed["a"].last_value == pytest.approx(values[-1])


def test_a_resent_step_is_stored_once_and_counted_once(client: Any) -> None:
    run = "0b3f7e44-08e9-4c1a-9d4d-5d0a1c8b9e21"
    post(client, scalar_batch(run, [1.0, 2.0, 3.0], start=10))
    post(client, scalar_batch(run, [9.0, 4.0], start=12))  # step 12 again (new batch id), then 13
    post(client, scalar_batch(run, [0.5], start=5))  # behind the end: a late sync
    ctx = client.app.state.context
    (series,) = runs.list_series(ctx, uuid.UUID(run))
    assert (series.points, series.last_step, series.last_value) == (5, 13, 4.0)
    got = runs.get_points(ctx, uuid.UUID(run), "value", "metric")
    assert got.steps == [5, 10, 11, 12, 13]
    assert got.values == [0.5, 1.0, 2.0, 3.0, 4.0], "the first value of a step is kept"


def test_every_level_read_back_matches_the_points_with_coarse_levels_behind(client: Any) -> None:
    """Only the finest level is written per batch; the coarse ones catch up every
    ROLL_STEPS steps and are read with the finest bins past the mark merged in. Two chunks
    arrive last (a late sync behind the mark). Every level read equals the points binned."""
    run = "3c1e9a52-7b1d-4c55-9e0f-2a6b8d4e1f03"
    steps = np.arange(0, 9000, 3)
    values = np.random.default_rng(3).normal(size=steps.size)
    values[[5, 700, 2001]] = np.nan
    chunks = [np.arange(i, min(i + 50, steps.size)) for i in range(0, steps.size, 50)]
    late = [chunks.pop(40), chunks.pop(10)]
    for chunk in [*chunks, *late]:
        start = int(steps[chunk[0]])
        post(client, scalar_batch(run, values[chunk].tolist(), start=start, every=3))
    ctx = client.app.state.context
    with ctx.db.read() as s:
        ((sid, mark, last),) = s.execute(
            text("SELECT id, coarse_until, last_step FROM series")
        ).all()
        assert 0 < mark <= last < mark + rollups.ROLL_STEPS + rollups.LEVELS[0]
        for level, width in enumerate(rollups.LEVELS):
            got = point_rollups.read(s, [sid], level)
            expected = brute(np.full(steps.size, sid), steps, values, width)
            assert len(got) == len(expected), level
            for i in range(len(got)):
                want = expected[(sid, int(got.first_step[i]) // width)]
                assert got.count[i] == want["count"]
                assert got.last[i] == want["last"] or math.isnan(want["last"])
                in_bin = (steps >= got.first_step[i]) & (steps <= got.last_step[i])
                assert int(in_bin.sum()) == want["count"]
                if math.isinf(want["low"]):
                    assert math.isnan(got.low[i])
                    continue
                assert (got.low[i], got.high[i]) == (want["low"], want["high"])
                assert values[steps == got.low_step[i]][0] == got.low[i]
                assert values[steps == got.high_step[i]][0] == got.high[i]


def test_joined_merges_the_finest_bins_past_the_mark_into_the_stored_coarse_bins() -> None:
    steps = np.arange(0, 3000, 7)
    values = np.cos(steps / 30.0)
    series = np.zeros(steps.size, dtype=np.int64)
    points = rollups.of_points(series, steps, values)
    mark = 1024 + 16 * 5  # inside a coarse bin
    before = points.take(np.flatnonzero(steps < mark))
    after = points.take(np.flatnonzero(steps >= mark))
    stored = rollups.merge(before, 256)
    tail = rollups.merge(after, 16)
    whole = rollups.merge(points, 256)
    again = rollups.joined(stored, tail, 256)
    for field in rollups.Bins.__dataclass_fields__:
        np.testing.assert_array_equal(getattr(again, field), getattr(whole, field), field)
