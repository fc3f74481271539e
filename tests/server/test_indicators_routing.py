"""Family 8 (MoE routing collapse) from the SDK's router statistics (the real RoutingAccumulator
on real logits) against numpy brute force on the raw logits, float64: several calls in a step,
top-1 and top-2, a capacity, several steps and two simulated data-parallel ranks added with
``windows.sum_stats``, and the dead-expert window.

Tolerances: choice counts, dead experts, entropy, CV and max/mean are exact up to float64
round-off (rel 1e-12); the auxiliary loss and the z-loss come from float32 softmax and
logsumexp sums on the device (rel 1e-5).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from collapsewatch.pipeline.packing import StepPack
from collapsewatch.probes.routing import RoutingAccumulator
from collapsewatch.schemas import ProbeKind
from collapsewatch_server.alerts.default_rules import default_rule
from collapsewatch_server.codec import as_arrays
from collapsewatch_server.indicators import CATALOGUE, compute_indicators
from collapsewatch_server.indicators.routing import DEAD_WINDOW
from collapsewatch_server.windows import sum_stats

ROUTING = ProbeKind.routing
E = 8
EXACT = 1e-12
FLOAT32 = 1e-5

Call = tuple[torch.Tensor, int | None]  # (logits, capacity)


def record(calls: list[Call], k: int) -> dict[str, Any]:
    """What the SDK sends for a router called on each of ``calls`` in one sampled step."""
    acc = RoutingAccumulator()
    with torch.no_grad():
        for logits, capacity in calls:
            acc.add(logits, k, capacity)
    pack = StepPack()
    acc.pack(pack.record("moe.router", "routing", 0), pack)
    (rec,) = pack.records()
    return as_arrays(rec["stats"])


def logits(seed: int, shape: tuple[int, ...], bias: list[float] | None = None) -> torch.Tensor:
    """Gaussian router logits, optionally with a per-expert bias (an unbalanced router)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, E, generator=g)
    return x + torch.tensor(bias) if bias is not None else x


def brute(calls: list[Call], k: int) -> dict[str, float]:
    """Every indicator from the raw logits of ``calls`` (any steps and ranks), numpy float64."""
    counts = np.zeros(E)
    prob_sum = np.zeros(E)
    z_sum = dropped = tokens = 0.0
    for t, capacity in calls:
        x = t.double().numpy().reshape(-1, E)
        top = np.argsort(-x, axis=1, kind="stable")[:, :k]
        call_counts = np.array([(top == e).sum() for e in range(E)], dtype=np.float64)
        counts += call_counts
        lse = np.log(np.exp(x - x.max(1, keepdims=True)).sum(1)) + x.max(1)
        prob_sum += np.exp(x - lse[:, None]).sum(0)
        z_sum += float((lse**2).sum())
        if capacity is not None:
            dropped += float(np.maximum(call_counts - capacity, 0).sum())
        tokens += x.shape[0]
    f = counts / counts.sum()
    nz = f[f > 0]
    out = {
        "moe_load_entropy": float(-(nz * np.log(nz)).sum() / math.log(E)),
        "moe_load_cv": float(np.std(counts) / np.mean(counts)),
        "moe_load_max_mean": float(counts.max() / counts.mean()),
        "moe_dead_experts": float(np.mean(counts == 0)),
        "moe_aux_loss": float(E * (f * prob_sum / tokens).sum()),
        "moe_z_loss": z_sum / tokens,
    }
    if all(c is not None for _, c in calls):
        out["moe_dropped_fraction"] = dropped / (k * tokens)
    return out


def check(got: dict[str, float], want: dict[str, float]) -> None:
    assert set(got) == set(want), (sorted(got), sorted(want))
    for name, value in want.items():
        tol = FLOAT32 if name in ("moe_aux_loss", "moe_z_loss") else EXACT
        assert got[name] == pytest.approx(value, rel=tol, abs=1e-12), name


# an unbalanced router: expert 0 favoured, expert 7 nearly never chosen
SKEW = [1.5, 0.5, 0.2, 0.0, 0.0, -0.3, -0.8, -4.0]


@pytest.mark.parametrize("k", [1, 2])
def test_one_step_of_several_calls_with_a_capacity(k: int) -> None:
    """Three calls (micro-batches), one with leading dims [batch, seq]: counts, probabilities,
    z-loss and dropped choices add up over the calls; the capacity holds per call."""
    calls: list[Call] = [
        (logits(1, (96,), SKEW), 20 * k),
        (logits(2, (4, 16), SKEW), 10 * k),
        (logits(3, (50,), SKEW), 8 * k),
    ]
    got = compute_indicators(ROUTING, record(calls, k))
    want = brute(calls, k)
    check(got, want)
    assert 0 < want["moe_dropped_fraction"] < 0.5 and 0.5 < want["moe_load_entropy"] < 0.99


