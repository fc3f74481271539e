"""Windowed indicators: dead and saturated units over the last 5 sampled steps, through the
real ingest on SQLite and Postgres, whatever the batch boundaries."""

from __future__ import annotations

import gzip
import json
import uuid
from typing import Any

import numpy as np
import pytest
import torch

from collapsewatch.pipeline.packing import StepPack
from collapsewatch.probes.activation_functions import SaturationAccumulator
from collapsewatch.schemas import ProbeKind
from collapsewatch_server.codec import as_arrays
from collapsewatch_server.indicators import CATALOGUE, compute_indicators
from collapsewatch_server.windows import span, sum_stats
from tests.helpers import make_batch

WIDTH = 4


def pos_at(step: int) -> list[float]:
    """Unit 0 fires only at step 2, unit 1 never, units 2 and 3 always (8 rows a step)."""
    return [8.0 if step == 2 else 0.0, 0.0, 8.0, 8.0]


def record(step: int) -> dict[str, Any]:
    stats = {
        "n": 8.0,
        "width": float(WIDTH),
        "sum": [1.0] * WIDTH,
        "sumsq": [2.0] * WIDTH,
        "pos": pos_at(step),
        "unit_sum": [0.5] * WIDTH,
    }
    return {"probe": "fc", "kind": "activation", "step": step, "stats": stats}


def post(client: Any, run_id: uuid.UUID, steps: range) -> None:
    batch = make_batch(run_id, steps=range(0), probes=("fc",))
    batch["records"] = [record(s) for s in steps]
    r = client.post(
        "/api/v1/ingest",
        content=gzip.compress(json.dumps(batch).encode()),
        headers={"content-type": "application/json", "content-encoding": "gzip"},
    )
    assert r.status_code == 202, r.text


def dead_series(client: Any, run_id: uuid.UUID) -> dict[int, float]:
    pts = client.get(f"/api/v1/runs/{run_id}/series/dead_fraction", params={"probe": "fc"}).json()
    return dict(zip(pts["steps"], pts["values"], strict=True))


def expected(step: int) -> float:
    """Brute force: a unit is dead when it fired in none of the last 5 steps (from step 0)."""
    fired = np.sum([pos_at(s) for s in range(max(0, step - 4), step + 1)], axis=0)
    return float(np.mean(fired <= 0))


@pytest.mark.parametrize(
    "batches",
    [[range(10)], [range(3), range(3, 5), range(5, 10)], [range(i, i + 1) for i in range(10)]],
    ids=["one-batch", "three-batches", "a-batch-a-step"],
)
def test_dead_fraction_is_windowed_across_batches(client: Any, batches: list[range]) -> None:
    assert CATALOGUE["dead_fraction"].window == 5
    run_id = uuid.uuid4()
    for steps in batches:
        post(client, run_id, steps)
    got = dead_series(client, run_id)
    assert got == {s: expected(s) for s in range(10)}
    # unit 0 is alive from step 2 to 6, dead again from step 7: 0.25 -> 0.5
    assert got[1] == 0.5 and got[2] == got[6] == 0.25 and got[7] == 0.5


def test_a_window_reads_only_the_records_before_the_batch_from_the_store(client: Any) -> None:
    """A late batch of earlier steps (a synced spool) sees the stored records before it."""
    run_id = uuid.uuid4()
    post(client, run_id, range(5, 10))
    post(client, run_id, range(0, 5))
    got = dead_series(client, run_id)
    assert [got[s] for s in range(5)] == [expected(s) for s in range(5)]


def test_a_sparse_window_reaches_back_a_bounded_number_of_steps(client: Any) -> None:
    """Sampled every 500 steps, the last 5 records would span 2,000 steps: the window keeps
    only those within span(step), so a unit that stopped firing is dead soon after."""
    run_id = uuid.uuid4()
    steps = [0, 2, 500, 1000, 1500, 2000, 2500]  # unit 0 fires at step 2 only
    batch = make_batch(run_id, steps=range(0), probes=("fc",))
    batch["records"] = [record(s) for s in steps]
    assert client.post("/api/v1/ingest", json=batch).status_code == 202
    got = dead_series(client, run_id)
    assert span(500) == 62 and span(2000) == 250 and span(100) == 32
    assert got[2] == 0.25, "step 0 and 2 are one window: unit 0 alive"
    assert got[500] == 0.5, "step 2 is 498 steps back, beyond span(500): unit 0 dead"
    assert got[2500] == 0.5


def test_sum_stats_keeps_descriptive_statistics_and_skips_other_shapes() -> None:
    new = {"n": 8.0, "width": 4.0, "pos": np.array([0.0, 1, 2, 3]), "eig": np.ones(4)}
    old = {"n": 8.0, "width": 4.0, "pos": np.array([1.0, 1, 1, 1]), "eig": np.ones(4)}
    wider = {"n": 8.0, "width": 5.0, "pos": np.ones(5), "eig": np.ones(5)}
    out = sum_stats([wider, old, new])
    assert out["n"] == 16.0 and out["width"] == 4.0
    np.testing.assert_array_equal(out["pos"], [1, 2, 3, 4])
    np.testing.assert_array_equal(out["eig"], np.ones(4))
    # merged when read, whichever way it is read
    assert out.get("n") == 16.0 and out.get("missing") is None and "pos" in out
    assert dict(out.items())["n"] == 16.0 and len(list(out.values())) == 4
    np.testing.assert_array_equal(sum_stats([old, new]).get("pos"), [1, 2, 3, 4])


def saturation_stats(rows: torch.Tensor, sigmoid: bool) -> dict[str, Any]:
    acc = SaturationAccumulator(sigmoid=sigmoid)
    acc.add(rows)
    pack = StepPack()
    acc.pack(pack.record("act", "activation", 0), pack)
    return as_arrays(pack.records()[0]["stats"])


@pytest.mark.parametrize("sigmoid", [False, True], ids=["tanh", "sigmoid"])
def test_saturated_fraction_merges_steps_and_matches_brute_force(sigmoid: bool) -> None:
    """Three sampled steps of real Tanh/Sigmoid outputs, summed as a window: a unit counts when
    it is saturated on every row of the three."""
    g = torch.Generator().manual_seed(0)
    scale = torch.tensor([0.1, 1.0, 8.0, 3.0, 3.0, 2.0])  # pre-activation scale per unit
    shift = torch.tensor([0.0, 0.0, 0.0, 40.0, -40.0, 3.0])
    steps = [torch.randn(64, 6, generator=g) * scale + shift for _ in range(3)]
    fn = torch.sigmoid if sigmoid else torch.tanh
    outs = [fn(x) for x in steps]
    window = sum_stats([saturation_stats(y, sigmoid) for y in outs])
    got = compute_indicators(ProbeKind.activation, window)["saturated_fraction"]
    y = torch.cat(outs).numpy().astype(np.float64)
    sat = (y < 0.01) | (y > 0.99) if sigmoid else np.abs(y) > 0.99
    assert got == pytest.approx(float(np.mean(sat.all(axis=0))))
    assert 0 < got < 1
