"""Mixture-of-experts routing collapse (the ``routing`` family of docs/indicators.md), from a
router's statistics (probe kind ``routing``, ``monitor.log_routing``).

Notation: E experts, each of the step's ``tokens`` sent to its top k; ``c_e`` the choices
expert e got (``sum c = k tokens``), ``f_e = c_e / (k tokens)`` the load fractions, ``P_e`` the
router's mean softmax probability of expert e. A collapsed router sends (almost) every token to
the same few experts: the load entropy falls towards 0 and the others die.

Routers are unbalanced before they learn (measured in ``scenarios/moe_routing.py``): an
unnormalised router input starts far from balance, and an expert starved early can stay without
tokens for a few hundred steps before the auxiliary loss brings it back. The default rules
ignore the start (200 steps for the entropy, 500 for dead experts); a collapse lasts, so it
still fires after them.
"""

from __future__ import annotations

import math

import numpy as np

from collapsewatch.schemas import ProbeKind
from collapsewatch.schemas import RoutingStat as R
from collapsewatch_server.indicators.catalogue import Stats, indicator

_ROUTING = ProbeKind.routing
_FAMILY = "routing"
_SOURCES = (
    "On the Representation Collapse of Sparse Mixture of Experts",
    "Merge, Then Compress",
)
#: Sampled steps over which an expert must get no token to count as dead. A healthy expert with
#: a share p of the k N choices of a sampled batch gets none in W batches with probability
#: (1 - p)^(k N W): 2e-3 for p = 0.5% of 256 tokens; with LLM batches, never. One batch alone
#: over-counts experts that are merely rare; a longer window only delays the alert (a dead
#: expert rarely comes back by itself). The same 5 sampled batches as ``dead_fraction``.
DEAD_WINDOW = 5
#: The load-entropy alert resolves only above this: a half-collapsed router hovers around 0.5
#: (0.24-0.69 in the scenario) and would fire and resolve again and again; a balanced one stays
#: above 0.76 after the warm-up.
ENTROPY_RECOVERY = 0.7
#: Steps the entropy rule ignores: a router is unbalanced before it learns, until the auxiliary
#: loss has evened it out (below 0.5 for up to ~200 steps with an unnormalised router input).
WARMUP_STEPS = 200
#: Steps the dead-expert rule ignores: with the auxiliary loss, an expert starved at the start
#: can stay without a token for a few hundred steps before it is pulled back (steps 110-340 in
#: the scenario's control, seed 11).
DEAD_WARMUP_STEPS = 500


def _counts(stats: Stats) -> np.ndarray | None:
    """The choices per expert, or None when the record routed no token."""
    counts = np.asarray(stats[R.counts], dtype=np.float64)
    if counts.size < 2 or float(stats[R.tokens]) <= 0 or counts.sum() <= 0:
        return None
    return counts


def load_entropy(counts: np.ndarray) -> float:
    """H(f) / log E of the load fractions f = counts / sum (0 log 0 = 0)."""
    f = counts[counts > 0] / counts.sum()
    return float(-(f * np.log(f)).sum() / math.log(counts.size))


@indicator(
    "moe_load_entropy",
    title="Expert load entropy",
    family=_FAMILY,
    applies_to=_ROUTING,
    direction="low_is_bad",
    warn=0.8,
    critical=0.5,
    warmup_steps=WARMUP_STEPS,
    rule_recovery=ENTROPY_RECOVERY,
    meaning="Entropy of the share of the router's top-k choices each expert got on the sampled "
    "step, divided by log E: 1 when every expert gets as many tokens as the others, 0 when "
    "one expert gets them all (routing collapse). Below 0.5 the load sits on a few experts "
    "and the rest learn nothing.",
    what_to_try="Add (or raise) the load-balancing auxiliary loss (Switch: 0.01 x E sum f P); "
    "add a router z-loss; normalise the router's input or use cosine routing with a low "
    "dimension (X-MoE); lower the router's learning rate; add routing noise or capacity limits.",
    sources=_SOURCES,
)
def moe_load_entropy(stats: Stats) -> float | None:
    counts = _counts(stats)
    return None if counts is None else load_entropy(counts)


