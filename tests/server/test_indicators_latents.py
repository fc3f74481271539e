"""Families 6 (codebook) and 7 (posterior) from the real SDK accumulators on real tensors,
against numpy brute force on the raw tensors: several calls in a step, a window of steps and
two simulated data-parallel ranks, merged as the server merges them
(``collapsewatch_server.windows.sum_stats``). Older records of a window go through the
server's float32 storage codec, as they do when the window is read back from the database.

Tolerances: code counts are integers, exact in float32 below 2^24, so the codebook indicators
are exact (rel 1e-12); the posterior terms are float32 on the device, summed in float64, and
float32 in storage: rel 1e-6 on the KL, and variances kept away from the 0.01 active-unit
threshold.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from collapsewatch.pipeline.packing import StepPack
from collapsewatch.probes.latents import MAX_CODES, CodeAccumulator, PosteriorAccumulator
from collapsewatch.schemas import ProbeKind
from collapsewatch_server.alerts.default_rules import default_rule
from collapsewatch_server.codec import Stats, as_arrays, decode_stats, encode_stats
from collapsewatch_server.indicators import CATALOGUE, compute_indicators
from collapsewatch_server.indicators.codebook import CODE_WINDOW
from collapsewatch_server.indicators.posterior import POSTERIOR_WINDOW
from collapsewatch_server.windows import sum_stats

CODES = ProbeKind.codes
POST = ProbeKind.posterior


def code_record(calls: list[torch.Tensor], k: int) -> Stats:
    """The record the SDK sends for ``log_codes`` called once per tensor in one step."""
    acc = CodeAccumulator()
    with torch.no_grad():
        for indices in calls:
            acc.add(indices, k)
    pack = StepPack()
    acc.pack(pack.record("quantizer", "codes", 0), pack)
    return as_arrays(pack.records()[0]["stats"])


def posterior_record(calls: list[tuple[torch.Tensor, torch.Tensor]]) -> Stats:
    acc = PosteriorAccumulator()
    with torch.no_grad():
        for mu, logvar in calls:
            acc.add(mu, logvar)
    pack = StepPack()
    acc.pack(pack.record("z", "posterior", 0), pack)
    return as_arrays(pack.records()[0]["stats"])


def stored(stats: Stats) -> Stats:
    """A record as the window reads it back from the database (float32 vectors)."""
    return decode_stats(encode_stats(stats))


def windowed(kind: ProbeKind, steps: list[Stats]) -> dict[str, float]:
    """Indicators of the newest of ``steps`` (oldest first), windows read as the server does."""
    older = [stored(s) for s in steps[:-1]]
    return compute_indicators(kind, steps[-1], lambda w: sum_stats([*older, steps[-1]][-w:]))


def ranks(*records: Stats) -> Stats:
    """Two data-parallel ranks' records of one step, added."""
    return sum_stats(list(records))


# ------------------------------------------------------------------------------ codebook


def brute_codes(indices: list[np.ndarray], k: int) -> dict[str, float]:
    flat = np.concatenate([i.ravel() for i in indices]).astype(np.int64)
    valid = flat[(flat >= 0) & (flat < k)]
    counts = np.bincount(valid, minlength=k).astype(np.float64)
    reach = min(k, valid.size)
    p = counts[counts > 0] / counts.sum()
    usage = np.count_nonzero(counts) / reach
    return {
        "codebook_usage": usage,
        "codebook_dead_fraction": 1 - usage,
        "codebook_perplexity_ratio": math.exp(-(p * np.log(p)).sum()) / reach,
    }


def skewed_indices(g: np.random.Generator, shape: tuple[int, ...], k: int) -> np.ndarray:
    """Zipf-like use of the first 3k/4 codes, some -1 padding and some indices >= k."""
    alive = 3 * k // 4
    p = 1.0 / np.arange(1, alive + 1)
    idx = g.choice(alive, size=shape, p=p / p.sum())
    noise = g.random(shape)
    idx[noise < 0.05] = -1
    idx[noise > 0.98] = k + 3
    return idx


