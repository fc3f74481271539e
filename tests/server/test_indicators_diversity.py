"""Family 11 from the SDK's statistics (the real TextAccumulator and EvalAccumulator on real
tensors) against brute force on the raw token ids: exact Python sets and counts.

Tolerances: distinct-1, unigram entropy, seq-rep-4 and perplexity are exact up to the wire
(rel 1e-8: scalars travel with 9 significant digits, unigram counts as float32, exact below
2**24). distinct-2 and distinct-3 come from
HyperLogLog sketches of 4096 registers: standard error 1.04 / sqrt(4096) = 1.6%, so within 5%
(three standard errors) for cardinalities from a hundred to a hundred thousand; the inputs here
are seeded, so the tests are deterministic.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
import pytest
import torch
from torch import nn

from collapsewatch.pipeline.packing import StepPack
from collapsewatch.probes.text import EvalAccumulator, TextAccumulator
from collapsewatch.schemas import ProbeKind
from collapsewatch_server.alerts.default_rules import default_relative_rule
from collapsewatch_server.codec import as_arrays, decode_stats, encode_stats
from collapsewatch_server.indicators import CATALOGUE, compute_indicators
from collapsewatch_server.indicators.diversity import hll_estimate
from collapsewatch_server.windows import sum_stats

TEXT = ProbeKind.text
HLL_TOLERANCE = 0.05
EXACT = 1e-8
Rows = list[list[int]]


def markov(seed: int, samples: int, length: int, vocab: int = 300, fanout: int = 6) -> Rows:
    """Sequences of a random sparse Markov chain (each token has ``fanout`` successors), so
    n-grams repeat and distinct-n sits well inside (0, 1)."""
    g = torch.Generator().manual_seed(seed)
    succ = torch.randint(0, vocab, (vocab, fanout), generator=g)
    x = torch.empty(samples, length, dtype=torch.int64)
    x[:, 0] = torch.randint(0, vocab, (samples,), generator=g)
    for t in range(1, length):
        pick = torch.randint(0, fanout, (samples,), generator=g)
        x[:, t] = succ[x[:, t - 1], pick]
    return x.tolist()


def record(calls: Sequence[tuple[object, int | None]]) -> dict[str, object]:
    """One step's record: ``add`` per call on one accumulator, packed as the monitor sends it,
    and decoded as the server stores it."""
    acc = TextAccumulator()
    with torch.no_grad():
        for ids, generation in calls:
            acc.add(ids, generation)
    pack = StepPack()
    acc.pack(pack.record("samples", "text", 0), pack)
    return decode_stats(encode_stats(pack.records()[0]["stats"]))


def ngrams(rows: Rows, n: int) -> list[tuple[int, ...]]:
    return [tuple(r[i : i + n]) for r in rows for i in range(len(r) - n + 1)]


def brute(rows: Rows) -> dict[str, float]:
    """The indicators from the raw sequences (padding already removed)."""
    tokens = [t for r in rows for t in r]
    counts = np.array(list(Counter(tokens).values()), dtype=np.float64)
    p = counts / counts.sum()
    reps = [1 - len(set(ngrams([r], 4))) / len(ngrams([r], 4)) for r in rows if len(r) >= 4]
    return {
        "text_distinct_1": len(set(tokens)) / len(tokens),
        "text_distinct_2": len(set(ngrams(rows, 2))) / len(ngrams(rows, 2)),
        "text_distinct_3": len(set(ngrams(rows, 3))) / len(ngrams(rows, 3)),
        "text_unigram_entropy": float(-(p * np.log(p)).sum()),
        "text_repetition": float(np.mean(reps)),
    }


def check(got: dict[str, float], want: dict[str, float]) -> None:
    for name, value in want.items():
        tol = HLL_TOLERANCE if name in ("text_distinct_2", "text_distinct_3") else EXACT
        assert got[name] == pytest.approx(value, rel=tol), (name, got[name], value)


def test_one_step_several_calls_of_every_form() -> None:
    """A 2-D tensor, a list of lists of different lengths, a list of 1-D tensors and a tensor
    with negative padding, added at one step; n-grams touching padding are left out."""
    a = markov(1, 120, 40)
    # 3..40 tokens, from a small chain that loops: seq-rep-4 well above 0
    b = [r[: 3 + (i * 7) % 38] for i, r in enumerate(markov(2, 90, 40, vocab=20, fanout=2))]
    c = markov(3, 50, 25)
    padded = torch.tensor(markov(4, 60, 30))
    cut = torch.arange(30)[None, :] >= torch.randint(1, 31, (60, 1), generator=torch.Generator())
    padded[cut] = -1
    d = [r[r >= 0].tolist() for r in padded]
    calls = [
        (torch.tensor(a), 2),
        (b, None),
        ([torch.tensor(r) for r in c], None),
        (padded, 3),
    ]
    stats = record(calls)
    got = compute_indicators(TEXT, stats)
    rows = a + b + c + d
    check(got, brute(rows))
    assert got["text_generation"] == 3.0  # the newest call's
    assert stats["sequences"] == len(rows)
    assert stats["tokens"] == sum(len(r) for r in rows)
    assert stats["ngrams_2"] == len(ngrams(rows, 2))


def test_two_steps_and_two_ranks_merge_sums_and_sketches_by_maximum() -> None:
    """Records of two steps on rank 0 and one on rank 1, merged as a window or an all-reduce
    merges them: counts add up, sketch registers take the maximum, so distinct-n is that of the
    union (an n-gram seen on both ranks counts once)."""
    # rank 1 repeats some of rank 0's samples
    steps = [markov(5, 200, 30), markov(6, 150, 50, vocab=40, fanout=2), markov(5, 100, 30)]
    merged = sum_stats([record([(torch.tensor(rows), g)]) for g, rows in enumerate(steps)])
    got = compute_indicators(TEXT, merged)
    check(got, brute([r for rows in steps for r in rows]))
    assert got["text_generation"] == 2.0


@pytest.mark.parametrize("distinct", [150, 1_000, 4_000, 10_000, 12_000, 30_000, 100_000])
def test_distinct_bigrams_within_hll_error_across_cardinalities(distinct: int) -> None:
    """Exactly ``distinct`` different bigrams, each seen 1-3 times, ids up to 2**40 (n-grams are
    hashed from the full ids; only unigram counts are taken modulo 65536). 10,000-12,000 is
    where the original HyperLogLog switches from linear counting, the worst range for it."""
    rng = np.random.default_rng(distinct)
    pairs = rng.integers(0, 2**40, size=(distinct, 2))
    rows = np.repeat(pairs, rng.integers(1, 4, size=distinct), axis=0)
    got = compute_indicators(TEXT, record([(torch.from_numpy(rows), None)]))
    assert got["text_distinct_2"] == pytest.approx(distinct / len(rows), rel=HLL_TOLERANCE)
    assert "text_repetition" not in got  # no sequence has a 4-gram: no point, not NaN


def test_hll_estimate_is_exact_for_an_empty_sketch_and_close_for_one_element() -> None:
    assert hll_estimate(np.zeros(4096)) == 0.0
    one = np.zeros(4096)
    one[17] = 3.0
    assert hll_estimate(one) == pytest.approx(1.0, rel=1e-3)


def test_collapsed_samples_read_low_diversity_and_high_repetition() -> None:
    """Every sample is the same loop of three tokens: distinct-2 = 3 / bigrams, seq-rep-4 =
    1 - 3 / 17 per sequence of 20 tokens, entropy that of 7, 7 and 6 tokens in 20."""
    loop = [7, 8, 9] * 6 + [7, 8]
    got = compute_indicators(TEXT, record([([loop] * 50, 0)]))
    assert got["text_distinct_2"] == pytest.approx(3 / (50 * 19), rel=1e-3)
    assert got["text_distinct_1"] == pytest.approx(3 / 1000)
    assert got["text_repetition"] == pytest.approx(1 - 3 / 17)
    p = np.array([7, 7, 6]) / 20
    assert got["text_unigram_entropy"] == pytest.approx(float(-(p * np.log(p)).sum()))


def test_vocabularies_past_65536_share_unigram_buckets() -> None:
    """Unigram counts are per id modulo 65536: ids 5 and 65541 fall together (documented);
    n-grams keep the full ids."""
    got = compute_indicators(TEXT, record([([[5, 65541, 5, 65541]], None)]))
    assert got["text_distinct_1"] == pytest.approx(1 / 4)
    assert got["text_distinct_2"] == pytest.approx(2 / 3, rel=1e-3)


def test_too_short_or_empty_sequences_give_no_point_rather_than_nan() -> None:
    got = compute_indicators(TEXT, record([([[1], [2, 3], []], None)]))
    assert got["text_distinct_1"] == 1.0
    assert got["text_distinct_2"] == pytest.approx(1.0, rel=1e-3)
    assert "text_distinct_3" not in got and "text_repetition" not in got
    assert "text_generation" not in got  # none given
    assert compute_indicators(TEXT, record([([[], []], None)])) == {}


def test_perplexity_is_exp_of_the_summed_nll_over_tokens_across_calls_and_ranks() -> None:
    """A real bigram model's validation NLL, summed per batch by three log_eval calls (two on
    rank 0, one on rank 1), against the perplexity of the whole set at once."""
    torch.manual_seed(0)
    model = nn.Embedding(50, 50).double()  # float64 sums: the batches add up exactly
    x = torch.randint(0, 50, (30, 12))
    prev, nxt = x[:, :-1], x[:, 1:]
    batches = [slice(0, 7), slice(7, 20), slice(20, 30)]

    def rec(parts: list[slice]) -> dict[str, object]:
        acc = EvalAccumulator()
        with torch.no_grad():
            for s in parts:
                logits = model(prev[s]).reshape(-1, 50)
                nll = nn.functional.cross_entropy(logits, nxt[s].reshape(-1), reduction="sum")
                acc.add(nll, nxt[s].numel())
        pack = StepPack()
        acc.pack(pack.record("val", "eval", 0), pack)
        return as_arrays(pack.records()[0]["stats"])

    merged = sum_stats([rec(batches[:2]), rec(batches[2:])])
    got = compute_indicators(ProbeKind.eval, merged)["eval_perplexity"]
    with torch.no_grad():
        mean = nn.functional.cross_entropy(model(prev).reshape(-1, 50), nxt.reshape(-1))
    assert got == pytest.approx(math.exp(float(mean)), rel=EXACT)


def test_perplexity_of_a_diverged_loss_is_nan_or_inf_and_breaches() -> None:
    assert math.isnan(
        compute_indicators(ProbeKind.eval, {"nll_sum": math.nan, "tokens": 4.0})["eval_perplexity"]
    )
    assert (
        compute_indicators(ProbeKind.eval, {"nll_sum": 1e6, "tokens": 1.0})["eval_perplexity"]
        == math.inf
    )
    assert compute_indicators(ProbeKind.eval, {"nll_sum": 0.0, "tokens": 0.0}) == {}


def test_the_relative_defaults_of_the_family_ship_enabled_against_the_first_point() -> None:
    d2 = default_relative_rule(CATALOGUE["text_distinct_2"])
    ppl = default_relative_rule(CATALOGUE["eval_perplexity"])
    assert d2 is not None and ppl is not None
    assert (d2.condition, d2.percent, d2.reference, d2.baseline_points) == (
        "drop",
        30.0,
        "baseline",
        1,
    )
    assert (ppl.condition, ppl.percent, ppl.reference, ppl.baseline_points) == (
        "rise",
        10.0,
        "baseline",
        1,
    )
    assert d2.enabled and ppl.enabled
    # the others of the family have no default rule: shown, not alerted on
    others = [i for i in CATALOGUE.values() if i.family == "diversity" and i.relative is None]
    assert others and all(i.warn is None and i.critical is None for i in others)
