"""Attention entropy collapse (the ``attention`` family of docs/indicators.md), from the per-head
sums of normalised query entropies (probe kind ``attention``: every ``nn.MultiheadAttention``
and ``log_attention``).

A head's entropy is the mean over its queries of ``H_i / log n_i`` (``n_i`` the keys query i
may see): 1 is uniform attention over the visible keys, 0 one key per query. Healthy heads
spread (0.5-0.9 in small language models); entropy collapse is most heads going near 0 with
training instability (oscillating or diverging loss) around it. The spectral norm of
``W_Q W_K^T`` bounds the attention logits and grows before the entropy falls (Zhai et al.
2023 prove an entropy lower bound that decreases exponentially with it), but its scale depends
on the model: only a default relative to the run's own history (a tripling from its lowest
value), shipped disabled.
"""

from __future__ import annotations

import math

import numpy as np

from collapsewatch.schemas import AttentionStat as A
from collapsewatch.schemas import ProbeKind
from collapsewatch_server.indicators.catalogue import Stats, indicator
from collapsewatch_web.api_schemas.catalogue import RelativeDefault

_ATT = ProbeKind.attention
_SOURCES = (
    "Stabilizing Transformer Training by Preventing Attention Entropy Collapse",
    "Length-Induced Embedding Collapse (TempScale)",
)
#: A head whose mean normalised entropy is below this counts as collapsed.
LOW_HEAD = 0.1
_WHAT_TO_TRY = (
    "Lower the learning rate or add a warm-up; keep Adam's beta2 at 0.98-0.999; pre-LN "
    "instead of post-LN; bound the attention logits: sigmaReparam (spectral normalisation of "
    "the linear layers with a learned scale), QK-LayerNorm, or a softmax temperature "
    "(TempScale)."
)


def head_entropies(stats: Stats) -> np.ndarray | None:
    """Each head's mean normalised entropy (heads that saw no query with 2+ keys left out);
    None when no head did (a batch of one-token sequences: nothing to say)."""
    queries = np.asarray(stats[A.queries], dtype=np.float64).reshape(-1)
    sums = np.asarray(stats[A.ent_sum], dtype=np.float64).reshape(-1)
    if queries.shape != sums.shape:
        raise ValueError("queries and ent_sum differ in shape")
    counted = queries > 0
    if not counted.any():
        return None
    return sums[counted] / queries[counted]


@indicator(
    "attention_entropy",
    title="Attention entropy (mean over heads)",
    family="attention",
    applies_to=_ATT,
    direction="low_is_bad",
    critical=0.2,
    # for models whose healthy entropy is already low (trained LMs with attention sinks, being
    # fine-tuned): healthy training from scratch drops it by up to ~20% from its start
    relative=RelativeDefault(condition="drop", percent=75.0, reference="peak"),
    meaning="Mean over the heads of the attention entropy of a query, normalised by the log of "
    "the keys it may see (1: uniform over them; 0: every query attends to one key), measured "
    "on a sample of queries. Below 0.2 the layer's attention has collapsed onto single keys "
    "(entropy collapse), which comes with oscillating or diverging loss. Trained language "
    "models have sharp heads (attention sinks on the first token) and read lower than models "
    "trained from scratch: for those, the relative default (a 75% drop from the run's peak, "
    "shipped disabled) is the better alarm.",
    what_to_try=_WHAT_TO_TRY,
    sources=_SOURCES,
)
def attention_entropy(stats: Stats) -> float | None:
    heads = head_entropies(stats)
    return None if heads is None else float(heads.mean())


@indicator(
    "attention_low_heads",
    title="Collapsed heads (entropy below 0.1)",
    family="attention",
    applies_to=_ATT,
    direction="high_is_bad",
    critical=0.5,
    meaning="Share of the heads whose mean normalised attention entropy is below 0.1 (each "
    "query on about one key). Above 0.5, more than half of the layer's heads have collapsed, "
    "even when the others keep the mean entropy up.",
    what_to_try=_WHAT_TO_TRY,
    sources=_SOURCES,
)
def attention_low_heads(stats: Stats) -> float | None:
    heads = head_entropies(stats)
    if heads is None:
        return None
    if not np.isfinite(heads).all():
        return math.nan
    return float(np.mean(heads < LOW_HEAD))


@indicator(
    "attention_entropy_min",
    title="Attention entropy (lowest head)",
    family="attention",
    applies_to=_ATT,
    direction="info",
    meaning="The lowest mean normalised attention entropy of the layer's heads. One sharp "
    "head is often what the model needs (a previous-token or copy head), so this is shown, "
    "not alerted on: a collapse is many heads, see the mean and the share of collapsed heads.",
    what_to_try="Compare it with the mean: a lone head near 0 is usually a specialised head; "
    "heads falling one after another while the loss oscillates is the collapse starting.",
    sources=_SOURCES,
)
def attention_entropy_min(stats: Stats) -> float | None:
    heads = head_entropies(stats)
    return None if heads is None else float(heads.min())


@indicator(
    "attention_qk_sigma",
    title="Spectral norm of W_Q W_K^T (largest head)",
    family="attention",
    applies_to=_ATT,
    direction="high_is_bad",
    # from the trough (the engine's reference for a rise), not the mean of the first points:
    # a collapse can start within the first sampled steps and lift such a baseline with it
    relative=RelativeDefault(condition="rise", percent=200.0, reference="peak"),
    meaning="The largest over the heads of the spectral norm of W_Q^h W_K^h^T (the bilinear "
    "form of the attention logits; recorded for nn.MultiheadAttention). It bounds how sharp "
    "attention can get, and its growth precedes entropy collapse: the attention entropy's "
    "lower bound falls exponentially with it. Its scale depends on the model, so there is no "
    "absolute threshold; the relative default (shipped disabled) warns when it triples from its "
    "lowest value in the run.",
    what_to_try="If it keeps climbing while the entropy falls: lower the learning rate, add "
    "warm-up, weight decay on the attention projections, or sigmaReparam / QK-LayerNorm.",
    sources=_SOURCES[:1],
)
def attention_qk_sigma(stats: Stats) -> float:
    sigma = np.asarray(stats[A.qk_sigma], dtype=np.float64).reshape(-1)
    if sigma.size == 0:
        return math.nan
    return float(sigma.max())  # NaN (a diverged head) stays NaN
