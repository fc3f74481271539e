"""Families 12 (generative mode collapse) and 13 (state collapse) from the SDK's real
SampleAccumulator and StateAccumulator on real tensors, against numpy brute force on the raw
tensors: several calls in a step, several steps and two simulated ranks merged as the ingest
window merges them (``windows.sum_stats``).

Tolerances: pairwise distances are exact for up to 512 samples a call (rel 1e-5: float32
distances summed on the device); the effective ranks are exact up to 256 dimensions (rel 1e-4:
float32 covariance and eigendecomposition); state norms rel 1e-5, maxima exact.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from collapsewatch.pipeline.packing import StepPack
from collapsewatch.probes.activations import COV_DIM, projection
from collapsewatch.probes.samples import PAIR_SAMPLES, SampleAccumulator
from collapsewatch.probes.states import BUCKETS, StateAccumulator
from collapsewatch.probes.states import bucket_of as sdk_bucket_of
from collapsewatch.schemas import ProbeKind
from collapsewatch_server.codec import as_arrays
from collapsewatch_server.indicators import compute_indicators
from collapsewatch_server.indicators.state import bucket_of
from collapsewatch_server.windows import sum_stats

SMP, STATE = ProbeKind.samples, ProbeKind.state

# ------------------------------------------------------------------------------ family 12

Call = tuple[torch.Tensor, torch.Tensor | None]


def sample_record(calls: list[Call], memory: dict[str, Any]) -> dict[str, Any]:
    """The record the SDK sends for one step's ``log_samples`` calls."""
    acc = SampleAccumulator(memory)
    with torch.no_grad():
        for samples, reference in calls:
            acc.add(samples, reference)
        pack = StepPack()
        acc.pack(pack.record("generator", "samples", 0), pack)
    (record,) = pack.records()
    return as_arrays(record["stats"])


def pair_sum(x: torch.Tensor) -> tuple[float, int]:
    """Brute force: every pair of rows of one call, in float64."""
    a = x.reshape(x.shape[0], -1).double().numpy()
    a = a - a.mean(0)  # distances do not change; the float64 Gram below loses less
    sq = (a * a).sum(1)
    dist = np.sqrt(np.clip(sq[:, None] + sq[None, :] - 2 * a @ a.T, 0.0, None))
    i, j = np.triu_indices(a.shape[0], k=1)
    return float(dist[i, j].sum()), i.size


def brute_ratio(generated: list[torch.Tensor], real: list[torch.Tensor]) -> float:
    """Pooled mean pairwise distance (pairs within each call) of generated over real."""
    g = [pair_sum(x) for x in generated]
    r = [pair_sum(x) for x in real]
    mean_generated = sum(s for s, _ in g) / sum(n for _, n in g)
    return mean_generated / (sum(s for s, _ in r) / sum(n for _, n in r))


def brute_erank(rows: list[torch.Tensor], project: bool = False) -> float:
    """Effective rank of the population covariance of all rows (one step's calls pooled)."""
    x = torch.cat([r.reshape(r.shape[0], -1) for r in rows]).double()
    if project:
        x = x @ projection(x.shape[1], x.device, torch.float32).double()
    lam = np.clip(np.linalg.eigvalsh(np.cov(x.numpy().T, bias=True)), 0.0, None)
    p = lam[lam > 0] / lam.sum()
    return math.exp(-(p * np.log(p)).sum())