@indicator(
    "moe_load_cv",
    title="Expert load CV",
    family=_FAMILY,
    applies_to=_ROUTING,
    direction="high_is_bad",
    meaning="Coefficient of variation of the choices per expert on the sampled step (population "
    "std / mean): 0 when balanced, sqrt(E - 1) when one expert gets everything. Shazeer et "
    "al.'s balancing losses penalise its square. Shown; the entropy carries the alert.",
    what_to_try="As for the load entropy.",
    sources=_SOURCES,
)
def moe_load_cv(stats: Stats) -> float | None:
    counts = _counts(stats)
    return None if counts is None else float(counts.std() / counts.mean())


@indicator(
    "moe_load_max_mean",
    title="Busiest expert / mean",
    family=_FAMILY,
    applies_to=_ROUTING,
    direction="high_is_bad",
    meaning="Choices of the busiest expert over the mean per expert: 1 when balanced, E when "
    "one expert gets everything. With a capacity factor below this value the busiest expert "
    "drops tokens. Shown; the entropy carries the alert.",
    what_to_try="As for the load entropy; raise the capacity factor if tokens are dropped.",
    sources=_SOURCES,
)
def moe_load_max_mean(stats: Stats) -> float | None:
    counts = _counts(stats)
    return None if counts is None else float(counts.max() / counts.mean())


@indicator(
    "moe_dead_experts",
    title="Dead experts",
    family=_FAMILY,
    applies_to=_ROUTING,
    direction="high_is_bad",
    warn=0.0,
    warmup_steps=DEAD_WARMUP_STEPS,
    window=DEAD_WINDOW,
    meaning="Fraction of the experts that got no token over the last 5 sampled steps: they "
    "receive no gradient, so without balancing they never come back, and their parameters "
    "are wasted. Any dead expert warns. (One batch alone over-counts experts that are merely "
    "rare.)",
    what_to_try="As for the load entropy; re-initialise the dead experts or merge them "
    "(M-SMoE); check for a router whose input has a large shared component.",
    sources=_SOURCES,
)
def moe_dead_experts(stats: Stats) -> float | None:
    counts = _counts(stats)
    return None if counts is None else float(np.mean(counts <= 0))


@indicator(
    "moe_aux_loss",
    title="Load-balancing loss (Switch)",
    family=_FAMILY,
    applies_to=_ROUTING,
    direction="high_is_bad",
    meaning="E sum_e f_e P_e, f_e the share of the top-k choices expert e got and P_e the "
    "router's mean probability for it (Switch Transformer's auxiliary loss, unscaled): 1 when "
    "balanced, up to E when one expert gets every token with certainty. Libraries that count "
    "f per top-k slot read k times this. Shown; the entropy carries the alert.",
    what_to_try="As for the load entropy; this is the value to add to the loss, times ~0.01.",
    sources=_SOURCES,
)
def moe_aux_loss(stats: Stats) -> float | None:
    counts = _counts(stats)
    if counts is None:
        return None
    tokens = float(stats[R.tokens])
    f = counts / counts.sum()
    p = np.asarray(stats[R.prob_sum], dtype=np.float64) / tokens
    return float(counts.size * (f @ p))


@indicator(
    "moe_z_loss",
    title="Router z-loss",
    family=_FAMILY,
    applies_to=_ROUTING,
    direction="high_is_bad",
    meaning="Mean over tokens of logsumexp(router logits)^2 (ST-MoE's z-loss, unscaled): how "
    "large the router's logits are. (log E)^2 for logits at 0; a steady climb means the "
    "router grows ever more confident, which precedes collapse and round-off instability.",
    what_to_try="Add the z-loss to the training loss (ST-MoE: x 0.001); lower the router's "
    "learning rate or compute the router in float32.",
    sources=_SOURCES,
)
def moe_z_loss(stats: Stats) -> float | None:
    tokens = float(stats[R.tokens])
    return float(stats[R.z_sum]) / tokens if tokens > 0 else None


@indicator(
    "moe_dropped_fraction",
    title="Dropped tokens",
    family=_FAMILY,
    applies_to=_ROUTING,
    direction="high_is_bad",
    meaning="Share of the top-k choices past their expert's capacity (per call), when "
    "log_routing gets capacity=: those tokens skip the expert (only the residual carries "
    "them). Rises with imbalance; the acceptable level depends on the capacity factor, so "
    "there is no default threshold.",
    what_to_try="Balance the router (see the load entropy) or raise the capacity factor.",
    sources=_SOURCES,
)
def moe_dropped_fraction(stats: Stats) -> float | None:
    choices = float(stats[R.tokens]) * float(stats[R.k])
    return float(stats[R.dropped]) / choices if choices > 0 else None
