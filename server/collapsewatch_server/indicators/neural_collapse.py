"""Neural collapse (the ``neural_collapse`` family of docs/indicators.md): NC1-NC4, CDNV, VCI,
class separation and minority collapse, from the sums of a ``classes`` record (``ClassStat``).

Conventions, the same in the brute-force tests: only classes present in the record count
(C of them), mu_G is the mean of the class means (so a batch's class imbalance does not tilt
the geometry), Sigma_W = (1/N) sum_i (h_i - mu_y)(h_i - mu_y)^T over the N labelled rows and
Sigma_B = (1/C) sum_c (mu_c - mu_G)(mu_c - mu_G)^T.

Neural collapse is often wanted (the terminal phase of training): its default rules inform.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from collapsewatch.schemas import ClassStat as S
from collapsewatch.schemas import ProbeKind
from collapsewatch_server.indicators.catalogue import Stats, indicator

_CLS = ProbeKind.classes
_FAMILY = "neural_collapse"
_PAPYAN = "Prevalence of Neural Collapse during the Terminal Phase of Deep Learning Training"
_SEEDS = (
    "Linguistic Collapse",
    "Neural Collapse in Deep Linear Networks",
    "Perturbation Analysis of Neural Collapse",
    "Mixup's Influence on Neural Collapse",
)
_TERMINAL = (
    "Usually the terminal phase of training: fine for in-distribution accuracy. If you need "
    "transfer, OOD detection or within-class diversity, stop earlier, add label smoothing or "
    "mixup, or lower the weight decay."
)


def _vec(stats: Stats, key: str) -> np.ndarray:
    return np.asarray(stats[key], dtype=np.float64).ravel()


@dataclass(frozen=True)
class _Classes:
    """The present classes of a record: counts, class means in the most exact space sent, and
    per-class within-class variances (traces)."""

    n: np.ndarray  # [C]
    means: np.ndarray  # [C x D]
    var: np.ndarray  # [C] E||h - mu_c||^2
    rows: np.ndarray  # indices of the present classes among all tracked ones

    @property
    def centred(self) -> np.ndarray:
        return self.means - self.means.mean(0)


def _classes(stats: Stats) -> _Classes | None:
    """None with fewer than two classes present: there is no geometry to judge."""
    n_all = _vec(stats, S.n)
    width = float(stats[S.width])
    sums = _vec(stats, S.sum).reshape(n_all.size, -1)
    if sums.shape[1] != width and S.basis_sum in stats:
        # JL-projected sums distort every norm by a few percent; the lagged basis holds the
        # class means up to their drift since the previous step, a second-order error
        sums = _vec(stats, S.basis_sum).reshape(n_all.size, -1)
    rows = np.flatnonzero(n_all > 0)
    if rows.size < 2:
        return None
    n = n_all[rows]
    means = sums[rows] / n[:, None]
    var = _vec(stats, S.sqnorm)[rows] / n - (means * means).sum(1)
    return _Classes(n=n, means=means, var=np.clip(var, 0.0, None), rows=rows)


def _gram_cosines(gram: np.ndarray) -> np.ndarray:
    norms = np.sqrt(np.clip(np.diag(gram), 1e-300, None))
    return gram / norms[:, None] / norms[None, :]


def _norm_spread(gram: np.ndarray) -> float:
    """std/mean of the vectors' norms, read off their Gram matrix (NC2's equinorm: 0 when all
    are equally long)."""
    norms = np.sqrt(np.clip(np.diag(gram), 0.0, None))
    return float(norms.std() / norms.mean())


def _pairs(matrix: np.ndarray) -> np.ndarray:
    return matrix[np.triu_indices(matrix.shape[0], k=1)]


def _weights(stats: Stats) -> np.ndarray:
    """Mean W W^T over the snapshots in the record (all tracked classes)."""
    c = _vec(stats, S.n).size
    return _vec(stats, S.w_gram).reshape(c, c) / float(stats[S.snapshots])


def _mean_subspace(stats: Stats) -> tuple[np.ndarray, np.ndarray, int] | None:
    """Sigma_W and Sigma_B restricted to the span of the centred class means (from the sums in
    the record's basis), and C. Restricting is exact for NC1 whenever the basis holds the class
    means (always with the identity basis); for VCI see :func:`vci`."""
    n_all = _vec(stats, S.n)
    basis_sum = _vec(stats, S.basis_sum).reshape(n_all.size, -1)
    r = basis_sum.shape[1]
    outer = _vec(stats, S.basis_outer).reshape(r, r)
    rows = np.flatnonzero(n_all > 0)
    c = rows.size
    if c < 2:
        return None
    n, sums = n_all[rows], basis_sum[rows]
    means = sums / n[:, None]
    within = (outer - sums.T @ means) / n.sum()
    centred = means - means.mean(0)
    u, sv, _ = np.linalg.svd(centred.T, full_matrices=False)
    keep = min(c - 1, int(np.sum(sv > sv[0] * 1e-7))) if sv[0] > 0 else 0
    if keep == 0:
        return None
    u = u[:, :keep]
    m = centred @ u
    return u.T @ within @ u, m.T @ m / c, c


@indicator(
    "nc1",
    title="NC1 within-class variability",
    family=_FAMILY,
    applies_to=_CLS,
    direction="low_is_bad",
    warn=0.05,
    rule_severity="info",
    rule_recovery=0.1,  # one batch's NC1 wobbles by ~2x around its trend
    meaning="tr(Sigma_W Sigma_B^+)/C on the penultimate features: within-class spread against "
    "the spread of the class means (~1 early in training). Near 0 every sample sits on its "
    "class mean: neural collapse.",
    what_to_try=_TERMINAL,
    sources=(_PAPYAN, *_SEEDS),
)
def nc1(stats: Stats) -> float | None:
    sub = _mean_subspace(stats)
    if sub is None:
        return None
    within, between, c = sub
    return float(np.trace(within @ np.linalg.pinv(between, hermitian=True))) / c


@indicator(
    "nc1_quotient",
    title="NC1 (trace quotient)",
    family=_FAMILY,
    applies_to=_CLS,
    direction="low_is_bad",
    meaning="tr Sigma_W / tr Sigma_B: the trace form of NC1, without a pseudo-inverse, so it is "
    "also exact in a projection; falls towards 0 as classes collapse onto their means.",
    what_to_try=_TERMINAL,
    sources=(_PAPYAN, *_SEEDS),
)
def nc1_quotient(stats: Stats) -> float | None:
    cl = _classes(stats)
    if cl is None:
        return None
    within = float((cl.n * cl.var).sum() / cl.n.sum())
    between = float((cl.centred**2).sum() / cl.n.size)
    return within / between if between > 0 else math.inf


@indicator(
    "cdnv",
    title="CDNV (class-distance normalised variance)",
    family=_FAMILY,
    applies_to=_CLS,
    direction="low_is_bad",
    meaning="Mean over pairs of classes of (var_c + var_c') / (2 ||mu_c - mu_c'||^2), var_c the "
    "within-class variance: how much two classes overlap. Tends to 0 under neural collapse.",
    what_to_try=_TERMINAL,
    sources=("On the Role of Neural Collapse in Transfer Learning", *_SEEDS),
)
def cdnv(stats: Stats) -> float | None:
    cl = _classes(stats)
    if cl is None:
        return None
    i, j = np.triu_indices(cl.n.size, k=1)
    dist = ((cl.means[i] - cl.means[j]) ** 2).sum(1)
    return float(np.mean((cl.var[i] + cl.var[j]) / (2 * dist)))


def _centred_gram(stats: Stats) -> np.ndarray | None:
    cl = _classes(stats)
    return None if cl is None else cl.centred @ cl.centred.T


@indicator(
    "nc2_equinorm",
    title="NC2 equinorm of class means",
    family=_FAMILY,
    applies_to=_CLS,
    direction="low_is_bad",
    meaning="std/mean of the norms of the centred class means: 0 when every class mean is as far "
    "from the global mean as the others (the simplex ETF of neural collapse).",
    what_to_try=_TERMINAL,
    sources=(_PAPYAN, *_SEEDS),
)
def nc2_equinorm(stats: Stats) -> float | None:
    gram = _centred_gram(stats)
    if gram is None:
        return None
    return _norm_spread(gram)


@indicator(
    "nc2_equinorm_w",
    title="NC2 equinorm of classifier rows",
    family=_FAMILY,
    applies_to=_CLS,
    direction="low_is_bad",
    meaning="std/mean of the norms of the classifier's rows (every tracked class): 0 when all "
    "classes get rows of equal length, as in neural collapse.",
    what_to_try=_TERMINAL,
    sources=(_PAPYAN, *_SEEDS),
)
def nc2_equinorm_w(stats: Stats) -> float:
    return _norm_spread(_weights(stats))


@indicator(
    "nc2_equiangularity",
    title="NC2 equiangularity",
    family=_FAMILY,
    applies_to=_CLS,
    direction="low_is_bad",
    meaning="Standard deviation of the pairwise cosines of the centred class means: 0 when all "
    "pairs of classes are at the same angle.",
    what_to_try=_TERMINAL,
    sources=(_PAPYAN, *_SEEDS),
)
def nc2_equiangularity(stats: Stats) -> float | None:
    gram = _centred_gram(stats)
    return None if gram is None else float(_pairs(_gram_cosines(gram)).std())


@indicator(
    "nc2_max_angle",
    title="NC2 max-angle",
    family=_FAMILY,
    applies_to=_CLS,
    direction="low_is_bad",
    meaning="Mean |cos + 1/(C-1)| over pairs of centred class means: 0 when the means are as far "
    "apart as C vectors can be (cosine -1/(C-1), a simplex).",
    what_to_try=_TERMINAL,
    sources=(_PAPYAN, *_SEEDS),
)
def nc2_max_angle(stats: Stats) -> float | None:
    gram = _centred_gram(stats)
    if gram is None:
        return None
    return float(np.mean(np.abs(_pairs(_gram_cosines(gram)) + 1.0 / (gram.shape[0] - 1))))


@indicator(
    "nc2_etf_error",
    title="NC2 distance to a simplex ETF",
    family=_FAMILY,
    applies_to=_CLS,
    direction="low_is_bad",
    meaning="|| M M^T/||M M^T||_F - (I - 11^T/C)/sqrt(C-1) ||_F for the centred class means M: "
    "0 when they form a simplex equiangular tight frame.",
    what_to_try=_TERMINAL,
    sources=(_PAPYAN, *_SEEDS),
)
def nc2_etf_error(stats: Stats) -> float | None:
    gram = _centred_gram(stats)
    if gram is None:
        return None
    c = gram.shape[0]
    etf = (np.eye(c) - 1.0 / c) / math.sqrt(c - 1)
    return float(np.linalg.norm(gram / np.linalg.norm(gram) - etf))


@indicator(
    "nc3",
    title="NC3 self-duality",
    family=_FAMILY,
    applies_to=_CLS,
    direction="low_is_bad",
    meaning="|| W/||W||_F - M/||M||_F ||_F^2 between the classifier rows and the centred class "
    "means (present classes): 0 when the classifier aligns with the class means.",
    what_to_try=_TERMINAL,
    sources=(_PAPYAN, *_SEEDS),
)
def nc3(stats: Stats) -> float | None:
    cl = _classes(stats)
    if cl is None:
        return None
    c_all = _vec(stats, S.n).size
    rows = cl.rows
    w_norm2 = float(np.trace(_weights(stats)[np.ix_(rows, rows)]))
    # w_sum[i, j] = w_i . s_j summed over forward calls: w_i . mu_j = w_sum[i, j] / n_j
    w_mu = _vec(stats, S.w_sum).reshape(c_all, c_all)[np.ix_(rows, rows)] / cl.n[None, :]
    inner = float(np.trace(w_mu) - w_mu.mean(1).sum())
    m_norm2 = float((cl.centred**2).sum())
    if w_norm2 <= 0 or m_norm2 <= 0:
        return math.nan
    return 2.0 - 2.0 * inner / math.sqrt(w_norm2 * m_norm2)


@indicator(
    "nc4",
    title="NC4 agreement with nearest class mean",
    family=_FAMILY,
    applies_to=_CLS,
    direction="low_is_bad",
    meaning="Fraction of samples where the classifier's argmax differs from the nearest class "
    "mean (of the previous sampled step): 0 when the network behaves as a nearest-class-mean "
    "classifier, as in neural collapse.",
    what_to_try=_TERMINAL,
    sources=(_PAPYAN, *_SEEDS),
)
def nc4(stats: Stats) -> float | None:
    total = float(stats[S.ncc_n])
    return float(stats[S.ncc_miss]) / total if total > 0 else None


@indicator(
    "vci",
    title="VCI (variability collapse index)",
    family=_FAMILY,
    applies_to=_CLS,
    direction="low_is_bad",
    warn=0.05,
    rule_severity="info",
    rule_recovery=0.1,
    meaning="1 - tr(Sigma_T^+ Sigma_B)/min(d, C-1), Sigma_T = Sigma_W + Sigma_B, in the span of "
    "the class means: the share of the feature variance along the class means that is not "
    "between-class. ~0.45 early in training, 0 under full variability collapse.",
    what_to_try=_TERMINAL,
    sources=("Quantifying the Variability Collapse of Neural Networks", *_SEEDS),
)
def vci(stats: Stats) -> float | None:
    """In the span of the class means: on a batch with fewer rows than dimensions the full-width
    form is 0 whatever the network does (a linear map fits N < d points exactly)."""
    sub = _mean_subspace(stats)
    if sub is None:
        return None
    within, between, c = sub
    explained = float(np.trace(np.linalg.pinv(within + between, hermitian=True) @ between))
    return 1.0 - explained / min(int(stats[S.width]), c - 1)


@indicator(
    "class_separation",
    title="Class separation R^2",
    family=_FAMILY,
    applies_to=_CLS,
    direction="high_is_bad",
    meaning="1 - mean within-class cosine distance / mean overall cosine distance of the "
    "features: 1 when every class is a single direction (class collapse). High separation "
    "goes with features that transfer worse.",
    what_to_try="If the features must transfer, prefer a loss that keeps within-class "
    "diversity (softmax without label smoothing, contrastive with augmentations), or stop "
    "earlier.",
    sources=(
        "Why Do Better Loss Functions Lead to Less Transferable Features?",
        "Which Features are Learnt by Contrastive Learning?",
        "MaxSup",
    ),
)
def class_separation(stats: Stats) -> float | None:
    n_all = _vec(stats, S.n)
    rows = np.flatnonzero(n_all > 0)
    if rows.size < 2:
        return None
    # Gram of the per-class mean unit vectors: the part in the lagged basis (if sent) plus the
    # projected rest, orthogonal to it
    gram = np.zeros((rows.size, rows.size))
    for key in (S.unit_sum, S.unit_basis_sum):
        if key in stats:
            means = _vec(stats, key).reshape(n_all.size, -1)[rows] / n_all[rows, None]
            gram += means @ means.T
    within = 1.0 - float(np.mean(np.diag(gram)))
    total = 1.0 - float(gram.mean())
    return 1.0 - within / total if total > 0 else math.nan


#: The rarer half of the classes is a minority when seen at most this share as often as the rest.
MINORITY_SHARE = 1 / 3
#: Standard normal quantile of the chi-square test that the counts are not balanced (p < 0.001).
_Z_0001 = 3.09


def imbalanced(counts: np.ndarray, rare: np.ndarray) -> bool:
    """Whether class ``counts`` show a minority: the ``rare`` classes' mean count at most
    :data:`MINORITY_SHARE` of the others', and a chi-square statistic against equal counts
    past its 0.999 quantile (Wilson-Hilferty), so a small balanced batch's noise is not one."""
    total, c = float(counts.sum()), counts.size
    others = np.setdiff1d(np.arange(c), rare)
    if total <= 0 or others.size == 0:
        return False
    if counts[rare].mean() > MINORITY_SHARE * counts[others].mean():
        return False
    expected = total / c
    chi2 = float(((counts - expected) ** 2).sum() / expected)
    df = c - 1
    quantile = df * (1 - 2 / (9 * df) + _Z_0001 * math.sqrt(2 / (9 * df))) ** 3
    return chi2 > quantile


@indicator(
    "minority_collapse",
    title="Minority collapse",
    family=_FAMILY,
    applies_to=_CLS,
    direction="high_is_bad",
    warn=0.9,
    meaning="Largest cosine between the classifier rows of the rarer half of the classes (by "
    "their counts in the record): near 1 the rare classes share one direction and cannot be "
    "told apart (long-tailed training). Computed only where the record's classes are "
    "imbalanced: the rarer half seen at most a third as often as the rest, and the counts "
    "unlikely under balanced classes (chi-square, p < 0.001). On balanced data the rarer half "
    "is sampling noise, and two similar classes' rows read high without any minority.",
    what_to_try="Re-balance: class-balanced sampling or loss re-weighting, logit adjustment, "
    "a fixed ETF classifier, or decoupled classifier re-training.",
    sources=(
        "Exploring Deep Neural Networks via Layer-Peeled Model: Minority Collapse in "
        "Imbalanced Training",
        "Inducing Neural Collapse in Deep Long-tailed Learning",
        "FedLoGe",
    ),
)
def minority_collapse(stats: Stats) -> float | None:
    n_all = _vec(stats, S.n)
    rare = np.argsort(n_all, kind="stable")[: math.ceil(n_all.size / 2)]
    if rare.size < 2 or not imbalanced(n_all, rare):
        return None
    cos = _gram_cosines(_weights(stats)[np.ix_(rare, rare)])
    return float(_pairs(cos).max())
