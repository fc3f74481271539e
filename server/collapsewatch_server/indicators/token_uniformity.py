"""Token uniformity, rank collapse and layer similarity (the ``tokens`` family of
docs/indicators.md), from the token statistics of transformer blocks' outputs (probe kind
``tokens``).

Trained language models are anisotropic (their token states share a common direction), so
absolute cosines vary from model to model: a healthy 2-block post-LN language model of the
validation suite reads a token cosine of 0.92 at its last block (residual ratio 0.28), while
the collapsed runs read 0.99-1.0 (residual 0.00-0.08). The token cosine keeps its 0.9 line
on the charts, but its default rule ships disabled; the family's alarm is the residual ratio
below 0.1 (a cosine of about 0.99), which also has a default relative to the run's own peak.
"""

from __future__ import annotations

import math

import numpy as np

from collapsewatch.schemas import ProbeKind
from collapsewatch.schemas import TokenStat as T
from collapsewatch_server.indicators.catalogue import Stats, indicator
from collapsewatch_web.api_schemas.catalogue import RelativeDefault

_TOK = ProbeKind.tokens
_SOURCES = (
    "Length-Induced Embedding Collapse (TempScale)",
    "Seq-VCR",
    "Attention is not all you need: pure attention loses rank doubly exponentially",
)
#: A length bucket enters the maximum with at least this many sequences (in the window): the
#: cosine of two or three sequences is noise.
MIN_BUCKET_SEQUENCES = 8
#: Records summed for the length-bucket cosine (pairs are within a step; steps add up).
LENGTH_WINDOW = 5


@indicator(
    "token_cosine",
    title="Token cosine (token uniformity)",
    family="tokens",
    applies_to=_TOK,
    direction="high_is_bad",
    critical=0.9,
    rule_enabled=False,
    meaning="Mean cosine between the token states of a sequence at this block's output "
    "(padding left out). 1 means every token carries the same vector: the block's output has "
    "collapsed to rank one per sequence (token uniformity, rank collapse), which pure attention "
    "stacks without skip connections reach within a few layers. Healthy trained language "
    "models are anisotropic and can read above 0.9, so the default rule ships disabled: the "
    "residual ratio below 0.1 is the alarm.",
    what_to_try="Check the residual (skip) connections and normalisation (pre-LN) around "
    "attention; lower the depth or learning rate; a temperature on attention (TempScale) or a "
    "token-level variance/covariance term (Seq-VCR).",
    sources=_SOURCES,
)
def token_cosine(stats: Stats) -> float:
    pairs = float(stats[T.pairs])
    if pairs <= 0:
        return math.nan
    return (float(stats[T.usum_sq]) - float(stats[T.tokens])) / pairs


@indicator(
    "residual_ratio",
    title="Residual ratio (rank collapse)",
    family="tokens",
    applies_to=_TOK,
    direction="low_is_bad",
    critical=0.1,
    relative=RelativeDefault(condition="drop", percent=50.0, reference="peak"),
    meaning="||X - 1 xbar^T||_F / ||X||_F over the sequences: how much of the block's output "
    "is not the sequence mean. 0 when every token of a sequence is the same vector.",
    what_to_try="As for the token cosine.",
    sources=_SOURCES,
)
def residual_ratio(stats: Stats) -> float:
    total = float(stats[T.sq])
    if total <= 0:
        return math.nan
    return math.sqrt(max(float(stats[T.resid_sq]), 0.0) / total)


@indicator(
    "length_cosine_max",
    title="Sentence-embedding cosine (worst length bucket)",
    family="tokens",
    applies_to=_TOK,
    direction="high_is_bad",
    critical=0.9,
    window=LENGTH_WINDOW,
    # A healthy causal LM trained on sequences of one length from one source (a bigram chain)
    # read 0.9+ here: mean-pooling averages away what differs between sequences of one
    # distribution, so the level says as much about the data as about the model.
    rule_enabled=False,
    meaning="Mean cosine between the mean-pooled embeddings of different sequences of similar "
    "length (log2 buckets), the highest over the buckets with enough sequences in the last 5 "
    "sampled steps. Near 1 the embeddings of that length all look alike (length collapse: long "
    "texts drift together). One series per block, the maximum: the per-bucket values can be "
    "recomputed from the stored statistics. Sequences drawn from one narrow distribution read "
    "high without any collapse, so the default rule ships disabled: enable it where the inputs "
    "are varied texts.",
    what_to_try="Temperature scaling of attention for long inputs (TempScale), or train with a "
    "spread of lengths; compare with the shorter buckets.",
    sources=_SOURCES,
)
def length_cosine_max(stats: Stats) -> float | None:
    n = np.asarray(stats[T.len_n], dtype=np.float64)
    pairs = np.asarray(stats[T.len_pairs], dtype=np.float64)
    usum = np.asarray(stats[T.len_usum_sq], dtype=np.float64)
    enough = (n >= MIN_BUCKET_SEQUENCES) & (pairs > 0)
    if not enough.any():
        return None  # no point rather than NaN: short windows are normal, not a failure
    return float(np.max((usum[enough] - n[enough]) / pairs[enough]))


@indicator(
    "layer_cosine",
    title="Block input/output cosine (layer similarity)",
    family="tokens",
    applies_to=_TOK,
    direction="info",
    meaning="Mean cosine, token by token, between this block's input and its output: in a "
    "stack, cos(h_l, h_(l+1)) of consecutive layers. Near 1 the block barely changes the "
    "residual stream (a redundant layer, the candidate that LaCo/ShortGPT remove). Healthy "
    "pre-LN stacks read 0.8-0.99 in their middle layers, so there is no default threshold.",
    what_to_try="Compare blocks: a run of blocks near 1 can be merged or pruned; a sudden rise "
    "during training means the blocks stopped contributing.",
    sources=("LaCo", *_SOURCES[:1]),
)
def layer_cosine(stats: Stats) -> float:
    count = float(stats[T.io_tokens])
    return float(stats[T.io_cos]) / count if count > 0 else math.nan
