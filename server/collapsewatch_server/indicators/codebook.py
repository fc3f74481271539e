"""VQ codebook collapse (the ``codebook`` family of docs/indicators.md), from the code counts of
``log_codes`` (probe kind ``codes``).

Usage is read over a window of sampled steps, not one batch: a batch of a few hundred indices
cannot touch every code of a 1024-code book even when all of them are alive. Where the window
still holds fewer indices than codes (n < K), usage and perplexity are divided by n instead of
K, the most codes n indices can reach; otherwise a healthy codebook fed small batches would
read as collapsed. With that bound a uniformly used codebook never reads below 1 - 1/e = 0.63
(its expected usage at n = K), whatever n is.

One collapse, one alert: perplexity / K never exceeds usage, so the perplexity rule (below 0.25,
warning) fires whenever usage's (below 0.2, critical) would; usage's default rule ships
disabled, the dead fraction (1 - usage) has none. A random encoder maps its inputs onto a few
codes, so healthy runs read low at first: the rules skip the first 1000 steps.
"""

from __future__ import annotations

import math

import numpy as np

from collapsewatch.schemas import CodeStat as C
from collapsewatch.schemas import ProbeKind
from collapsewatch_server.indicators.catalogue import Stats, indicator

_CODES = ProbeKind.codes
_SOURCES = ("Addressing Representation Collapse in Vector Quantized Models with One Linear Layer",)
#: Sampled steps summed: a code unused in all of them is dead. Long enough that a healthy
#: codebook fed small batches fills its window (10 x 128 indices = 5 x K for K = 256), short
#: enough that a collapse shows within 10 sampled steps (100 training steps at every=10).
CODE_WINDOW = 10
#: Steps the default rules ignore. A random encoder maps its inputs onto a few codes, and a
#: healthy codebook needs a few hundred steps to spread (the SimVQ control of the
#: ``vq_codebook`` scenario reads a perplexity ratio of 0.06-0.2 until step 320-470).
WARMUP_STEPS = 1000
_WHAT_TO_TRY = (
    "Re-initialise dead codes from recent encoder outputs (k-means or random restarts), use "
    "EMA codebook updates, l2-normalised or lower-dimensional code lookups, or reparameterise "
    "the codebook through a learnable linear layer (SimVQ); check the commitment weight and "
    "the codebook's learning rate."
)


def _counts(stats: Stats) -> tuple[np.ndarray, float]:
    """The window's code counts and the most codes its indices could reach, min(K, n)."""
    counts = np.asarray(stats[C.counts], dtype=np.float64)
    n = float(counts.sum())
    if counts.size == 0 or not n > 0:  # NaN-safe: no in-range index in the whole window
        raise ValueError("no code counted")
    return counts, min(float(counts.size), n)


@indicator(
    "codebook_usage",
    title="Codebook usage",
    family="codebook",
    applies_to=_CODES,
    direction="low_is_bad",
    warn=0.5,
    critical=0.2,
    window=CODE_WINDOW,
    warmup_steps=WARMUP_STEPS,
    # perplexity <= usage, so the perplexity rule (below 0.25) fires whenever this one (below
    # 0.2) would: both on would make every deep collapse two alerts. Enable it for a critical
    # escalation when four codes in five are dead.
    rule_enabled=False,
    meaning="Fraction of the K codes chosen at least once in the last 10 sampled steps (of "
    "min(K, n) when the window holds only n < K indices). The rest are dead: the encoder never "
    "lands near them, so they get no gradient and stay dead (codebook collapse), and the model "
    "quantises with a fraction of its codebook. Its default rule (below 0.2, critical) ships "
    "disabled: the perplexity ratio's rule fires first on every such collapse; enable it for a "
    "critical escalation.",
    what_to_try=_WHAT_TO_TRY,
    sources=_SOURCES,
)
def codebook_usage(stats: Stats) -> float:
    counts, reach = _counts(stats)
    return float(np.count_nonzero(counts > 0)) / reach


@indicator(
    "codebook_dead_fraction",
    title="Dead codes",
    family="codebook",
    applies_to=_CODES,
    direction="high_is_bad",
    window=CODE_WINDOW,
    meaning="1 - codebook usage: the fraction of codes never chosen in the last 10 sampled "
    "steps. Shown beside usage; it has no default rule of its own, so one collapse is one "
    "alert (on codebook_usage).",
    what_to_try=_WHAT_TO_TRY,
    sources=_SOURCES,
)
def codebook_dead_fraction(stats: Stats) -> float:
    return 1.0 - codebook_usage(stats)


@indicator(
    "codebook_perplexity_ratio",
    title="Codebook perplexity / K",
    family="codebook",
    applies_to=_CODES,
    direction="low_is_bad",
    warn=0.25,
    window=CODE_WINDOW,
    warmup_steps=WARMUP_STEPS,
    meaning="exp of the entropy of the code frequencies over the last 10 sampled steps, "
    "divided by K (by n when the window holds only n < K indices): the number of codes in "
    "effective use, as a share of the codebook. 1 is uniform use; below 0.25 a few codes take "
    "most of the traffic even when many are still alive. It never exceeds the usage.",
    what_to_try=_WHAT_TO_TRY,
    sources=_SOURCES,
)
def codebook_perplexity_ratio(stats: Stats) -> float:
    counts, reach = _counts(stats)
    p = counts[counts > 0] / counts.sum()
    return math.exp(float(-(p * np.log(p)).sum())) / reach
