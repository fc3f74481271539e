"""Indicators of a layer's outputs: dead and saturated units (family 9), dimensional collapse
(family 2) and complete collapse (family 3) of docs/indicators.md.

Spectra come from at most 256 dimensions: a wider layer's covariance is taken after a fixed
Gaussian (JL) projection, which keeps traces and the effective rank of a low-rank signal within
a few percent; per-unit statistics (sums, sums of squares, counts) are never projected.
"""

from __future__ import annotations

import math

import numpy as np

from collapsewatch.schemas import ActivationStat as A
from collapsewatch.schemas import ProbeKind
from collapsewatch_server.indicators.catalogue import Stats, indicator
from collapsewatch_web.api_schemas.catalogue import RelativeDefault

_ACT = ProbeKind.activation
#: RankMe's epsilon (Garrido et al.): added to every normalised singular value.
RANKME_EPS = 1e-7
#: VICReg's epsilon inside the square root of the variance hinge.
VICREG_EPS = 1e-4
#: Sampled steps over which a unit must never fire (or always saturate) to count.
UNIT_WINDOW = 5
#: Steps the default rules of the collapse ratios ignore: healthy runs cross them briefly at the
#: start (a SimSiam predictor's output is near-constant for its first 100-200 steps).
WARMUP_STEPS = 200


def _vec(stats: Stats, key: str) -> np.ndarray:
    return np.asarray(stats[key], dtype=np.float64)


def _spectrum(stats: Stats, key: str = A.eig) -> np.ndarray:
    # np.maximum and one sum: a layer's record computes five spectrum indicators, and on its
    # 64 values np.clip and np.all(np.isfinite(...)) cost more than the arithmetic
    lam = np.maximum(_vec(stats, key), 0.0)
    if lam.size == 0 or not math.isfinite(float(lam.sum())):
        raise ValueError("no finite spectrum")
    return lam


def effective_rank_of(eigenvalues: np.ndarray) -> float:
    """Roy-Vetterli effective rank exp(H(p)), p the normalised eigenvalues; 0 for a zero matrix."""
    total = float(eigenvalues.sum())
    if total <= 0.0:
        return 0.0
    p = eigenvalues[eigenvalues > 0] / total
    return float(math.exp(-(p * np.log(p)).sum()))


@indicator(
    "dead_fraction",
    title="Dead units",
    family="dead_units",
    applies_to=_ACT,
    direction="high_is_bad",
    warn=0.2,
    critical=0.5,
    meaning="Fraction of units (features, channels) never positive over the last 5 sampled "
    "batches: after a ReLU they output zero and get no gradient, so they stay dead. (One batch "
    "alone over-counts units that fire on rare inputs.)",
    what_to_try="Lower the learning rate or add warm-up; use LeakyReLU/GELU; check the init "
    "scale; clip gradients.",
    sources=("Dying ReLU and Initialization (Lu et al. 2019)",),
    window=UNIT_WINDOW,
)
def dead_fraction(stats: Stats) -> float:
    pos = _vec(stats, A.pos)
    if stats[A.n] <= 0 or pos.size == 0:
        return math.nan
    return np.count_nonzero(pos <= 0) / pos.size


@indicator(
    "saturated_fraction",
    title="Saturated units",
    family="dead_units",
    applies_to=_ACT,
    direction="high_is_bad",
    warn=0.2,
    critical=0.5,
    meaning="Fraction of the units of an nn.Tanh or nn.Sigmoid saturated on every input of the "
    "last 5 sampled batches (|tanh| > 0.99; sigmoid < 0.01 or > 0.99): their gradient is "
    "under 2% of the unsaturated one, so they have stopped learning.",
    what_to_try="Lower the learning rate; normalise the inputs of the layer (BatchNorm/"
    "LayerNorm); use a smaller init scale; prefer ReLU-like units where possible.",
    sources=(
        "Understanding the difficulty of training deep feedforward neural networks "
        "(Glorot and Bengio 2010)",
    ),
    window=UNIT_WINDOW,
)
def saturated_fraction(stats: Stats) -> float:
    sat = _vec(stats, A.sat)
    n = float(stats[A.n])
    if n <= 0 or sat.size == 0:
        return math.nan
    return np.count_nonzero(sat >= n) / sat.size


@indicator(
    "nonfinite_units",
    title="Units with NaN/Inf outputs",
    family="training",
    applies_to=_ACT,
    direction="high_is_bad",
    critical=0.0,
    pending_points=1,
    meaning="Units of the layer with a NaN or infinite output on the sampled batch (read from "
    "their sums of squares, so an output above ~1e19 counts too). Anything above 0 means the "
    "forward pass has diverged.",
    what_to_try="Lower the learning rate, clip gradients, check the inputs and the loss scale "
    "(mixed precision), look for a division or log of zero.",
)
def nonfinite_units(stats: Stats) -> float:
    return float(np.sum(~np.isfinite(_vec(stats, A.sumsq))))