def test_codebook_indicators_match_brute_force_over_calls_steps_and_ranks() -> None:
    k = 64
    g = np.random.default_rng(0)
    # 12 steps (more than the window), each with 2 calls of different shapes on each of 2 ranks
    raw = [
        [[skewed_indices(g, (4, 3), k), skewed_indices(g, (5,), k)] for _rank in range(2)]
        for _step in range(CODE_WINDOW + 2)
    ]
    steps = [
        ranks(*(code_record([torch.from_numpy(c) for c in calls], k) for calls in rank_calls))
        for rank_calls in raw
    ]
    got = windowed(CODES, steps)
    in_window = [c for rank_calls in raw[-CODE_WINDOW:] for calls in rank_calls for c in calls]
    want = brute_codes(in_window, k)
    assert set(want) <= set(got)
    for name, value in want.items():
        assert got[name] == pytest.approx(value, rel=1e-12), name
    # the window matters: all 12 steps would count more codes than the last 10
    everything = brute_codes([c for r in raw for calls in r for c in calls], k)
    assert everything["codebook_usage"] != pytest.approx(want["codebook_usage"])

    newest = steps[-1]
    newest_raw = np.concatenate([c.ravel() for calls in raw[-1] for c in calls])
    assert newest["n"] == np.sum((newest_raw >= 0) & (newest_raw < k))
    assert newest["out_of_range"] == np.sum((newest_raw < 0) | (newest_raw >= k))
    assert newest["codes"] == k


def test_a_window_with_fewer_indices_than_codes_is_judged_on_what_it_could_reach() -> None:
    """50 distinct codes of 1024 in a window of 50 indices: nothing is known to be dead."""
    record = code_record([torch.randperm(1024)[:50]], 1024)
    got = compute_indicators(CODES, record)
    assert got["codebook_usage"] == 1.0 and got["codebook_perplexity_ratio"] == pytest.approx(1.0)
    # a uniform codebook read on exactly K indices: the expected floor is 1 - 1/e
    g = torch.Generator().manual_seed(1)
    uniform = compute_indicators(
        CODES, code_record([torch.randint(0, 4096, (4096,), generator=g)], 4096)
    )
    assert uniform["codebook_usage"] == pytest.approx(1 - math.exp(-1), abs=0.02)


def test_a_collapsed_codebook_reads_low_and_a_window_without_codes_is_nan() -> None:
    few = torch.tensor([3, 3, 7, 3, 9] * 200)  # 3 codes of 256, 1000 indices
    got = compute_indicators(CODES, code_record([few], 256))
    assert got["codebook_usage"] == pytest.approx(3 / 256)
    assert got["codebook_dead_fraction"] == pytest.approx(253 / 256)
    assert got["codebook_perplexity_ratio"] < got["codebook_usage"]
    padding = compute_indicators(CODES, code_record([torch.full((10,), -1)], 256))
    assert all(math.isnan(v) for v in padding.values()), padding


def test_a_codebook_resized_between_steps_starts_a_new_window() -> None:
    old = code_record([torch.arange(64)], 64)
    new = code_record([torch.tensor([0, 1, 2, 3] * 8)], 128)
    got = windowed(CODES, [old, new])
    assert got["codebook_usage"] == pytest.approx(4 / 32)  # the 64-code record is left out


