"""Each indicator from the SDK's statistics equals a brute-force computation on the raw outputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from collapsewatch.pipeline.packing import StepPack
from collapsewatch.probes.activations import ActivationAccumulator
from collapsewatch.schemas import ProbeKind
from collapsewatch_server.codec import as_arrays, decode_stats, encode_stats, vector
from collapsewatch_server.indicators import compute_indicators


def sdk_stats(chunks: list[torch.Tensor]) -> dict[str, object]:
    """What the SDK sends for a layer that produced ``chunks`` (several forwards, one step)."""
    acc = ActivationAccumulator()
    with torch.no_grad():
        for rows in chunks:
            acc.add(rows)
    pack = StepPack()
    stats = pack.record("layer", "activation", 0)
    acc.pack(stats, pack, raw=False)
    (record,) = pack.records()
    return record["stats"]


def brute(x: np.ndarray) -> dict[str, float]:
    cov = np.cov(x, rowvar=False, bias=True)
    lam = np.clip(np.linalg.eigvalsh(cov), 0, None)
    p = lam[lam > 0] / lam.sum()
    erank = math.exp(-(p * np.log(p)).sum())
    units = x / np.linalg.norm(x, axis=1, keepdims=True)
    mean_unit = units.mean(0)
    return {
        "dead_fraction": float(np.mean(np.all(x <= 0, axis=0))),
        "effective_rank": erank,
        "effective_rank_ratio": erank / x.shape[1],
        "simsiam_std": math.sqrt(1 - mean_unit @ mean_unit),
    }


def layer_output(rows: int, d: int, rank: int, dead: int, seed: int) -> np.ndarray:
    """A low-rank signal plus noise, shifted so ``dead`` units are never positive."""
    g = np.random.default_rng(seed)
    x = g.normal(size=(rows, rank)) @ g.normal(size=(rank, d)) + 0.1 * g.normal(size=(rows, d))
    x[:, :dead] = -np.abs(x[:, :dead]) - 0.01
    return x.astype(np.float32)


@pytest.mark.parametrize("merged", [False, True], ids=["one-forward", "three-forwards"])
def test_activation_indicators_match_brute_force(merged: bool) -> None:
    x = layer_output(rows=600, d=48, rank=6, dead=12, seed=1)
    t = torch.from_numpy(x)
    chunks = list(t.split(200)) if merged else [t]
    got = compute_indicators(ProbeKind.activation, as_arrays(sdk_stats(chunks)))
    want = brute(x.astype(np.float64))
    for name, value in want.items():
        assert got[name] == pytest.approx(value, rel=1e-3, abs=1e-6), name


def test_two_ranks_merge_by_adding_their_sums() -> None:
    """Data-parallel: the statistics of two ranks, summed, give the indicators of the union."""
    x = layer_output(rows=400, d=32, rank=5, dead=4, seed=2)
    a, b = sdk_stats([torch.from_numpy(x[:250])]), sdk_stats([torch.from_numpy(x[250:])])
    merged = {
        k: np.asarray(a[k]) + np.asarray(b[k]) for k in ("n", "sum", "sumsq", "pos", "unit_sum")
    }
    got = compute_indicators(ProbeKind.activation, {**as_arrays(a), **merged})
    want = brute(x.astype(np.float64))
    assert got["dead_fraction"] == pytest.approx(want["dead_fraction"])
    assert got["simsiam_std"] == pytest.approx(want["simsiam_std"], rel=1e-4)


def test_wide_layer_is_projected_and_keeps_the_effective_rank() -> None:
    """512 units are projected to 256 dims: the rank of a 10-dim signal survives within 15%."""
    x = layer_output(rows=2000, d=512, rank=10, dead=0, seed=3)
    stats = sdk_stats([torch.from_numpy(x)])
    assert len(vector(stats["eig"])) == 256
    got = compute_indicators(ProbeKind.activation, as_arrays(stats))
    want = brute(x.astype(np.float64))
    assert got["effective_rank"] == pytest.approx(want["effective_rank"], rel=0.15)
    assert got["simsiam_std"] == pytest.approx(want["simsiam_std"], rel=1e-3)


def test_complete_collapse_is_seen_by_simsiam_std_only() -> None:
    """Every output the same direction: centred statistics cannot see it, the mean unit can."""
    g = np.random.default_rng(4)
    direction = g.normal(size=32)
    x = (direction + 1e-3 * g.normal(size=(300, 32))).astype(np.float32)
    got = compute_indicators(ProbeKind.activation, as_arrays(sdk_stats([torch.from_numpy(x)])))
    assert got["simsiam_std"] < 0.01
    assert got["effective_rank"] > 20  # isotropic tiny noise: looks full-rank


def test_stored_statistics_give_the_same_indicators() -> None:
    """Indicators recomputed from the stored blob equal those computed at ingest."""
    stats = sdk_stats([torch.from_numpy(layer_output(100, 16, 3, 2, seed=5))])
    fresh = compute_indicators(ProbeKind.activation, as_arrays(stats))
    stored = compute_indicators(ProbeKind.activation, decode_stats(encode_stats(stats)))
    assert stored == pytest.approx(fresh, rel=1e-6)


def test_degenerate_inputs_give_nan_not_errors() -> None:
    empty = {
        "n": 0.0,
        "width": 4.0,
        "pos": np.zeros(4),
        "unit_sum": np.zeros(4),
        "eig": np.zeros(4),
    }
    got = compute_indicators(ProbeKind.activation, empty)
    assert math.isnan(got["dead_fraction"]) and math.isnan(got["simsiam_std"])
    assert got["effective_rank"] == 0.0
    diverged = {**empty, "n": 8.0, "eig": np.full(4, np.nan)}
    assert math.isnan(compute_indicators(ProbeKind.activation, diverged)["effective_rank"])


def test_single_unit_layers_get_no_direction_indicator() -> None:
    """A regression head with one output: its unit vectors are +-1, so "all outputs point the
    same way" is a sign pattern, not a collapse; no simsiam_std is computed for it."""
    x = np.abs(np.random.default_rng(6).normal(size=(64, 1))).astype(np.float32)
    got = compute_indicators(ProbeKind.activation, as_arrays(sdk_stats([torch.from_numpy(x)])))
    assert "simsiam_std" not in got
    assert got["dead_fraction"] == 0.0