@indicator(
    "effective_rank",
    title="Covariance effective rank",
    family="dimensional",
    applies_to=_ACT,
    direction="low_is_bad",
    meaning="exp of the entropy of the covariance spectrum: how many directions the layer really "
    "uses. A fall means the representation squeezes into fewer dimensions.",
    what_to_try="Add a variance/covariance regulariser (VICReg), lower the learning rate, "
    "check for feature suppression by an easy shortcut.",
    sources=("LDReg", "VICReg", "Seq-VCR"),
    relative=RelativeDefault(condition="drop", percent=50.0, reference="peak"),
)
def effective_rank(stats: Stats) -> float:
    return effective_rank_of(_spectrum(stats))


@indicator(
    "effective_rank_ratio",
    title="Effective rank / room",
    family="dimensional",
    applies_to=_ACT,
    direction="low_is_bad",
    warn=0.05,
    warmup_steps=WARMUP_STEPS,
    meaning="Effective rank divided by the most the layer could have, its room: the smallest of "
    "the dimensions the spectrum covers (the width, or 256 after projection), the layer's input "
    "dimension (a 32 -> 256 layer has rank 32 at most), its live units (a pruned unit is not), "
    "and the effective rank of the model's input data (a generator fed a 2-D latent, or a "
    "network on 8 features, has few directions to spread, however wide). Below 0.05 the layer "
    "uses a twentieth of its room. A layer can read above 1: a ReLU layer spreads a few input "
    "directions over more.",
    what_to_try="As for the effective rank; compare with the run's own peak before acting.",
    sources=("LDReg", "VICReg"),
    relative=RelativeDefault(condition="drop", percent=50.0, reference="peak"),
)
def effective_rank_ratio(stats: Stats) -> float:
    lam = _spectrum(stats)
    return effective_rank_of(lam) / room(stats, lam.size)


def room(stats: Stats, covered: int) -> int:
    """The most effective rank a layer's output can have (see ``effective_rank_ratio``); the
    bounds a record lacks (older SDKs, token inputs, layers without a weight) are left out."""
    bounds = [covered]
    for key in (A.in_dim, A.live):
        if key in stats and float(stats[key]) > 0:
            bounds.append(int(stats[key]))
    if A.data_rank in stats and float(stats[A.data_rank]) > 0:
        bounds.append(math.ceil(float(stats[A.data_rank])))
    return max(1, min(bounds))


@indicator(
    "simsiam_std",
    title="Output std (complete collapse)",
    family="complete",
    applies_to=_ACT,
    direction="low_is_bad",
    warn=0.3,
    critical=0.1,
    warmup_steps=WARMUP_STEPS,
    meaning="sqrt(1 - ||mean unit vector||^2): ~1 when outputs point everywhere, 0 when every "
    "input maps to the same direction (complete collapse, invisible to centred statistics).",
    what_to_try="Restore the stop-gradient or predictor (SimSiam/BYOL), add a variance term "
    "(VICReg), check the augmentations are not too weak.",
    sources=("VICReg", "Seq-VCR", "SimSiam"),
)
def simsiam_std(stats: Stats) -> float | None:
    n = float(stats[A.n])
    if _vec(stats, A.unit_sum).size < 2:
        return None  # one unit: every unit vector is +1 or -1, "same direction" means nothing
    if n <= 0:
        return math.nan
    mean_unit = _vec(stats, A.unit_sum) / n
    return float(math.sqrt(max(0.0, 1.0 - float(mean_unit @ mean_unit))))


@indicator(
    "participation_ratio",
    title="Participation ratio",
    family="dimensional",
    applies_to=_ACT,
    direction="low_is_bad",
    relative=RelativeDefault(condition="drop", percent=50.0, reference="peak"),
    meaning="(sum lambda)^2 / sum lambda^2 of the covariance spectrum: the number of directions "
    "carrying the variance, weighted towards the strongest. Falls with dimensional collapse, "
    "faster than the effective rank when one direction comes to dominate.",
    what_to_try="As for the effective rank.",
    sources=("LDReg", "VICReg", "Seq-VCR"),
)
def participation_ratio(stats: Stats) -> float:
    trace, frob = trace_and_frobenius(stats)
    return trace**2 / frob if frob > 0 else 0.0