def generator(seed: int, out: int = 6) -> nn.Module:
    """A real (untrained) generator: z in 3-D to ``out`` dims, narrower than the data."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 32), nn.Tanh(), nn.Linear(32, out))


def real_samples(n: int, seed: int, shape: tuple[int, ...] = (2, 3)) -> torch.Tensor:
    """'Real' data: an anisotropic Gaussian, off-centre, shaped like images ``[n, *shape]``."""
    g = torch.Generator().manual_seed(seed)
    d = math.prod(shape)
    scale = torch.linspace(0.5, 2.0, d)
    return (torch.randn(n, d, generator=g) * scale + 3.0).reshape(n, *shape)


def fake_samples(model: nn.Module, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return model(torch.randn(n, 3, generator=g)).reshape(n, 2, 3)


def test_samples_of_several_calls_in_a_step_match_brute_force() -> None:
    """Three calls (two with real samples, one without) in one record: distances pair within
    calls, the covariance pools all rows."""
    model = generator(0)
    fakes = [fake_samples(model, n, seed) for n, seed in ((300, 1), (41, 2), (512, 3))]
    reals = [real_samples(200, 4), real_samples(90, 5)]
    calls: list[Call] = [(fakes[0], reals[0]), (fakes[1], None), (fakes[2], reals[1])]
    got = compute_indicators(SMP, sample_record(calls, {}))
    assert got["samples_diversity_ratio"] == pytest.approx(brute_ratio(fakes, reals), rel=1e-5)
    assert got["samples_effective_rank"] == pytest.approx(brute_erank(fakes), rel=1e-4)
    assert got["samples_rank_ratio"] == pytest.approx(
        brute_erank(fakes) / brute_erank(reals), rel=1e-4
    )
    assert 0.0 < got["samples_diversity_ratio"] < 1.0  # an untrained generator is narrower


def test_more_than_512_samples_use_512_evenly_spaced_ones() -> None:
    """Exact on the 512 rows the SDK keeps; within 3% of all pairs of 3000 samples."""
    model = generator(1)
    fake, real = fake_samples(model, 3000, 6), real_samples(1500, 7)
    got = compute_indicators(SMP, sample_record([(fake, real)], {}))
    kept_fake = fake[torch.arange(PAIR_SAMPLES) * 3000 // PAIR_SAMPLES]
    kept_real = real[torch.arange(PAIR_SAMPLES) * 1500 // PAIR_SAMPLES]
    want = brute_ratio([kept_fake], [kept_real])
    assert got["samples_diversity_ratio"] == pytest.approx(want, rel=1e-5)
    assert got["samples_diversity_ratio"] == pytest.approx(brute_ratio([fake], [real]), rel=0.03)


def test_sample_records_of_steps_and_ranks_merge_by_adding_sums_and_pairs() -> None:
    """Rank 0: step 1 with real samples, step 2 without (its record repeats the remembered
    reference); rank 1: step 1 with its own. The window (or an all-reduce) adds the records;
    spectra are not sums: the merged record keeps the newest one's."""
    model = generator(2)
    f = [fake_samples(model, n, 10 + i) for i, n in enumerate((256, 128, 64, 400))]
    r = [real_samples(n, 20 + i) for i, n in enumerate((300, 200))]
    rank0: dict[str, Any] = {}
    step1 = sample_record([(f[0], r[0]), (f[1], None)], rank0)
    step2 = sample_record([(f[2], None)], rank0)
    other = sample_record([(f[3], r[1])], {})
    merged = compute_indicators(SMP, sum_stats([step1, other, step2]))
    # the remembered reference counts once for each record that carries it
    assert merged["samples_diversity_ratio"] == pytest.approx(
        brute_ratio(f, [r[0], r[1], r[0]]), rel=1e-5
    )
    alone = compute_indicators(SMP, step2)
    assert alone["samples_diversity_ratio"] == pytest.approx(brute_ratio([f[2]], [r[0]]), rel=1e-5)
    assert merged["samples_effective_rank"] == pytest.approx(brute_erank([f[2]]), rel=1e-4)
    assert merged["samples_rank_ratio"] == pytest.approx(
        brute_erank([f[2]]) / brute_erank([r[0]]), rel=1e-4
    )


