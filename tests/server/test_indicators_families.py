"""Families 2, 3, 9, 10 and training health: each indicator from the real SDK accumulators on
real tensors equals numpy brute force on the raw tensors, within the stated tolerance.

"Merged" means what the SDK merges: several forwards within a step (two views, gradient
accumulation) and, for statistics that are sums, several steps or data-parallel ranks added
record by record. Spectra are not sums: they merge as matrices within a step only.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from collapsewatch.packing import StepPack
from collapsewatch.probes import COV_DIM, ActivationAccumulator, projection, spectra
from collapsewatch.schemas import ProbeKind
from collapsewatch_server.codec import as_arrays
from collapsewatch_server.indicators import compute_indicators

ACT = ProbeKind.activation


def activation_stats(chunks: list[torch.Tensor], raw: bool = True) -> dict[str, object]:
    """The record the SDK sends for a layer that produced ``chunks`` on one sampled step."""
    acc = ActivationAccumulator()
    with torch.no_grad():
        for rows in chunks:
            acc.add(rows)
        pack = StepPack()
        stats = pack.record("layer", "activation", 0)
        acc.pack(stats, pack, spectra([acc], raw)[0])
    (record,) = pack.records()
    return as_arrays(record["stats"])


def add_records(*records: dict[str, object]) -> dict[str, object]:
    """What a window or an all-reduce does: the sum of the records' statistics."""
    return {k: sum(np.asarray(r[k], dtype=np.float64) for r in records) for k in records[0]}


def embedding(rows: int, d: int, rank: int, seed: int, offset: float = 0.5) -> np.ndarray:
    """A rank-``rank`` signal plus isotropic noise, off-centre (so uncentred != centred)."""
    g = np.random.default_rng(seed)
    x = g.normal(size=(rows, rank)) @ g.normal(size=(rank, d)) / math.sqrt(rank)
    return (x + 0.3 * g.normal(size=(rows, d)) + offset).astype(np.float32)


def brute_dimensional(x: np.ndarray) -> dict[str, float]:
    """Families 2 and 3 on the full matrix, float64."""
    x = x.astype(np.float64)
    d = x.shape[1]
    lam = np.linalg.eigvalsh(np.cov(x, rowvar=False, bias=True))
    c = np.cov(x, rowvar=False)  # unbiased, as VICReg
    sigma = np.linalg.svd(x, compute_uv=False)
    p = sigma / sigma.sum() + 1e-7
    return {
        "participation_ratio": lam.sum() ** 2 / (lam @ lam),
        "rankme": math.exp(-(p * np.log(p)).sum()),
        "vicreg_variance": float(np.mean(np.maximum(0, 1 - np.sqrt(x.var(0, ddof=1) + 1e-4)))),
        "vicreg_covariance": float(((c**2).sum() - (np.diag(c) ** 2).sum()) / d),
    }


@pytest.mark.parametrize("forwards", [1, 3], ids=["one-forward", "three-forwards"])
def test_dimensional_and_variance_indicators_are_exact_up_to_256_units(forwards: int) -> None:
    """rel 1e-4: float32 accumulation and a float32 eigendecomposition, nothing else."""
    x = embedding(rows=900, d=64, rank=6, seed=1)
    got = compute_indicators(ACT, activation_stats(list(torch.from_numpy(x).chunk(forwards))))
    for name, want in brute_dimensional(x).items():
        assert got[name] == pytest.approx(want, rel=1e-4), name


def test_wide_layers_estimate_through_the_projection() -> None:
    """Past 256 units the spectrum is JL-projected: participation ratio and covariance term are
    debiased estimates (within 5% here); RankMe is that of the projected outputs Z P, exactly."""
    x = embedding(rows=3000, d=512, rank=10, seed=2)
    got = compute_indicators(ACT, activation_stats([torch.from_numpy(x)]))
    want = brute_dimensional(x)
    assert got["vicreg_variance"] == pytest.approx(want["vicreg_variance"], rel=1e-4)
    assert got["participation_ratio"] == pytest.approx(want["participation_ratio"], rel=0.05)
    assert got["vicreg_covariance"] == pytest.approx(want["vicreg_covariance"], rel=0.08)
    p = projection(512, torch.device("cpu"), torch.float32).double().numpy()
    assert p.shape == (512, COV_DIM)
    projected = brute_dimensional((x.astype(np.float64) @ p).astype(np.float32))
    assert got["rankme"] == pytest.approx(projected["rankme"], rel=1e-3)


def test_variance_hinge_merges_over_steps_and_ranks_by_adding_records() -> None:
    """Sums only: three steps on rank 0 plus one on rank 1, added, equal the union."""
    x = embedding(rows=800, d=32, rank=4, seed=3)
    parts = [x[:200], x[200:400], x[400:650], x[650:]]
    records = [activation_stats([torch.from_numpy(p)]) for p in parts]
    got = compute_indicators(ACT, add_records(*records))
    want = brute_dimensional(x)
    assert got["vicreg_variance"] == pytest.approx(want["vicreg_variance"], rel=1e-4)
    units = x.astype(np.float64) / np.linalg.norm(x, axis=1, keepdims=True)
    mean_unit = units.mean(0)
    assert got["simsiam_std"] == pytest.approx(math.sqrt(1 - mean_unit @ mean_unit), rel=1e-4)


def test_complete_collapse_reads_on_every_family_3_indicator() -> None:
    g = np.random.default_rng(4)
    x = (g.normal(size=32) + 1e-3 * g.normal(size=(500, 32))).astype(np.float32)
    got = compute_indicators(ACT, activation_stats([torch.from_numpy(x)]))
    assert got["simsiam_std"] < 0.01
    assert got["vicreg_variance"] > 0.98
    assert got["rankme"] < 1.1  # one direction carries everything
    assert got["participation_ratio"] > 20  # centred: the tiny noise looks isotropic


def test_rankme_needs_the_uncentred_spectrum_of_every_fourth_step() -> None:
    x = embedding(rows=100, d=16, rank=3, seed=5)
    got = compute_indicators(ACT, activation_stats([torch.from_numpy(x)], raw=False))
    assert "rankme" not in got and "participation_ratio" in got
