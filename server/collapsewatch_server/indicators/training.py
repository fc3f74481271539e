"""Training health (the ``training`` family of docs/indicators.md): norms, update ratio and the
loss."""

from __future__ import annotations

import math

from collapsewatch.schemas import LossStat as L
from collapsewatch.schemas import ParameterStat as P
from collapsewatch.schemas import ProbeKind
from collapsewatch_server.indicators.catalogue import Stats, indicator

_PARAM = ProbeKind.parameter


@indicator(
    "weight_norm",
    title="Weight norm",
    family="training",
    applies_to=_PARAM,
    direction="info",
    meaning="L2 norm of the parameter tensor. Steady growth often precedes attention entropy "
    "collapse and loss spikes; a fall to zero, a layer pruned away.",
    what_to_try="Weight decay, normalisation layers, a lower learning rate.",
)
def weight_norm(stats: Stats) -> float:
    return float(stats[P.weight_norm])


@indicator(
    "grad_norm",
    title="Gradient norm",
    family="training",
    applies_to=_PARAM,
    direction="info",
    meaning="L2 norm of the gradient of the parameter. Vanishing: the layer stopped learning; "
    "exploding or NaN: the run is diverging.",
    what_to_try="Gradient clipping, warm-up, a lower learning rate, check the loss scale.",
)
def grad_norm(stats: Stats) -> float:
    return float(stats[P.grad_norm])


@indicator(
    "update_ratio",
    title="Update / weight ratio",
    family="training",
    applies_to=_PARAM,
    direction="info",
    meaning="||w_after - w_before|| / ||w_before|| of one optimizer step; around 1e-3 is usual. "
    "Much larger steps kill units and collapse attention; much smaller, the layer is frozen.",
    what_to_try="Adjust the learning rate of that parameter group; add warm-up.",
)
def update_ratio(stats: Stats) -> float:
    w = float(stats[P.weight_norm])
    u = float(stats[P.update_norm])
    return u / w if w > 0 else math.nan


@indicator(
    "loss",
    title="Loss",
    family="training",
    applies_to=ProbeKind.loss,
    direction="info",
    meaning="Mean training loss over the steps since the previous sampled step.",
    what_to_try="A spike often follows a collapse shown by another indicator: look there first.",
)
def loss(stats: Stats) -> float:
    return float(stats[L.mean])


@indicator(
    "loss_max",
    title="Loss (max since last sample)",
    family="training",
    applies_to=ProbeKind.loss,
    direction="info",
    meaning="Largest training loss since the previous sampled step: spikes between samples.",
    what_to_try="Spikes that recur: lower the learning rate or clip gradients.",
)
def loss_max(stats: Stats) -> float:
    return float(stats[L.max])


#: The indicator of a scalar probe (``log_scalar``): its value as logged.
SCALAR_VALUE = "value"


@indicator(
    SCALAR_VALUE,
    title="Scalar",
    family="scalars",
    applies_to=ProbeKind.scalar,
    direction="info",
    meaning="A value logged with monitor.log_scalar(name, value).",
    what_to_try="Set a rule with a threshold that means something for this quantity.",
)
def scalar_value(stats: Stats) -> float:
    return float(stats["value"])