def test_wide_samples_are_ranked_through_the_projection() -> None:
    """Past 256 values a sample's covariance is JL-projected: exactly the brute force on the
    projected samples; distances are never projected."""
    g = torch.Generator().manual_seed(30)
    low = torch.randn(600, 12, generator=g) @ torch.randn(12, 400, generator=g)
    fake = (low + 0.05 * torch.randn(600, 400, generator=g)).reshape(600, 4, 10, 10)
    real = torch.randn(300, 4, 10, 10, generator=g)
    stats = sample_record([(fake, real)], {})
    assert len(stats["eig"]) == COV_DIM and len(stats["ref_eig"]) == COV_DIM
    got = compute_indicators(SMP, stats)
    assert got["samples_effective_rank"] == pytest.approx(brute_erank([fake], True), rel=1e-3)
    kept = fake[torch.arange(PAIR_SAMPLES) * 600 // PAIR_SAMPLES]
    assert got["samples_diversity_ratio"] == pytest.approx(brute_ratio([kept], [real]), rel=1e-5)
    assert got["samples_rank_ratio"] < 0.2  # ~12 directions against the real data's ~256


def test_a_collapsed_generator_reads_zero_and_a_diverged_one_nan() -> None:
    real = real_samples(100, 40)
    same = torch.full((64, 2, 3), 0.7)
    got = compute_indicators(SMP, sample_record([(same, real)], {}))
    assert got["samples_diversity_ratio"] == 0.0
    assert got["samples_effective_rank"] == 0.0
    broken = same.clone()
    broken[3, 1, 2] = math.nan
    got = compute_indicators(SMP, sample_record([(broken, real)], {}))
    assert math.isnan(got["samples_diversity_ratio"])
    assert math.isnan(got["samples_effective_rank"])


def test_without_any_reference_there_is_no_ratio() -> None:
    model = generator(3)
    got = compute_indicators(SMP, sample_record([(fake_samples(model, 50, 41), None)], {}))
    assert "samples_diversity_ratio" not in got and "samples_rank_ratio" not in got
    assert got["samples_effective_rank"] > 0
    single = compute_indicators(SMP, sample_record([(fake_samples(model, 1, 42), None)], {}))
    assert "samples_diversity_ratio" not in single  # one sample has no pairs


# ------------------------------------------------------------------------------ family 13

POSITIONS = [0, 1, 3, 7, 11, 15, 16, 63, 64, 255, 700, 1023]


def rnn_states(seed: int, batch: int, length: int = 1024) -> torch.Tensor:
    """States of a real GRU on random inputs, ``[batch, length, 16]``."""
    torch.manual_seed(seed)
    gru = nn.GRU(4, 16, batch_first=True)
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        h, _ = gru(3.0 * torch.randn(batch, length, 4, generator=g))
    return h


def state_record(calls: list[tuple[torch.Tensor, Any, int | None]]) -> dict[str, Any]:
    acc = StateAccumulator()
    with torch.no_grad():
        for hidden, positions, train_length in calls:
            acc.add(hidden, positions, train_length)
        pack = StepPack()
        acc.pack(pack.record("rnn", "state", 0), pack)
    (record,) = pack.records()
    return as_arrays(record["stats"])


def brute_state(states: list[tuple[np.ndarray, int]], train_length: int | None) -> dict[str, float]:
    """``states``: (state vector, position) pairs. The ratios of the highest bucket to the
    reference bucket (that of train_length - 1, else the lowest), straight from the vectors."""
    by_bucket: dict[int, list[np.ndarray]] = {}
    for h, t in states:
        by_bucket.setdefault(math.floor(math.log2(t)) if t > 0 else 0, []).append(h)
    filled = sorted(by_bucket)
    ref = filled[0]
    if train_length is not None:
        below = [b for b in filled if b <= math.floor(math.log2(max(train_length - 1, 1)))]
        ref = below[-1] if below else ref
    top = filled[-1]

    def mean_norm(b: int) -> float:
        return float(np.mean([np.linalg.norm(h) for h in by_bucket[b]]))

    def peak(b: int) -> float:
        return float(max(np.abs(h).max() for h in by_bucket[b]))

    return {
        "state_norm_ratio": mean_norm(top) / mean_norm(ref),
        "state_max_ratio": peak(top) / peak(ref),
    }


def at(h: torch.Tensor, positions: list[int]) -> torch.Tensor:
    return h[:, positions]


def flatten(h: torch.Tensor, positions: list[int]) -> list[tuple[np.ndarray, int]]:
    """(state, position) pairs of a ``[batch, P, dim]`` (or ``[P, dim]``) tensor."""
    h3 = h if h.dim() == 3 else h[None]
    a = h3.double().numpy()
    return [(a[b, i], t) for b in range(a.shape[0]) for i, t in enumerate(positions)]


@pytest.mark.parametrize("train_length", [16, 12, None], ids=["T16", "T12", "no-train-length"])
def test_states_of_several_calls_in_a_step_match_brute_force(train_length: int | None) -> None:
    """A batched call with a list, an unbatched one with a tensor, overlapping positions."""
    h = rnn_states(0, batch=3)
    first, second = POSITIONS, [2, 15, 40, 1023, 513]
    calls = [
        (at(h, first), first, train_length),
        (h[0, second], torch.tensor(second), train_length),
    ]
    got = compute_indicators(STATE, state_record(calls))
    want = brute_state(flatten(at(h, first), first) + flatten(h[0, second], second), train_length)
    assert got["state_norm_ratio"] == pytest.approx(want["state_norm_ratio"], rel=1e-5)
    assert got["state_max_ratio"] == pytest.approx(want["state_max_ratio"], rel=1e-6)


def test_state_records_of_steps_and_ranks_merge_counts_sums_and_maxima() -> None:
    h0, h1, h2 = rnn_states(1, 2), rnn_states(2, 4), rnn_states(3, 1)
    p1, p2 = POSITIONS, [5, 9, 15, 300, 1000]
    records = [
        state_record([(at(h0, p1), p1, 16)]),  # rank 0, step 1
        state_record([(at(h1, p2), p2, 16)]),  # rank 1, step 1
        state_record([(at(h2, p1), p1, 16), (at(h2, p2), p2, None)]),  # rank 0, step 2
    ]
    got = compute_indicators(STATE, sum_stats(records))
    states = flatten(at(h0, p1), p1) + flatten(at(h1, p2), p2)
    states += flatten(at(h2, p1), p1) + flatten(at(h2, p2), p2)
    want = brute_state(states, 16)
    assert got["state_norm_ratio"] == pytest.approx(want["state_norm_ratio"], rel=1e-5)
    assert got["state_max_ratio"] == pytest.approx(want["state_max_ratio"], rel=1e-6)


def test_the_reference_bucket_falls_back_and_nothing_above_it_gives_no_point() -> None:
    h = rnn_states(4, 2)
    # nothing logged in bucket 6 (64..127, where position 127 is): the highest bucket below
    positions = [3, 20, 40, 800]
    got = compute_indicators(STATE, state_record([(at(h, positions), positions, 128)]))
    want = brute_state(flatten(at(h, positions), [*positions[:3], 800]), None)
    norms = [float(at(h, [t]).norm(dim=-1).mean()) for t in positions]
    assert got["state_norm_ratio"] == pytest.approx(norms[3] / norms[2], rel=1e-5)
    assert want["state_norm_ratio"] == pytest.approx(norms[3] / norms[0], rel=1e-5)
    # only positions below the training length: nothing to compare
    short = [0, 1, 5, 9]
    got = compute_indicators(STATE, state_record([(at(h, short), short, 16)]))
    assert "state_norm_ratio" not in got and "state_max_ratio" not in got


def test_diverged_states_read_nan() -> None:
    h = rnn_states(5, 2)[:, POSITIONS].clone()
    h[1, -1, 3] = math.inf
    got = compute_indicators(STATE, state_record([(h, POSITIONS, 16)]))
    assert math.isinf(got["state_max_ratio"]) or math.isnan(got["state_max_ratio"])
    assert not math.isfinite(got["state_norm_ratio"])


def test_buckets_agree_between_sdk_server_lists_and_tensors() -> None:
    rng = np.random.default_rng(6)
    positions = sorted({0, 1, 2, 3, 4, 2**31, 2**32 - 1, *rng.integers(0, 2**32, 200).tolist()})
    for t in positions:
        want = math.floor(math.log2(t)) if t else 0
        assert sdk_bucket_of(t) == bucket_of(t) == want < BUCKETS
    states = torch.ones(len(positions), 2)
    from_list = state_record([(states, positions, None)])
    from_tensor = state_record([(states, torch.tensor(positions), None)])
    assert np.array_equal(from_list["count"], from_tensor["count"])
    assert from_list["count"].sum() == len(positions)
