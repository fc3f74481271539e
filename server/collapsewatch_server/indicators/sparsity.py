"""Sparsity and layer collapse in pruning (the ``sparsity`` family of docs/indicators.md), and the
NaN/Inf counts of weights and gradients (training health).

The SDK sends these at most once every 32 steps (on every sampled step when sampling is
sparser), for every weight with two or more dims, plus
probe ``(global)`` with the sums over all of them (PQ index and density of the whole network).
"""

from __future__ import annotations

import math

from collapsewatch.schemas import ParameterStat as P
from collapsewatch.schemas import ProbeKind
from collapsewatch_server.indicators.catalogue import Stats, indicator

_PARAM = ProbeKind.parameter


@indicator(
    "pq_index",
    title="PQ index (sparsity)",
    family="sparsity",
    applies_to=_PARAM,
    direction="info",
    meaning="1 - d^(1/q - 1/p) ||w||_p / ||w||_q with p = 0.5, q = 1, over the unmasked (non-zero) "
    "weights: 0 when all magnitudes are equal, ~0.15 for dense Gaussian weights, towards 1 when a "
    "few weights carry the layer. Rising during pruning means the remaining weights are already "
    "compressible; the PQ-index paper prunes more while it rises and stops when it falls.",
    what_to_try="Compare layers: a layer far sparser than the rest is the next to collapse under "
    "global magnitude pruning; prune it less (layer-wise ratios) or rewind.",
    sources=("Pruning Deep Neural Networks from a Sparsity Perspective (PQ Index)",),
)
def pq_index(stats: Stats) -> float:
    nonzero = float(stats[P.nonzero])
    l1 = float(stats[P.abs_sum])
    if nonzero <= 0 or l1 <= 0 or not math.isfinite(l1):
        return math.nan
    half = float(stats[P.abs_sqrt_sum])  # ||w||_0.5 = half^2
    return 1.0 - half * half / (nonzero * l1)


@indicator(
    "density",
    title="Layer density",
    family="sparsity",
    applies_to=_PARAM,
    direction="low_is_bad",
    critical=0.01,
    meaning="Fraction of the weights that are not zero (after the pruning mask). Below 1% the "
    "layer is all but removed: the network is disconnected there (layer collapse) and cannot "
    "recover by training.",
    what_to_try="Prune layer by layer instead of by a global magnitude threshold, keep a "
    "minimum density per layer, use a connectivity-preserving criterion (SynFlow), or rewind.",
    sources=(
        "Is Complexity Required for Neural Network Pruning (layer collapse)",
        "HESSO",
        "LaCo",
    ),
)
def density(stats: Stats) -> float:
    numel = float(stats[P.numel])
    return float(stats[P.nonzero]) / numel if numel > 0 else math.nan


@indicator(
    "nonfinite_weights",
    title="NaN/Inf weights",
    family="training",
    applies_to=_PARAM,
    direction="high_is_bad",
    critical=0.0,
    pending_points=1,
    meaning="Number of NaN or infinite values in the parameter. Above 0 the model is broken: "
    "every output that touches it is NaN from now on.",
    what_to_try="Restart from the last finite checkpoint with a lower learning rate, gradient "
    "clipping, or a loss scaler (mixed precision).",
)
def nonfinite_weights(stats: Stats) -> float:
    return float(stats[P.weight_nan]) + float(stats[P.weight_inf])


@indicator(
    "nonfinite_grads",
    title="NaN/Inf gradients",
    family="training",
    applies_to=_PARAM,
    direction="high_is_bad",
    critical=0.0,
    pending_points=1,
    meaning="Number of NaN or infinite values in the gradient of the parameter. Above 0 the next "
    "optimizer step writes NaN into the weights (unless a loss scaler skips it).",
    what_to_try="Clip gradients, lower the learning rate, look for log(0) or division by zero "
    "in the loss; with mixed precision, check the loss scaler is used.",
)
def nonfinite_grads(stats: Stats) -> float:
    return float(stats[P.grad_nan]) + float(stats[P.grad_inf])
