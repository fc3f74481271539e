"""Generative mode collapse (the ``generative`` family of docs/indicators.md), from the statistics
of ``log_samples`` (probe kind ``samples``): how spread out generated samples are next to real
ones, and how many directions they use.

The diversity ratio divides two unbiased estimates of mean pairwise distances (each from the
pairs within single calls), so it is ~1 for a generator that matches the data whatever the
data's scale, and falls towards 0 when the samples gather on a few modes. It measures spread,
not coverage: samples smeared between the modes read as diverse.
"""

from __future__ import annotations

import numpy as np

from collapsewatch.schemas import ProbeKind
from collapsewatch.schemas import SampleStat as S
from collapsewatch_server.indicators.activations import effective_rank_of
from collapsewatch_server.indicators.catalogue import Stats, indicator

_SMP = ProbeKind.samples
_SOURCES = (
    "Combating Mode Collapse in GANs via Manifold Entropy Estimation",
    "Taming Mode Collapse in Score Distillation",
)
#: Steps the default rule ignores: an untrained generator maps every z near one point (the
#: ``gan_mode_collapse`` control reads 0.03-0.08 at step 0), and healthy GANs can take a while
#: to spread (with the minibatch-std feature at D's hidden layer instead of its input, that
#: control read as low as 0.18, and below 0.5 as late as step 850, seeds 1-4).
WARMUP_STEPS = 1000
#: The default rule resolves only above this: a collapsed GAN hops between modes and its ratio
#: jumps for single checks; a generator that really spreads again reads ~1.
RECOVERY = 0.8


def _spectrum(stats: Stats, key: str) -> np.ndarray:
    lam = np.clip(np.asarray(stats[key], dtype=np.float64), 0.0, None)
    if lam.size == 0 or not np.all(np.isfinite(lam)):
        raise ValueError("no finite spectrum")
    return lam


def _mean_distance(stats: Stats, dist: str, pairs: str) -> float | None:
    count = float(stats[pairs])
    return float(stats[dist]) / count if count > 0 else None


@indicator(
    "samples_diversity_ratio",
    title="Diversity ratio (generated / real)",
    family="generative",
    applies_to=_SMP,
    direction="low_is_bad",
    warn=0.5,
    warmup_steps=WARMUP_STEPS,
    rule_recovery=RECOVERY,
    meaning="Mean pairwise distance of the generated samples divided by that of the real "
    "(reference) samples. About 1 when the generator spreads like the data; below 0.5 the "
    "samples crowd together (mode collapse: many inputs z give the same few outputs). Samples "
    "spread between the modes read as diverse too: look at them when it recovers.",
    what_to_try="Minibatch discrimination or a minibatch-std feature in the discriminator, a "
    "gradient penalty or spectral normalisation, a slower generator (lower its learning rate "
    "or take more discriminator steps), unrolled or entropy-regularised objectives.",
    sources=_SOURCES,
)
def samples_diversity_ratio(stats: Stats) -> float | None:
    generated = _mean_distance(stats, S.pair_dist, S.pairs)
    real = _mean_distance(stats, S.ref_pair_dist, S.ref_pairs)
    if generated is None or real is None or real == 0.0:
        return None  # single samples or identical real ones: nothing to compare
    return generated / real


@indicator(
    "samples_effective_rank",
    title="Effective rank of the generated samples",
    family="generative",
    applies_to=_SMP,
    direction="info",
    meaning="exp of the entropy of the covariance spectrum of the generated samples (each "
    "flattened; JL-projected to 256 dimensions when wider): how many directions they vary "
    "in. Scale-free, so a generator stuck on one isotropic blob keeps the rank of the data.",
    what_to_try="Compare with the real samples (samples_rank_ratio) and with earlier steps.",
    sources=_SOURCES,
)
def samples_effective_rank(stats: Stats) -> float:
    return effective_rank_of(_spectrum(stats, S.eig))


@indicator(
    "samples_rank_ratio",
    title="Effective rank, generated / real",
    family="generative",
    applies_to=_SMP,
    direction="low_is_bad",
    meaning="Effective rank of the generated samples divided by that of the real ones (the "
    "same projection for both): the share of the data's directions the generator uses. About "
    "1 when healthy; a generator that collapses onto a lower-dimensional set falls. No default "
    "threshold: mode collapse onto full-dimensional blobs (the 2-D ring of Gaussians) keeps it "
    "near 1, so the diversity ratio carries the alert.",
    what_to_try="As for the diversity ratio.",
    sources=_SOURCES,
)
def samples_rank_ratio(stats: Stats) -> float | None:
    real = effective_rank_of(_spectrum(stats, S.ref_eig))
    if real <= 0.0:
        return None  # identical real samples: no directions to compare with
    generated = effective_rank_of(_spectrum(stats, S.eig))
    return generated / real