def test_steps_and_ranks_merge_by_adding_records_and_dead_experts_need_the_window() -> None:
    """Five sampled steps on two ranks, top-2: each step's two rank records added (an
    all-reduce), the five steps summed as the ingest window sums them. Expert 7 gets one token
    in one batch of the ten: dead in the last step's record alone, alive over the window."""
    k = 2
    steps = [[logits(10 * s + r, (24,), SKEW) for r in range(2)] for s in range(DEAD_WINDOW)]
    steps[1][0][5, 7] = 10.0  # its only token
    records = [sum_stats([record([(x, None)], k) for x in ranks]) for ranks in steps]
    flat: list[Call] = [(x, None) for ranks in steps for x in ranks]
    assert CATALOGUE["moe_dead_experts"].window == DEAD_WINDOW

    got = compute_indicators(ROUTING, records[-1], window=lambda w: sum_stats(records[-w:]))
    # the per-step indicators read the last step (both ranks), dead experts the window
    want = brute([(x, None) for x in steps[-1]], k)
    want["moe_dead_experts"] = brute(flat, k)["moe_dead_experts"]
    check(got, want)
    assert got["moe_dead_experts"] == 0.0
    assert compute_indicators(ROUTING, records[-1])["moe_dead_experts"] == 1 / E, (
        "the last step alone must count expert 7 as dead, or the window proves nothing"
    )
    # every statistic is a sum: the whole window equals brute force on all ten batches
    check(compute_indicators(ROUTING, sum_stats(records)), brute(flat, k))


def test_collapsed_and_balanced_routers_read_the_ends_of_each_scale() -> None:
    g = torch.Generator().manual_seed(5)
    collapsed = torch.randn(512, E, generator=g) * 0.1
    collapsed[:, 3] += 20.0  # every token to expert 3, with certainty
    got = compute_indicators(ROUTING, record([(collapsed, 64)], 1))
    assert got["moe_load_entropy"] == 0.0
    assert got["moe_dead_experts"] == pytest.approx(7 / 8)
    assert got["moe_load_cv"] == pytest.approx(math.sqrt(E - 1))
    assert got["moe_load_max_mean"] == pytest.approx(E)
    assert got["moe_aux_loss"] == pytest.approx(E, rel=1e-6)
    assert got["moe_dropped_fraction"] == pytest.approx((512 - 64) / 512)
    assert got["moe_z_loss"] == pytest.approx(20.0**2, rel=0.01)

    # balanced: each expert the top choice of exactly 64 tokens, logits near 0
    balanced = torch.randn(512, E, generator=g) * 0.01
    balanced[torch.arange(512), torch.arange(512) % E] += 0.1
    got = compute_indicators(ROUTING, record([(balanced, None)], 1))
    assert got["moe_load_entropy"] == pytest.approx(1.0)
    assert got["moe_load_cv"] == pytest.approx(0.0, abs=1e-12)
    assert got["moe_aux_loss"] == pytest.approx(1.0, rel=1e-3)
    # logsumexp of seven logits at ~0 and one at ~0.1 (log E = 2.08 for all at 0)
    assert got["moe_z_loss"] == pytest.approx(math.log(E - 1 + math.exp(0.1)) ** 2, rel=1e-3)
    assert "moe_dropped_fraction" not in got, "no capacity, no dropped fraction"


def test_half_precision_logits_are_chosen_as_given_and_reduced_in_float32() -> None:
    """bfloat16 logits, distinct in each row so that the top 2 are unambiguous (a permutation
    of 0, 0.5, ..., 3.5; experts 6 and 7 are 4 lower, so dead): choices on the logits as the
    model has them, softmax and z-loss in float32."""
    g = torch.Generator().manual_seed(7)
    ranks = torch.stack([torch.randperm(E, generator=g) for _ in range(300)])
    half = (ranks * 0.5 - torch.tensor([0.0] * 6 + [4.0, 4.0])).to(torch.bfloat16)
    assert (half.float() * 2).round().eq(half.float() * 2).all(), "exact in bfloat16"
    got = compute_indicators(ROUTING, record([(half, None)], 2))
    check(got, brute([(half.float(), None)], 2))


def test_a_step_without_tokens_gives_no_point() -> None:
    assert compute_indicators(ROUTING, record([(torch.zeros(0, E), None)], 1)) == {}


def test_default_rules_alert_on_entropy_and_dead_experts_after_a_warm_up() -> None:
    rules = {name: default_rule(ind) for name, ind in CATALOGUE.items() if ind.family == "routing"}
    entropy, dead = rules.pop("moe_load_entropy"), rules.pop("moe_dead_experts")
    assert entropy is not None and dead is not None
    assert (entropy.condition, entropy.threshold, entropy.severity) == ("below", 0.5, "critical")
    assert (dead.condition, dead.threshold, dead.severity) == ("above", 0.0, "warning")
    assert (entropy.warmup_steps, dead.warmup_steps) == (200, 500)
    assert entropy.recovery == 0.7 and dead.recovery is None  # a half-collapse hovers at 0.5
    assert all(r is None for r in rules.values()), "the others are shown, not alerted"
    assert all(CATALOGUE[n].applies_to == ROUTING for n in [*rules, "moe_load_entropy"])