def trace_and_frobenius(stats: Stats) -> tuple[float, float]:
    """tr C and ||C||_F^2 of the (population) covariance of the covariance rows.

    Exact from the spectrum up to 256 units. Wider layers are seen through the projection P
    (d x k, N(0, 1/k) entries), whose spectrum mu has E sum mu^2 = ||C||^2 (k+1)/k + tr(C)^2/k
    and E (sum mu)^2 = tr(C)^2 + 2 ||C||^2 / k; solving gives unbiased estimates (the fixed P
    leaves a few % of error, less for low-rank C). Uncorrected, the participation ratio of a
    projected spectrum would read about 1 / (1/PR + 1/k).
    """
    lam = _spectrum(stats)
    k = lam.size
    trace, square = float(lam.sum()), float(lam @ lam)
    if int(stats[A.width]) <= k:
        return trace, square
    frob = (square - trace**2 / k) / ((k + 1) / k - 2 / k**2)
    frob = max(frob, square / k)  # a noisy estimate must not fall below what is certain
    return math.sqrt(max(trace**2 - 2 * frob / k, 0.0)), frob


@indicator(
    "rankme",
    title="RankMe",
    family="dimensional",
    applies_to=_ACT,
    direction="info",
    meaning="exp of the entropy of the normalised singular values of the uncentred outputs Z "
    "(Garrido et al.), computed on one sampled step in four. Unlike the covariance effective "
    "rank it counts the mean direction and misses soft collapse (a few dims carry the signal, "
    "many keep tiny variance): shown for comparison, alert on the effective rank.",
    what_to_try="As for the effective rank.",
    sources=("RankMe", "LDReg", "VICReg"),
)
def rankme(stats: Stats) -> float:
    sigma = np.sqrt(_spectrum(stats, A.eig_raw))
    total = float(sigma.sum())
    if total <= 0.0:
        return 0.0
    p = sigma / total + RANKME_EPS
    return float(math.exp(-(p * np.log(p)).sum()))


def unit_variances(stats: Stats) -> np.ndarray:
    """Per-unit variance over the rows of the record, unbiased as ``torch.var`` (VICReg)."""
    n = float(stats[A.n])
    if n < 2:
        raise ValueError("a variance needs two rows")
    s = _vec(stats, A.sum)
    with np.errstate(invalid="ignore", over="ignore"):  # diverged outputs: NaN, not a warning
        return np.clip((_vec(stats, A.sumsq) - s * s / n) / (n - 1), 0.0, None)


@indicator(
    "vicreg_variance",
    title="VICReg variance hinge",
    family="complete",
    applies_to=_ACT,
    direction="high_is_bad",
    warn=0.5,
    rule_enabled=False,
    meaning="mean_j relu(1 - sqrt(Var z_j + 1e-4)): the share of a unit std of 1 the outputs "
    "miss, VICReg's variance term. 1 when every output is the same vector. Scale-dependent: "
    "meant for embeddings trained towards unit variance. Healthy layers of other networks read "
    "0.4-0.9 (every layer of the SimSiam control, the regression output of the dead-units "
    "control), so its default rule ships disabled: enable it for a VICReg-style embedding, and "
    "judge it together with simsiam_std.",
    what_to_try="Add VICReg's variance term to the loss, restore the stop-gradient or "
    "predictor, strengthen augmentations.",
    sources=("VICReg", "Seq-VCR", "LDReg"),
)
def vicreg_variance(stats: Stats) -> float | None:
    if int(stats[A.width]) < 2:
        return None  # a regression output: one unit's scale says nothing about collapse
    std = np.sqrt(unit_variances(stats) + VICREG_EPS)
    return float(np.maximum(0.0, 1.0 - std).sum()) / std.size


@indicator(
    "vicreg_covariance",
    title="VICReg covariance term",
    family="complete",
    applies_to=_ACT,
    direction="info",
    meaning="sum_{i != j} C_ij^2 / d of the (unbiased) covariance: how much the units are "
    "correlated, VICReg's covariance term. Exact up to 256 units (from the spectrum and the "
    "covariance diagonal); wider layers estimate ||C||_F^2 from the JL-projected spectrum "
    "(debiased for the projection, a few % of ||C||_F^2 off) and subtract the exact diagonal.",
    what_to_try="Add VICReg's covariance term (decorrelation) to the loss; see the effective rank.",
    sources=("VICReg", "Seq-VCR"),
)
def vicreg_covariance(stats: Stats) -> float:
    d = int(stats[A.width])
    cov_n = float(stats[A.cov_n])
    if cov_n < 2 or d <= 0:
        return math.nan
    _, frob = trace_and_frobenius(stats)
    if d <= _spectrum(stats).size:  # not projected: the diagonal of the same rows
        diag = _vec(stats, A.cov_diag)
    else:  # the exact per-unit variances, over all rows
        n = float(stats[A.n])
        diag = unit_variances(stats) * (n - 1) / n  # population, as the spectrum
    off = frob - float(diag @ diag)
    unbias = cov_n / (cov_n - 1)
    return max(off, 0.0) * unbias**2 / d
