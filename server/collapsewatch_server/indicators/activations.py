"""Indicators of a layer's outputs: dead units (family 9), dimensional collapse (family 2) and
complete collapse (family 3) of ../shared/INDICATORS.md."""

from __future__ import annotations

import math

import numpy as np

from collapsewatch.schemas import ActivationStat as A
from collapsewatch.schemas import ProbeKind
from collapsewatch_server.indicators.registry import Stats, indicator

_ACT = ProbeKind.activation


def _vec(stats: Stats, key: str) -> np.ndarray:
    return np.asarray(stats[key], dtype=np.float64)


def _spectrum(stats: Stats) -> np.ndarray:
    lam = np.clip(_vec(stats, A.eig), 0.0, None)
    if lam.size == 0 or not np.all(np.isfinite(lam)):
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
    meaning="Fraction of units (features, channels) never positive on the sampled batch: after a "
    "ReLU they output zero and get no gradient, so they stay dead.",
    what_to_try="Lower the learning rate or add warm-up; use LeakyReLU/GELU; check the init "
    "scale; clip gradients.",
    sources=("INDICATORS.md family 9",),
)
def dead_fraction(stats: Stats) -> float:
    pos = _vec(stats, A.pos)
    if stats[A.n] <= 0 or pos.size == 0:
        return math.nan
    return float(np.mean(pos <= 0))


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
)
def effective_rank(stats: Stats) -> float:
    return effective_rank_of(_spectrum(stats))


@indicator(
    "effective_rank_ratio",
    title="Effective rank / width",
    family="dimensional",
    applies_to=_ACT,
    direction="low_is_bad",
    warn=0.05,
    meaning="Effective rank divided by the dimensions the spectrum covers (the width, or 256 "
    "after projection): below 0.05 the layer uses a twentieth of its room.",
    what_to_try="As for the effective rank; compare with the run's own peak before acting.",
    sources=("LDReg", "VICReg"),
)
def effective_rank_ratio(stats: Stats) -> float:
    lam = _spectrum(stats)
    return effective_rank_of(lam) / lam.size


@indicator(
    "simsiam_std",
    title="Output std (complete collapse)",
    family="complete",
    applies_to=_ACT,
    direction="low_is_bad",
    warn=0.3,
    critical=0.1,
    meaning="sqrt(1 - ||mean unit vector||^2): ~1 when outputs point everywhere, 0 when every "
    "input maps to the same direction (complete collapse, invisible to centred statistics).",
    what_to_try="Restore the stop-gradient or predictor (SimSiam/BYOL), add a variance term "
    "(VICReg), check the augmentations are not too weak.",
    sources=("VICReg", "Seq-VCR", "SimSiam"),
)
def simsiam_std(stats: Stats) -> float:
    n = float(stats[A.n])
    if n <= 0:
        return math.nan
    mean_unit = _vec(stats, A.unit_sum) / n
    return float(math.sqrt(max(0.0, 1.0 - float(mean_unit @ mean_unit))))