def test_codebook_defaults_make_one_alert_per_collapse() -> None:
    usage, dead, ratio = (
        CATALOGUE[n]
        for n in ("codebook_usage", "codebook_dead_fraction", "codebook_perplexity_ratio")
    )
    assert {i.family for i in (usage, dead, ratio)} == {"codebook"}
    assert (usage.warn, usage.critical, ratio.warn) == (0.5, 0.2, 0.25)
    assert default_rule(dead) is None
    usage_rule, ratio_rule = default_rule(usage), default_rule(ratio)
    assert usage_rule is not None and not usage_rule.enabled
    assert ratio_rule is not None and ratio_rule.enabled and ratio_rule.threshold == 0.25
    assert ratio_rule.warmup_steps == usage_rule.warmup_steps > 0
    # why usage's rule can stay off: perplexity never exceeds usage, so 0.25 fires first
    g = np.random.default_rng(5)
    for _ in range(20):
        k = int(g.integers(2, 300))
        idx = g.integers(0, int(g.integers(1, k + 1)), size=int(g.integers(1, 2000)))
        got = compute_indicators(CODES, code_record([torch.from_numpy(idx)], k))
        assert got["codebook_perplexity_ratio"] <= got["codebook_usage"] + 1e-12


def test_the_code_accumulator_refuses_bad_input_and_adds_nothing() -> None:
    acc = CodeAccumulator()
    acc.add(torch.tensor([1, 2]), 8)
    with pytest.raises(ValueError, match="num_codes changed within a step"):
        acc.add(torch.tensor([1]), 16)
    with pytest.raises(TypeError, match="integer tensor"):
        acc.add(torch.tensor([1.0]), 8)
    with pytest.raises(TypeError, match="integer tensor"):
        acc.add(torch.tensor([True]), 8)
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        acc.add([1, 2], 8)
    with pytest.raises(TypeError, match="num_codes must be an int"):
        acc.add(torch.tensor([1]), 8.0)
    with pytest.raises(ValueError, match="between 1 and"):
        acc.add(torch.tensor([1]), 0)
    with pytest.raises(ValueError, match="between 1 and"):
        acc.add(torch.tensor([1]), MAX_CODES + 1)
    pack = StepPack()
    acc.pack(pack.record("q", "codes", 0), pack)
    assert pack.records()[0]["stats"]["n"] == 2.0


# ----------------------------------------------------------------------------- posterior


