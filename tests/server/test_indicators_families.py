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

from collapsewatch.pipeline.packing import StepPack
from collapsewatch.probes.activations import COV_DIM, ActivationAccumulator, projection
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
        acc.pack(stats, pack, raw)
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


# ----------------------------------------------------------------------- family 10, health


def parameter_records(model: torch.nn.Module) -> dict[str, dict[str, object]]:
    """The parameter records of one sampled step, through the SDK's ParameterNorms."""
    from collapsewatch.probes.discovery import trainable_parameters
    from collapsewatch.probes.parameters import ParameterProbe

    params, modules = trainable_parameters(model)
    pack = StepPack()
    with torch.no_grad():
        ParameterProbe(params, model, None, modules, step=lambda: 0).flush(pack, step=0)
    return {r["probe"]: as_arrays(r["stats"]) for r in pack.records()}


def brute_pq(w: np.ndarray) -> float:
    """PQ index over the unmasked (non-zero) weights, p = 0.5, q = 1."""
    v = np.abs(w[w != 0]).astype(np.float64)
    d = v.size
    return 1 - d ** (1 / 1 - 1 / 0.5) * (np.sum(v**0.5) ** 2) / np.sum(v)


def test_pq_index_and_density_per_layer_and_global_match_brute_force() -> None:
    from torch.nn.utils import prune

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 32))
    prune.l1_unstructured(model[0], "weight", amount=0.995)  # layer collapse
    prune.random_unstructured(model[2], "weight", amount=0.5)
    got = {
        p: compute_indicators(ProbeKind.parameter, s) for p, s in parameter_records(model).items()
    }
    ws = {"0.weight_orig": model[0].weight, "2.weight_orig": model[2].weight}
    for probe, w in ws.items():
        w = w.detach().numpy()
        assert got[probe]["density"] == pytest.approx(np.mean(w != 0), rel=1e-9)
        # abs 1e-6: square roots in float32 (summed in float64); I is 1 minus a ratio near 1
        assert got[probe]["pq_index"] == pytest.approx(brute_pq(w), abs=1e-6)
    assert got["0.weight_orig"]["density"] < 0.01 < got["2.weight_orig"]["density"]
    assert "density" not in got["0.bias"], "1-D parameters are not prunable layers"
    flat = np.concatenate([w.detach().numpy().ravel() for w in ws.values()])
    assert got["(global)"]["density"] == pytest.approx(np.mean(flat != 0), rel=1e-9)
    assert got["(global)"]["pq_index"] == pytest.approx(brute_pq(flat), abs=1e-6)


def test_dense_gaussian_weights_read_about_0_15() -> None:
    torch.manual_seed(1)
    layer = torch.nn.Linear(512, 512)
    torch.nn.init.normal_(layer.weight)
    got = compute_indicators(ProbeKind.parameter, parameter_records(layer)["weight"])
    # 1 - (E|w|^0.5)^2 / E|w| = 1 - sqrt(2) Gamma(3/4)^2 / pi / sqrt(2/pi) for N(0, 1)
    expected = 1 - (2**0.25 * math.gamma(0.75) / math.sqrt(math.pi)) ** 2 / math.sqrt(2 / math.pi)
    assert expected == pytest.approx(0.1528, abs=1e-4)
    assert got["pq_index"] == pytest.approx(expected, abs=0.005)


def test_nan_and_inf_in_weights_grads_and_activations_are_counted() -> None:
    torch.manual_seed(2)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Linear(16, 4))
    model(torch.randn(5, 8)).sum().backward()
    with torch.no_grad():
        model[0].weight[0, :3] = math.nan
        model[0].weight[1, 0] = math.inf
        model[1].weight.grad[2, 2] = -math.inf
    got = {
        p: compute_indicators(ProbeKind.parameter, s) for p, s in parameter_records(model).items()
    }
    assert got["0.weight"]["nonfinite_weights"] == 4 and got["0.weight"]["nonfinite_grads"] == 0
    assert got["1.weight"]["nonfinite_grads"] == 1 and got["1.weight"]["nonfinite_weights"] == 0
    assert got["(global)"]["nonfinite_weights"] == 4 and got["(global)"]["nonfinite_grads"] == 1

    x = np.random.default_rng(3).normal(size=(50, 12)).astype(np.float32)
    x[4, 3], x[7, 3], x[9, 5] = np.nan, np.inf, -np.inf
    act = compute_indicators(ACT, activation_stats([torch.from_numpy(x)], raw=False))
    assert act["nonfinite_units"] == 2  # units 3 and 5


def test_effective_rank_ratio_is_judged_against_the_input_dimension() -> None:
    """A 16 -> 64 layer has rank 16 at most: its ratio divides by 16, not by 64."""
    from collapsewatch.probes.discovery import input_dim

    torch.manual_seed(6)
    layer = torch.nn.Linear(16, 64)
    out = layer(torch.randn(800, 16)).detach()
    acc = ActivationAccumulator()
    with torch.no_grad():
        acc.add(out)
        pack = StepPack()
        stats = pack.record("layer", "activation", 0)
        acc.pack(stats, pack, False, input_dim(layer))
    got = compute_indicators(ACT, as_arrays(pack.records()[0]["stats"]))
    lam = np.clip(np.linalg.eigvalsh(np.cov(out.numpy().astype(np.float64).T, bias=True)), 0, None)
    p = lam[lam > 1e-12 * lam.max()] / lam.sum()
    assert got["effective_rank_ratio"] == pytest.approx(
        math.exp(-(p * np.log(p)).sum()) / 16, rel=1e-3
    )
    assert input_dim(torch.nn.Conv2d(3, 8, (3, 5), groups=1)) == 45
    assert input_dim(torch.nn.Conv1d(8, 8, 3, groups=8)) == 24  # all channels, not per group


def test_windowed_dead_fraction_over_steps_and_ranks_matches_brute_force() -> None:
    """Five sampled steps of a real layer on two ranks, summed as the ingest window sums them:
    a unit is dead when it was positive on none of the 5 x 2 batches. One batch over-counts."""
    from collapsewatch.schemas import ActivationStat
    from collapsewatch_server.indicators import CATALOGUE
    from collapsewatch_server.windows import sum_stats

    torch.manual_seed(8)
    layer = torch.nn.Linear(16, 64)
    with torch.no_grad():
        layer.bias -= torch.linspace(0.0, 6.0, 64)  # units from always to almost never firing
    g = torch.Generator().manual_seed(9)
    batches = [[torch.randn(32, 16, generator=g) for _rank in range(2)] for _step in range(5)]
    records = []
    for per_rank in batches:
        ranks = [activation_stats([layer(x).detach()], raw=False) for x in per_rank]
        records.append(add_records(*ranks) | {ActivationStat.width: 64.0})  # all-reduce
    assert CATALOGUE["dead_fraction"].window == len(records)
    got = compute_indicators(ACT, sum_stats(records))["dead_fraction"]
    outputs = torch.cat([layer(x) for per_rank in batches for x in per_rank]).detach().numpy()
    assert got == pytest.approx(float(np.mean((outputs > 0).sum(0) == 0)))
    one_batch = compute_indicators(ACT, records[-1])["dead_fraction"]
    assert one_batch > got, "a single batch over-counts dead units"
