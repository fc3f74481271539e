"""Output diversity, model collapse and perplexity (the ``diversity`` family of
docs/indicators.md), from generated token ids (probe kind ``text``, ``log_tokens``) and
validation NLL sums (probe kind ``eval``, ``log_eval``).

A model that collapses loses its tails first: it says fewer different things (distinct-n and
unigram entropy fall), repeats itself (seq-rep-4 rises) and explains real text worse
(validation perplexity rises). How diverse healthy samples are depends on the model, the
decoding and the sample size, so the defaults are relative to the run's own first points:
distinct-2 down by more than 30%, validation perplexity up by more than 10%.
Healthy training does not move these once the model is trained, so their rules ship enabled.
"""

from __future__ import annotations

import math

import numpy as np

from collapsewatch.schemas import EvalStat as E
from collapsewatch.schemas import ProbeKind
from collapsewatch.schemas import TextStat as T
from collapsewatch_server.indicators.catalogue import Stats, indicator
from collapsewatch_web.api_schemas.catalogue import RelativeDefault

_TEXT = ProbeKind.text
_EVAL = ProbeKind.eval
#: The rank of a register of a 64-bit hash whose 12 low bits index the register: 1..53.
_HLL_MAX_RANK = 64 - 12 + 1
#: Points whose mean is the reference of the relative defaults: the first evaluation (the
#: first checkpoint or generation, as the model-collapse and model-editing papers compare).
BASELINE_POINTS = 1
_SOURCES = (
    "Collapse of Self-trained Language Models",
    "Is Model Collapse Inevitable? Breaking the Curse of Recursion by Accumulating Real and "
    "Synthetic Data",
    "A Tale of Tails: Model Collapse as a Change of Scaling Laws",
    "How to Synthesize Text Data without Model Collapse?",
    "Detecting Mode Collapse in Language Models via Narration",
)
_WHAT_TO_TRY = (
    "Keep real data in every round of training on generated data (accumulate it, or mix a "
    "fixed share of it in) rather than replacing it; sample with less truncation (higher top-p "
    "or temperature) when generating training data; filter or edit synthetic data rather than "
    "using it raw; compare with the first generation's samples."
)


def _sigma(x: float) -> float:
    """Ertl's sigma(x) = x + sum_k x^(2^k) 2^(k-1), for the share of empty registers."""
    if x == 1.0:
        return math.inf
    y, z = 1.0, x
    while True:
        x *= x
        before = z
        z += x * y
        y += y
        if z == before:
            return z


def _tau(x: float) -> float:
    """Ertl's tau(x), for the share of registers that did not saturate."""
    if x in (0.0, 1.0):
        return 0.0
    y, z = 1.0, 1.0 - x
    while True:
        x = math.sqrt(x)
        before = z
        y *= 0.5
        z -= (1.0 - x) ** 2 * y
        if z == before:
            return z / 3.0


def hll_estimate(registers: np.ndarray) -> float:
    """Distinct elements counted by HyperLogLog registers (4096 of them, ranks 0..53).

    Ertl's improved raw estimator (O. Ertl, "New cardinality estimation algorithms for
    HyperLogLog sketches", 2017): from the histogram of register values, without the
    switch from linear counting to the raw estimate at 2.5 m of the original paper, where that
    one is biased by about +1% and its error doubles (m = 4096: around 10,000 distinct
    n-grams, a typical sample size); within the small range it equals linear counting.
    """
    reg = np.asarray(registers, dtype=np.float64)
    m = reg.size
    if m == 0 or not np.all(np.isfinite(reg)):
        raise ValueError("no sketch")
    ranks = np.clip(np.rint(reg), 0, _HLL_MAX_RANK).astype(np.int64)
    counts = np.bincount(ranks, minlength=_HLL_MAX_RANK + 1)
    q = _HLL_MAX_RANK - 1
    z = m * _tau(1.0 - counts[q + 1] / m)
    for k in range(q, 0, -1):
        z = 0.5 * (z + counts[k])
    z += m * _sigma(counts[0] / m)
    return float(m * m / (2.0 * math.log(2.0)) / z)


def _distinct(stats: Stats, sketch: str, total: str) -> float | None:
    n = float(stats[total])
    if n <= 0:
        return None  # sequences too short for an n-gram: nothing to say, not a failure
    # a sketch cannot count more than there were; it may overshoot by its error
    return min(hll_estimate(np.asarray(stats[sketch])), n) / n


@indicator(
    "text_distinct_1",
    title="Distinct tokens (distinct-1)",
    family="diversity",
    applies_to=_TEXT,
    direction="low_is_bad",
    meaning="Different token ids in the generated samples over their tokens (exact for "
    "vocabularies up to 65,536; larger ones are counted modulo 65,536). Falls when the model "
    "stops using part of its vocabulary.",
    what_to_try=_WHAT_TO_TRY,
    sources=_SOURCES,
)
def text_distinct_1(stats: Stats) -> float | None:
    tokens = float(stats[T.tokens])
    if tokens <= 0:
        return None
    return float(np.count_nonzero(np.asarray(stats[T.unigrams]) > 0)) / tokens