def brute_posterior(calls: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    mu = np.concatenate([m.reshape(m.shape[0], -1) for m, _ in calls]).astype(np.float64)
    lv = np.concatenate([v.reshape(v.shape[0], -1) for _, v in calls]).astype(np.float64)
    kl = 0.5 * (mu**2 + np.exp(lv) - 1 - lv)  # [rows, dims]
    kl_dim = kl.mean(0)
    return {
        "posterior_kl": float(kl_dim.sum()),
        "posterior_active_units": float(np.mean(mu.var(0) > 0.01)),
        "posterior_collapsed_dims": float(np.mean(kl_dim < 0.01)),
    }


def posterior_batch(
    g: np.random.Generator, rows: int, shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Latents of ``shape``: a third active (mu varies, std 1), a third inactive but informative
    (mu fixed at 0.5, so KL > 0.01 while Var(mu) = 0), a third collapsed onto the prior."""
    dims = math.prod(shape)
    kind = np.arange(dims) % 3
    mu = np.where(kind == 0, g.normal(size=(rows, dims)), 0.0)
    mu = (
        mu
        + np.where(kind == 1, 0.5, 0.0)
        + np.where(kind == 2, 1e-3, 0.0) * g.normal(size=(rows, dims))
    )
    logvar = np.where(kind == 0, -2.0, 0.0) + 1e-3 * g.normal(size=(rows, dims))
    return (
        mu.reshape(rows, *shape).astype(np.float32),
        logvar.reshape(rows, *shape).astype(np.float32),
    )


@pytest.mark.parametrize("shape", [(6,), (3, 15)], ids=["6-dims", "45-dims-packed"])
def test_posterior_indicators_match_brute_force_over_calls_steps_and_ranks(
    shape: tuple[int, ...],
) -> None:
    """[batch, 3, 15] latents are flattened to 45 dims (sent packed, as float32)."""
    g = np.random.default_rng(1)
    raw = [
        [[posterior_batch(g, rows, shape) for rows in (40, 17)] for _rank in range(2)]
        for _step in range(POSTERIOR_WINDOW + 2)
    ]
    steps = [
        ranks(
            *(
                posterior_record([(torch.from_numpy(m), torch.from_numpy(v)) for m, v in calls])
                for calls in rank_calls
            )
        )
        for rank_calls in raw
    ]
    got = windowed(POST, steps)
    want = brute_posterior(
        [c for rank_calls in raw[-POSTERIOR_WINDOW:] for calls in rank_calls for c in calls]
    )
    assert got["posterior_kl"] == pytest.approx(want["posterior_kl"], rel=1e-6)
    assert got["posterior_active_units"] == want["posterior_active_units"] == pytest.approx(1 / 3)
    assert (
        got["posterior_collapsed_dims"] == want["posterior_collapsed_dims"] == pytest.approx(1 / 3)
    )
    assert steps[-1]["n"] == 2 * (40 + 17) and steps[-1]["dims"] == math.prod(shape)


def test_posterior_kl_is_accurate_near_the_prior() -> None:
    """A posterior a hair from N(0, 1): exp(lv) - 1 - lv would cancel in float32 (8e-4
    relative error here); expm1 does not (brute force in float64 on the same float32 inputs)."""
    g = np.random.default_rng(2)
    mu = (1e-3 * g.normal(size=(256, 8))).astype(np.float32)
    lv = (1e-3 * g.normal(size=(256, 8))).astype(np.float32)
    got = compute_indicators(POST, posterior_record([(torch.from_numpy(mu), torch.from_numpy(lv))]))
    assert got["posterior_kl"] == pytest.approx(
        brute_posterior([(mu, lv)])["posterior_kl"], rel=1e-6
    )
    assert got["posterior_collapsed_dims"] == 1.0 and got["posterior_active_units"] == 0.0


def test_a_diverged_posterior_reads_nan() -> None:
    mu = torch.zeros(4, 3)
    mu[1, 2] = math.nan
    got = compute_indicators(POST, posterior_record([(mu, torch.zeros(4, 3))]))
    assert all(math.isnan(v) for v in got.values()), got


def test_the_posterior_accumulator_refuses_bad_input_and_adds_nothing() -> None:
    acc = PosteriorAccumulator()
    acc.add(torch.zeros(3, 4), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="same shape"):
        acc.add(torch.zeros(3, 4), torch.zeros(3, 5))
    with pytest.raises(ValueError, match="changed within a step"):
        acc.add(torch.zeros(3, 5), torch.zeros(3, 5))
    with pytest.raises(ValueError, match=r"\[batch, latent"):
        acc.add(torch.zeros(4), torch.zeros(4))
    with pytest.raises(TypeError, match="floating-point"):
        acc.add(torch.zeros(3, 4, dtype=torch.long), torch.zeros(3, 4))
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        acc.add(np.zeros((3, 4)), torch.zeros(3, 4))
    pack = StepPack()
    acc.pack(pack.record("z", "posterior", 0), pack)
    assert pack.records()[0]["stats"]["n"] == 3.0


def test_posterior_defaults_warm_up_and_leave_collapsed_dims_without_a_rule() -> None:
    kl, au, collapsed = (
        CATALOGUE[n] for n in ("posterior_kl", "posterior_active_units", "posterior_collapsed_dims")
    )
    assert {i.family for i in (kl, au, collapsed)} == {"posterior"}
    kl_rule, au_rule = default_rule(kl), default_rule(au)
    assert kl_rule is not None and kl_rule.threshold == 0.5 and kl_rule.severity == "critical"
    assert au_rule is not None and au_rule.threshold == 0.5 and au_rule.severity == "warning"
    assert kl_rule.warmup_steps == au_rule.warmup_steps > 0
    assert default_rule(collapsed) is None
