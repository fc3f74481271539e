"""VAE posterior collapse (the ``posterior`` family of docs/indicators.md), from the per-dimension
sums of ``log_posterior`` (probe kind ``posterior``): q(z|x) = N(mu(x), diag exp(logvar(x)))
against the prior N(0, I).

All three read the sums of the last 5 sampled steps: one batch's variance of mu over a
hundred rows wobbles by ~15%, which is enough to flip a unit near the 0.01 threshold.

At initialisation the encoder is random: its KL and unit variances say nothing about collapse
(the ``posterior_collapse`` scenario's healthy control starts at 0.7-0.9 nats, above the
0.5 threshold only by luck of the init scale; a small-init output layer starts at ~0), and a
posterior that collapses in its first ~150 steps can still recover. The default rules skip the
first 500 steps.

One collapse, (mostly) one alert: the active units catch partial collapse (a few dimensions
left), the total KL complete collapse; only a complete collapse trips both. The collapsed-dims
share says nearly what the active units say, so it has no default rule.
"""

from __future__ import annotations

import math

import numpy as np

from collapsewatch.schemas import PosteriorStat as P
from collapsewatch.schemas import ProbeKind
from collapsewatch_server.indicators.catalogue import Stats, indicator

_POST = ProbeKind.posterior
_SOURCES = (
    "Beyond Vanilla VAEs",
    "Controlling Posterior Collapse by an Inverse Lipschitz Constraint",
)
#: Sampled steps summed (see the module docstring).
POSTERIOR_WINDOW = 5
#: Var_x(E_q[z_j]) above this makes unit j active (Burda et al.'s threshold).
ACTIVE_VARIANCE = 0.01
#: A dimension with a mean KL below this many nats carries no information: collapsed.
COLLAPSED_KL = 0.01
#: Steps the default rules ignore (see the module docstring).
WARMUP_STEPS = 500
_WHAT_TO_TRY = (
    "Anneal the KL weight from 0 (KL warm-up), use free bits (a KL floor per dimension), a "
    "lower observation variance or beta < 1, a weaker decoder (autoregressive decoders ignore "
    "z most readily), or an inverse-Lipschitz decoder; check that the decoder's observation "
    "noise is not learned to be large."
)


def _per_dim(stats: Stats) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    n = float(stats[P.n])
    mu_sum = np.asarray(stats[P.mu_sum], dtype=np.float64)
    mu_sq = np.asarray(stats[P.mu_sq], dtype=np.float64)
    kl_sum = np.asarray(stats[P.kl_sum], dtype=np.float64)
    if not n > 0 or mu_sum.size == 0:
        raise ValueError("no rows")
    return n, mu_sum, mu_sq, kl_sum


@indicator(
    "posterior_kl",
    title="Posterior KL (total)",
    family="posterior",
    applies_to=_POST,
    direction="low_is_bad",
    critical=0.5,
    unit="nats",
    window=POSTERIOR_WINDOW,
    warmup_steps=WARMUP_STEPS,
    meaning="KL(q(z|x) || N(0, I)) summed over the latent dimensions, averaged over the inputs "
    "of the last 5 sampled steps: the information the latent code carries about the input. "
    "Near 0 the posterior equals the prior for every input and the decoder ignores z "
    "(posterior collapse).",
    what_to_try=_WHAT_TO_TRY,
    sources=_SOURCES,
)
def posterior_kl(stats: Stats) -> float:
    n, _, _, kl_sum = _per_dim(stats)
    return float(kl_sum.sum()) / n


@indicator(
    "posterior_active_units",
    title="Active units / latent dims",
    family="posterior",
    applies_to=_POST,
    direction="low_is_bad",
    warn=0.5,
    window=POSTERIOR_WINDOW,
    warmup_steps=WARMUP_STEPS,
    meaning="Share of latent dimensions j whose posterior mean varies with the input, "
    "Var_x(mu_j) > 0.01 over the last 5 sampled steps (active units, Burda et al.). An "
    "inactive unit gives every input the same code: the model uses fewer latent dimensions "
    "than it has (partial posterior collapse).",
    what_to_try=_WHAT_TO_TRY,
    sources=_SOURCES,
)
def posterior_active_units(stats: Stats) -> float:
    n, mu_sum, mu_sq, _ = _per_dim(stats)
    mean = mu_sum / n
    variance = mu_sq / n - mean * mean
    if not np.all(np.isfinite(variance)):
        return math.nan
    return float(np.mean(variance > ACTIVE_VARIANCE))


@indicator(
    "posterior_collapsed_dims",
    title="Collapsed latent dims",
    family="posterior",
    applies_to=_POST,
    direction="high_is_bad",
    window=POSTERIOR_WINDOW,
    meaning="Share of latent dimensions whose KL, averaged over the inputs of the last 5 "
    "sampled steps, is below 0.01 nats: they carry (almost) no information. Shown beside the "
    "active units (which usually agree) without a default rule of its own, so one collapse "
    "does not raise two alerts.",
    what_to_try=_WHAT_TO_TRY,
    sources=_SOURCES,
)
def posterior_collapsed_dims(stats: Stats) -> float:
    n, _, _, kl_sum = _per_dim(stats)
    kl = kl_sum / n
    if not np.all(np.isfinite(kl)):
        return math.nan
    return float(np.mean(kl < COLLAPSED_KL))
