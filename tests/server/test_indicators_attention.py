"""Family 5 from the SDK's attention statistics (the real AttentionAccumulator on real
nn.MultiheadAttention calls and on explicit probabilities -> StepPack -> as_arrays ->
compute_indicators) against numpy brute force on the probabilities nn.MultiheadAttention itself
returns (``need_weights=True, average_attn_weights=False``), with the visible keys taken from
the masks as the test builds them. Several forwards in a step, several steps and two simulated
ranks merge by adding records (``windows.sum_stats``).

Tolerances: rel 1e-5 for the entropies (float32 probabilities, sums of a few hundred float32
terms), rel 1e-5 for qk_sigma (a float32 eigendecomposition of d_head x d_head Grams against a
float64 SVD).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from collapsewatch.pipeline.packing import StepPack
from collapsewatch.probes.attention import AttentionAccumulator, qk_sigma
from collapsewatch.schemas import ProbeKind
from collapsewatch_server.alerts.default_rules import default_rules
from collapsewatch_server.codec import as_arrays
from collapsewatch_server.indicators import CATALOGUE, compute_indicators
from collapsewatch_server.windows import sum_stats

ATT = ProbeKind.attention
E, H = 32, 4
DH = E // H
NAMES = ("attention_entropy", "attention_low_heads", "attention_entropy_min")


def attention(seed: int = 0, sharp: tuple[int, ...] = (0, 1), **kwargs: object) -> nn.Module:
    """An MHA whose ``sharp`` heads have their query weights scaled up: they attend to about
    one key (normalised entropy < 0.1), the others stay broad, so every indicator is
    non-trivial."""
    torch.manual_seed(seed)
    mha = nn.MultiheadAttention(E, H, batch_first=True, **kwargs)  # type: ignore[arg-type]
    with torch.no_grad():
        assert mha.in_proj_weight is not None
        for h in sharp:
            mha.in_proj_weight[h * DH : (h + 1) * DH] *= 40.0
    return mha.train()


def causal_padded(seed: int, lengths: list[int], t: int) -> tuple[torch.Tensor, np.ndarray]:
    """Inputs of ``len(lengths)`` sequences and hidden[b, i, j]: key j hidden from query i
    (causal, or padding past the sequence's length)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), t, E, generator=g)
    i, j = np.arange(t)[:, None], np.arange(t)[None, :]
    hidden = np.stack([(j > i) | (j >= n) for n in lengths])
    return x, hidden


def call(mha: nn.Module, x: torch.Tensor, lengths: list[int]) -> tuple[tuple, dict]:
    """The arguments a TransformerEncoderLayer gives its self-attention (float masks)."""
    t = x.shape[1]
    causal = nn.Transformer.generate_square_subsequent_mask(t)
    pad = torch.zeros(len(lengths), t).masked_fill_(
        torch.arange(t)[None, :] >= torch.tensor(lengths)[:, None], -math.inf
    )
    return (x, x, x), {"attn_mask": causal, "key_padding_mask": pad, "need_weights": False}


def torch_probs(mha: nn.Module, args: tuple, kwargs: dict) -> np.ndarray:
    """[N, H, L, S] from nn.MultiheadAttention itself, float64."""
    kw = {**kwargs, "need_weights": True, "average_attn_weights": False}
    with torch.no_grad():
        _, w = mha(*args, **kw)
    return w.double().numpy()


def head_sums(probs: np.ndarray, hidden: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per head: sum over queries with 2+ visible keys of H_i / log n_i, and their count."""
    n = (~hidden).sum(-1)[:, None, :]  # [N, 1, L]
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.where(probs > 0, probs * np.log(probs), 0.0).sum(-1)  # [N, H, L]
        norm = ent / np.log(n)
    ok = np.broadcast_to(n >= 2, ent.shape)
    return np.where(ok, norm, 0.0).sum((0, 2)), ok.sum((0, 2)).astype(float)


def brute(parts: list[tuple[np.ndarray, np.ndarray]], sigma: np.ndarray) -> dict[str, float]:
    """The indicators from pooled (probs, hidden) pairs and the newest per-head sigma."""
    sums = sum(head_sums(p, h)[0] for p, h in parts)
    counts = sum(head_sums(p, h)[1] for p, h in parts)
    heads = sums / counts
    return {
        "attention_entropy": float(heads.mean()),
        "attention_low_heads": float(np.mean(heads < 0.1)),
        "attention_entropy_min": float(heads.min()),
        "attention_qk_sigma": float(sigma.max()),
    }


def brute_sigma(mha: nn.Module) -> np.ndarray:
    w = mha.in_proj_weight.detach().double().numpy()
    wq, wk = w[:E], w[E : 2 * E]
    return np.array(
        [
            np.linalg.norm(wq[h * DH : (h + 1) * DH].T @ wk[h * DH : (h + 1) * DH], 2)
            for h in range(H)
        ]
    )


def record(mha: nn.Module, calls: list[tuple[tuple, dict]]) -> dict[str, object]:
    """One sampled step as the observer files it: the hook's calls, then qk_sigma at flush."""
    acc = AttentionAccumulator()
    with torch.no_grad():
        for args, kwargs in calls:
            acc.add_mha(mha, args, kwargs)
        pack = StepPack()
        stats = pack.record("self_attn", "attention", 0)
        acc.pack(stats, pack)
        pack.put(stats, "qk_sigma", qk_sigma(mha))
    return as_arrays(pack.records()[0]["stats"])


def check(got: dict[str, float], want: dict[str, float]) -> None:
    for name, value in want.items():
        assert got[name] == pytest.approx(value, rel=1e-5, abs=1e-7), name


def test_one_step_of_three_forwards_with_causal_and_padding_masks() -> None:
    mha = attention()
    batches = [([20, 17, 9, 3], 20), ([12, 12], 12), ([30, 1, 25], 30)]  # a 1-token sequence
    calls, parts = [], []
    for seed, (lengths, t) in enumerate(batches):
        x, hidden = causal_padded(seed, lengths, t)
        args, kwargs = call(mha, x, lengths)
        calls.append((args, kwargs))
        parts.append((torch_probs(mha, args, kwargs), hidden))
    stats = record(mha, calls)
    assert stats["heads"] == H
    want = brute(parts, brute_sigma(mha))
    assert 0 < want["attention_low_heads"] < 1 and want["attention_entropy"] > 0.2
    check(compute_indicators(ATT, stats), want)


def test_steps_and_ranks_merge_by_adding_records_and_sigma_is_the_newest() -> None:
    """Steps 1 and 2 on rank 0, step 2 on rank 1 (summed as a window or an all-reduce would);
    the weights change between the steps, and the window keeps the newest qk_sigma."""
    mha = attention(sharp=(2,))
    records, parts = [], []
    for seed, lengths in enumerate([[16, 9, 16, 5], [16, 16], [7, 11, 16]]):
        if seed == 1:
            with torch.no_grad():
                mha.in_proj_weight[E : E + DH] *= 3.0  # head 0's keys: sharper, sigma x3
        x, hidden = causal_padded(10 + seed, lengths, 16)
        args, kwargs = call(mha, x, lengths)
        records.append(record(mha, [(args, kwargs)]))
        parts.append((torch_probs(mha, args, kwargs), hidden))
    got = compute_indicators(ATT, sum_stats(records))
    check(got, brute(parts, brute_sigma(mha)))


def test_sample_of_a_large_batch_is_four_strided_sequences_and_64_spread_queries() -> None:
    """10 sequences of 100 tokens: sequences 0, 2, 4, 6 and queries floor(i * 100 / 64)."""
    mha = attention()
    lengths = [100, 80, 60, 90, 100, 40, 70, 100, 100, 100]
    x, hidden = causal_padded(3, lengths, 100)
    args, kwargs = call(mha, x, lengths)
    seqs, queries = [0, 2, 4, 6], [i * 100 // 64 for i in range(64)]
    probs = torch_probs(mha, args, kwargs)[seqs][:, :, queries]
    want = brute([(probs, hidden[seqs][:, queries])], brute_sigma(mha))
    stats = record(mha, [(args, kwargs)])
    assert float(np.sum(stats["queries"])) == H * 4 * 63  # query 0 sees one key
    check(compute_indicators(ATT, stats), want)


def custom_attention(seed: int, lengths: list[int], t: int) -> tuple[torch.Tensor, np.ndarray]:
    """A hand-written causal attention's probabilities [N, H, t, t] with padding, some heads
    sharp, and which keys are hidden."""
    g = torch.Generator().manual_seed(seed)
    scores = (
        torch.randn(len(lengths), H, t, t, generator=g)
        * torch.tensor([12.0, 1, 0.3, 2])[:, None, None]
    )
    _, hidden = causal_padded(seed, lengths, t)
    scores = scores.masked_fill(torch.from_numpy(hidden)[:, None], -math.inf)
    return torch.softmax(scores, -1), hidden


def test_log_attention_probabilities_of_a_custom_attention() -> None:
    """Two calls in a step (3-D probabilities for one sequence too); fully masked query rows
    (NaN after the softmax: a padded query that sees only padding) are left out."""
    p1, h1 = custom_attention(1, [10, 7, 4], 10)
    p2, h2 = custom_attention(2, [10], 10)
    hidden3 = np.zeros((1, 10, 10), dtype=bool)
    hidden3[0, 5] = True  # query 5 sees nothing: its row is NaN
    p3 = torch.softmax(
        torch.randn(1, H, 10, 10).masked_fill(torch.from_numpy(hidden3)[:, None], -math.inf), -1
    )
    acc = AttentionAccumulator()
    with torch.no_grad():
        acc.add_probs(p1)
        acc.add_probs(p2[0])  # [H, L, S]
        acc.add_probs(p3)
    pack = StepPack()
    acc.pack(pack.record("custom", "attention", 0), pack)
    stats = as_arrays(pack.records()[0]["stats"])
    assert "qk_sigma" not in stats
    parts = [(p.double().numpy(), h) for p, h in ((p1, h1), (p2, h2), (p3, hidden3))]
    want = brute(parts, np.zeros(1))
    del want["attention_qk_sigma"]
    got = compute_indicators(ATT, stats)
    assert "attention_qk_sigma" not in got
    check(got, want)


def test_hand_computed_uniform_and_one_hot_attention() -> None:
    """Zero query weights: every query attends uniformly to what it may see, normalised
    entropy exactly 1; one-hot probabilities: 0, every head collapsed."""
    mha = attention(sharp=())
    with torch.no_grad():
        mha.in_proj_weight[:E] = 0.0
    x, _ = causal_padded(0, [6, 4], 6)
    stats = record(mha, [call(mha, x, [6, 4])])
    # queries with 2+ visible keys: 5 in the 6-token sequence, 5 in the padded one (queries
    # 1-5 see min(i + 1, 4) >= 2 keys)
    assert list(stats["queries"]) == [10.0] * H
    got = compute_indicators(ATT, stats)
    assert got["attention_entropy"] == pytest.approx(1.0, rel=1e-6)
    assert got["attention_low_heads"] == 0.0

    acc = AttentionAccumulator()
    acc.add_probs(torch.eye(8).expand(2, H, 8, 8))  # query i on key i only: one visible key
    one_hot = torch.zeros(2, H, 8, 8)
    one_hot[..., 0] = 1.0 - 1e-6  # a sharp head that still gives every key a little
    one_hot[..., 1:] = 1e-6 / 7
    acc.add_probs(one_hot)
    pack = StepPack()
    acc.pack(pack.record("x", "attention", 0), pack)
    stats = as_arrays(pack.records()[0]["stats"])
    assert list(stats["queries"]) == [16.0] * H  # the identity's queries see one key each
    got = compute_indicators(ATT, stats)
    assert got["attention_entropy"] == pytest.approx(0.0, abs=1e-4)
    assert got["attention_low_heads"] == 1.0


def test_an_underflowing_head_keeps_the_keys_the_other_heads_see() -> None:
    """log_attention: head 0 gives 6 of 8 keys exactly 0 (its probabilities underflowed),
    the other heads are uniform over the 8. Keys visible to some head count for all: head 0
    reads log 2 / log 8 = 1/3, not the 1.0 of its two keys alone."""
    probs = torch.full((2, H, 5, 8), 1 / 8)
    probs[:, 0] = 0.0
    probs[:, 0, :, :2] = 0.5
    acc = AttentionAccumulator()
    acc.add_probs(probs)
    pack = StepPack()
    acc.pack(pack.record("x", "attention", 0), pack)
    stats = as_arrays(pack.records()[0]["stats"])
    heads = np.asarray(stats["ent_sum"]) / np.asarray(stats["queries"])
    np.testing.assert_allclose(heads, [1 / 3, 1, 1, 1], rtol=1e-6)
    got = compute_indicators(ATT, stats)
    assert got["attention_entropy_min"] == pytest.approx(1 / 3, rel=1e-6)


def test_no_query_with_two_keys_gives_no_point_and_nonfinite_weights_give_nan() -> None:
    mha = attention()
    x, _ = causal_padded(0, [1, 1], 1)
    stats = record(mha, [call(mha, x, [1, 1])])
    got = compute_indicators(ATT, stats)
    assert set(got) == {"attention_qk_sigma"}  # entropies: nothing to say, no point

    with torch.no_grad():
        mha.in_proj_weight[E + 3, 0] = math.nan  # head 0's keys
    x, _ = causal_padded(0, [5, 4], 5)
    got = compute_indicators(ATT, record(mha, [call(mha, x, [5, 4])]))
    assert math.isnan(got["attention_qk_sigma"])
    assert math.isnan(got["attention_entropy"])  # a diverged layer is a signal, not silence


def test_catalogue_entries_and_default_rules() -> None:
    entropy, low, low_min, sigma = (CATALOGUE[n] for n in (*NAMES, "attention_qk_sigma"))
    assert {i.family for i in (entropy, low, low_min, sigma)} == {"attention"}
    assert {i.applies_to for i in (entropy, low, low_min, sigma)} == {ATT}
    assert (entropy.direction, entropy.critical) == ("low_is_bad", 0.2)
    assert (low.direction, low.critical) == ("high_is_bad", 0.5)
    assert low_min.direction == "info"
    assert sigma.direction == "high_is_bad" and sigma.warn is None and sigma.critical is None
    assert sigma.relative is not None and sigma.relative.condition == "rise"
    rules = {r.name: r for r in default_rules([entropy, low, low_min, sigma])}
    assert rules["default: attention_entropy"].threshold == 0.2
    assert rules["default: attention_low_heads"].threshold == 0.5
    relative = [r for r in rules.values() if r.condition in ("drop", "rise")]
    assert {(r.indicator, r.condition) for r in relative} == {
        ("attention_entropy", "drop"),
        ("attention_qk_sigma", "rise"),
    }
    assert not any(r.enabled for r in relative)