@indicator(
    "text_distinct_2",
    title="Distinct bigrams (distinct-2)",
    family="diversity",
    applies_to=_TEXT,
    direction="low_is_bad",
    relative=RelativeDefault(
        condition="drop",
        percent=30.0,
        reference="baseline",
        baseline_points=BASELINE_POINTS,
        enabled=True,
    ),
    pending_points=2,  # generated text is a noisy sample: a drop is confirmed once more
    meaning="Distinct bigrams of the generated samples over all their bigrams (HyperLogLog "
    "count, about 1.6% standard error). A model trained on its own samples forgets the rare "
    "continuations first: distinct-2 falls generation after generation (model collapse). Its "
    "level depends on the vocabulary, the decoding and the sample size: compare it with the "
    "run's first generation or checkpoint, logged with the same sample size. The default "
    "alerts on a drop of more than 30% from the first point, so log samples of a trained "
    "model first (an untrained one samples noise, which is maximally diverse).",
    what_to_try=_WHAT_TO_TRY,
    sources=_SOURCES,
)
def text_distinct_2(stats: Stats) -> float | None:
    return _distinct(stats, T.hll_2, T.ngrams_2)


@indicator(
    "text_distinct_3",
    title="Distinct trigrams (distinct-3)",
    family="diversity",
    applies_to=_TEXT,
    direction="low_is_bad",
    meaning="Distinct trigrams over all trigrams of the generated samples (HyperLogLog count). "
    "Reads like distinct-2, higher; shown, the default alerts on distinct-2.",
    what_to_try=_WHAT_TO_TRY,
    sources=_SOURCES,
)
def text_distinct_3(stats: Stats) -> float | None:
    return _distinct(stats, T.hll_3, T.ngrams_3)


@indicator(
    "text_unigram_entropy",
    title="Unigram entropy of the samples",
    family="diversity",
    applies_to=_TEXT,
    direction="low_is_bad",
    unit="nats",
    meaning="Entropy of the token frequencies of the generated samples, in nats (log of the "
    "vocabulary for uniform use, 0 for one token). Falls as the model concentrates on fewer "
    "tokens: over-concentration of n-gram features, a mark of training on synthetic data.",
    what_to_try=_WHAT_TO_TRY,
    sources=_SOURCES,
)
def text_unigram_entropy(stats: Stats) -> float | None:
    counts = np.asarray(stats[T.unigrams], dtype=np.float64)
    total = float(counts.sum())
    if not math.isfinite(total):
        return math.nan
    if total <= 0:
        return None
    p = counts[counts > 0] / total
    return float(-(p * np.log(p)).sum())


@indicator(
    "text_repetition",
    title="Repetition within samples (seq-rep-4)",
    family="diversity",
    applies_to=_TEXT,
    direction="high_is_bad",
    meaning="Mean over the generated sequences of 1 - distinct 4-grams / 4-grams (seq-rep-4, "
    "Welleck et al. 2019), exact; sequences shorter than 4 tokens are left out. Near 0 for "
    "human text; a collapsed or degenerate model loops over the same phrases and reads 0.5 "
    "and more. Grows with the sequence length: compare samples of one length.",
    what_to_try="Check the decoding (greedy and low-temperature decoding loop); a repetition "
    "penalty; if it rises across generations of training on generated data, as for distinct-2.",
    sources=("Collapse of Self-trained Language Models", *_SOURCES[1:2]),
)
def text_repetition(stats: Stats) -> float | None:
    seqs = float(stats[T.rep_seqs])
    if seqs <= 0:
        return None
    return float(stats[T.rep_sum]) / seqs


@indicator(
    "text_generation",
    title="Generation (self-consuming round)",
    family="diversity",
    applies_to=_TEXT,
    direction="info",
    meaning="The generation (round of training on generated data) the samples come from, as "
    "passed to log_tokens(..., generation=g): read the other diversity charts generation by "
    "generation against it.",
    what_to_try="Nothing: a label.",
)
def text_generation(stats: Stats) -> float:
    return float(stats[T.generation])  # KeyError without one: no point


@indicator(
    "eval_perplexity",
    title="Validation perplexity",
    family="diversity",
    applies_to=_EVAL,
    direction="high_is_bad",
    relative=RelativeDefault(
        condition="rise",
        percent=10.0,
        reference="baseline",
        baseline_points=BASELINE_POINTS,
        enabled=True,
    ),
    meaning="exp(summed NLL / tokens) on fixed real validation data (log_eval). A model trained "
    "on its own outputs, or damaged by an edit or by unlearning, explains real text worse: a "
    "jump in perplexity is the collapse surrogate of the model-editing papers. The default "
    "alerts on a rise of more than 10% over the first evaluation.",
    what_to_try="If it rose after a model edit or an unlearning step, undo it and edit with "
    "a smaller step (r-ROME, NPO instead of gradient ascent); across generations of training on "
    "generated data, keep the real data in the mix.",
    sources=(
        "The Butterfly Effect of Model Editing: Few Edits Can Trigger Large Language Models "
        "Collapse",
        "Understanding the Collapse of LLMs in Model Editing",
        "Negative Preference Optimization: From Catastrophic Collapse to Effective Unlearning",
        *_SOURCES[1:3],
    ),
)
def eval_perplexity(stats: Stats) -> float | None:
    tokens = float(stats[E.tokens])
    nll = float(stats[E.nll_sum])
    if not (math.isfinite(nll) and math.isfinite(tokens)):
        return math.nan  # a diverged loss: alarming
    if tokens <= 0:
        return None
    mean = nll / tokens
    return math.exp(mean) if mean < 700.0 else math.inf  # exp overflows past ~709
