"""Probe kinds and the names of the statistics inside ``StatRecord.stats``, per kind.

The SDK fills these, the server's indicators read them. Every statistic is a sum over rows,
forward calls, steps and ranks unless :data:`MERGE` (at the end, beside the definitions) says
otherwise: a spectrum or a size keeps the newest value, a sketch or a maximum merges by maximum.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Final, Literal


class ProbeKind(StrEnum):
    """What a probe observes; it decides which indicators apply to its records."""

    activation = "activation"  # outputs of a Linear/Conv layer
    parameter = "parameter"  # one parameter tensor: norms of weight, gradient and update
    loss = "loss"  # the training loss
    scalar = "scalar"  # anything the user logs
    classes = "classes"  # penultimate features by class and the classifier (neural collapse)
    tokens = "tokens"  # a block's [batch, seq, dim] output: token uniformity, layer similarity
    # explicit loggers and attention modules (collapse families 5-8 and 11-13)
    attention = "attention"  # attention per head (nn.MultiheadAttention, log_attention)
    codes = "codes"  # VQ code indices (log_codes)
    posterior = "posterior"  # a Gaussian posterior's mu and log-variance (log_posterior)
    routing = "routing"  # MoE router logits (log_routing)
    text = "text"  # generated token ids (log_tokens)
    eval = "eval"  # validation NLL sums on fixed data (log_eval)
    samples = "samples"  # generated samples beside real ones (log_samples)
    state = "state"  # recurrent / state-space states by position (log_state)


class ActivationStat(StrEnum):
    """Statistics of a layer's output on one sampled step (rows = samples x positions)."""

    n = "n"  # rows observed
    width = "width"  # d, the number of units (features / channels)
    sum = "sum"  # [d] per-unit sum
    sumsq = "sumsq"  # [d] per-unit sum of squares
    pos = "pos"  # [d] per-unit count of positive values
    unit_sum = "unit_sum"  # [d] sum of the L2-normalised rows
    eig = "eig"  # [k] covariance eigenvalues (k = min(d, 256); JL-projected when d > 256)
    cov_n = "cov_n"  # rows that entered the covariance
    cov_diag = "cov_diag"  # [k] diagonal of that covariance (its per-dimension variances)
    eig_raw = "eig_raw"  # [k] eigenvalues of the uncentred Z^T Z / n (RankMe), every 4th sample
    sat = "sat"  # [d] per-unit count of saturated values (Tanh/Sigmoid outputs only)
    in_dim = "in_dim"  # the layer's input dimension (in_features, in_channels x kernel)
    live = "live"  # output units whose weights are not all zero (a pruned unit is not)
    data_rank = "data_rank"  # effective rank of the model's input data, the latest measured


class ParameterStat(StrEnum):
    """Statistics of one parameter tensor on one sampled step."""

    weight_norm = "weight_norm"  # ||w|| before the optimizer step
    grad_norm = "grad_norm"  # ||g||
    update_norm = "update_norm"  # ||w_after - w_before||; absent without an optimizer
    numel = "numel"
    # Every 5th sampled step (sparsity of weights with 2+ dims, counts of every parameter):
    abs_sqrt_sum = "abs_sqrt_sum"  # sum |w|^0.5, i.e. ||w||_0.5 ** 0.5
    abs_sum = "abs_sum"  # ||w||_1
    nonzero = "nonzero"  # count of w != 0
    weight_nan = "weight_nan"
    weight_inf = "weight_inf"
    grad_nan = "grad_nan"
    grad_inf = "grad_inf"


class TokenStat(StrEnum):
    """Statistics of a block's ``[batch, seq, dim]`` output (probe kind ``tokens``) on one
    sampled step. Padded positions (key padding mask) are left out; ``u`` are unit token
    states, ``T`` a sequence's length."""

    seqs = "seqs"  # sequences observed
    tokens = "tokens"  # sum of T
    pairs = "pairs"  # sum of T (T - 1): ordered token pairs within sequences
    usum_sq = "usum_sq"  # sum over sequences of ||sum_t u_t||^2
    sq = "sq"  # sum of ||x_t||^2
    resid_sq = "resid_sq"  # sum over sequences of ||X - 1 xbar^T||_F^2
    io_cos = "io_cos"  # sum over tokens of cos(block input, block output)
    io_tokens = "io_tokens"  # tokens in io_cos
    # [16] per log2 length bucket b (2^b <= T < 2^(b+1)); pairs are within one sampled step:
    len_n = "len_n"  # sequences
    len_pairs = "len_pairs"  # ordered pairs of sequences
    len_usum_sq = "len_usum_sq"  # ||sum of unit mean-pooled sequence embeddings||^2


class LossStat(StrEnum):
    """The loss over the steps since the previous sampled step."""

    mean = "mean"
    max = "max"
    count = "count"  # type: ignore[assignment]  # shadows str.count on purpose


class ClassStat(StrEnum):
    """Penultimate features by class and the classifier on one sampled step (probe kind
    ``classes``, neural collapse). C classes are tracked: all the classifier's outputs, or the
    64 most frequent labels of a larger one; d is the feature width. Sums add up across forward
    calls and ranks; ``basis_*`` only between records made in the same basis."""

    width = "width"  # d
    classes = "classes"  # C
    n = "n"  # [C] labelled rows per class
    sqnorm = "sqnorm"  # [C] per-class sum of ||h||^2
    sum = "sum"  # [C x d] per-class sum of h; [C x 256] JL-projected when C*d > 65536
    unit_sum = "unit_sum"  # [C x k] per-class sum of h/||h||; k = min(d, 256), JL above 256
    # (then, with a lagged basis, of the part orthogonal to it: unit_basis_sum holds the rest)
    # the basis: the identity when d <= 128 (r = d), else an orthonormal basis of the previous
    # sampled step's class means (r = C); absent on a first step with d > 128
    basis_sum = "basis_sum"  # [C x r] per-class sum of the coordinates of h in the basis
    basis_outer = "basis_outer"  # [r x r] sum of their outer products
    unit_basis_sum = "unit_basis_sum"  # [C x r] unit sums in the lagged basis (d > 256)
    ncc_miss = "ncc_miss"  # rows where argmax(logits) != the nearest previous class mean
    ncc_n = "ncc_n"  # rows compared (absent on the first step)
    w_gram = "w_gram"  # [C x C] W W^T of the classifier rows, summed over snapshots
    w_sum = "w_sum"  # [C x C] W S^T: rows against the class sums (per forward, not snapshot)
    bias = "bias"  # [C] the classifier's bias summed over snapshots (absent without one)
    snapshots = "snapshots"  # classifier snapshots in w_gram and bias (one per record)


class AttentionStat(StrEnum):
    """Attention probabilities of one layer (probe kind ``attention``) on one sampled step, H
    heads, for a sample of at most 4 sequences x 64 queries per call. A query's entropy
    ``-sum_j A_ij log A_ij`` is normalised by the log of the number of keys it may see (masked
    keys excluded); queries seeing fewer than two keys are left out. For
    ``nn.MultiheadAttention`` the probabilities are recomputed from the captured inputs."""

    heads = "heads"  # H (not summed)
    queries = "queries"  # [H] queries whose entropy entered ent_sum
    ent_sum = "ent_sum"  # [H] sum of the queries' normalised entropies
    # per layer, not a sum (the newest record's value in a window): only nn.MultiheadAttention
    qk_sigma = "qk_sigma"  # [H] spectral norm of W_Q^h W_K^h^T per head, exact (from Grams)


class CodeStat(StrEnum):
    """VQ code usage (probe kind ``codes``): how often each of K codes was chosen over the
    calls of one sampled step (a window of steps gives utilisation and perplexity)."""

    codes = "codes"  # K, the codebook size (not summed)
    counts = "counts"  # [K] times each code was chosen
    n = "n"  # indices in range 0..K-1, the sum of counts
    out_of_range = "out_of_range"  # indices outside 0..K-1 (negatives are often padding)


class PosteriorStat(StrEnum):
    """A diagonal Gaussian posterior q(z|x) = N(mu, exp(logvar)) (probe kind ``posterior``),
    per latent dimension j over the rows (samples) of the sampled step; every dimension of
    ``mu`` after the first (the batch) is a latent dimension."""

    n = "n"  # rows
    dims = "dims"  # latent dimensions (not summed)
    mu_sum = "mu_sum"  # [dims] sum of mu_j
    mu_sq = "mu_sq"  # [dims] sum of mu_j^2 (with mu_sum: Var_x(E_q[z_j]) for active units)
    kl_sum = "kl_sum"  # [dims] sum of KL(q(z_j|x) || N(0, 1)) = 1/2 (mu^2 + var - 1 - logvar)


class RoutingStat(StrEnum):
    """A mixture-of-experts router (probe kind ``routing``): E experts, each token sent to its
    top-k experts by the router logits, as the model does. Every call of a step has the same E
    and k."""

    experts = "experts"  # E (not summed)
    k = "k"  # experts per token (not summed)
    tokens = "tokens"  # tokens routed (rows of the logits)
    counts = "counts"  # [E] top-k choices that went to each expert (sums to k * tokens)
    prob_sum = "prob_sum"  # [E] sum over tokens of the router's softmax probability
    z_sum = "z_sum"  # sum over tokens of logsumexp(logits)^2 (the router z-loss times tokens)
    dropped = "dropped"  # choices past the capacity, per call, when log_routing got capacity=


class TextStat(StrEnum):
    """Generated token ids (probe kind ``text``): diversity of the samples of one call (or of
    the calls of one step). Negative ids are padding; n-grams that touch padding are left out.
    Distinct n-gram counts come from HyperLogLog sketches of 64-bit n-gram hashes (4096
    registers, about 1.6% standard error), which merge by maximum, not by addition."""

    sequences = "sequences"
    tokens = "tokens"
    unigrams = "unigrams"  # [65536] count of each token id modulo 65536 (exact below that)
    ngrams_2 = "ngrams_2"  # bigrams (a sequence of T tokens has T - 1)
    ngrams_3 = "ngrams_3"
    hll_2 = "hll_2"  # [4096] HyperLogLog registers of the distinct bigrams (merge: max)
    hll_3 = "hll_3"  # [4096] ... of the distinct trigrams (merge: max)
    rep_sum = "rep_sum"  # sum over sequences of 1 - distinct 4-grams / 4-grams (seq-rep-4)
    rep_seqs = "rep_seqs"  # sequences with at least one 4-gram (those in rep_sum)
    generation = "generation"  # the self-consuming round, when given (the newest; not summed)


class EvalStat(StrEnum):
    """Negative log-likelihood on fixed real validation data (probe kind ``eval``)."""

    nll_sum = "nll_sum"  # summed NLL in nats
    tokens = "tokens"  # tokens (or samples) it is summed over


class SampleStat(StrEnum):
    """Generated samples, flattened to vectors, and real ones (probe kind ``samples``).
    Pairwise distances are between the samples of one call (up to 512 of them, evenly spaced).
    The ``ref_*`` statistics are those of the record's own ``reference`` samples, or, in a
    record without any, those of the last record that had some (absent before the first)."""

    n = "n"  # generated samples
    pair_dist = "pair_dist"  # sum of Euclidean distances over pairs of samples of one call
    pairs = "pairs"  # pairs in pair_dist
    ref_pair_dist = "ref_pair_dist"  # the same for the real (reference) samples
    ref_pairs = "ref_pairs"
    cov_n = "cov_n"  # samples in the covariance
    eig = "eig"  # [k] covariance eigenvalues of the generated samples (JL-projected past 256)
    ref_cov_n = "ref_cov_n"  # real samples in their covariance
    ref_eig = "ref_eig"  # [k] covariance eigenvalues of the real samples (the same projection)


class StateStat(StrEnum):
    """Recurrent or state-space states by position (probe kind ``state``), per log2 position
    bucket b (positions 2^b <= t < 2^(b+1); bucket 0 also holds t = 0)."""

    count = "count"  # type: ignore[assignment]  # [32] states per bucket (shadows str.count)
    norm_sum = "norm_sum"  # [32] sum of ||h_t||
    max_abs = "max_abs"  # [32] max_j |h_t,j| (merge: max)
    train_length = "train_length"  # the training sequence length, when given (not summed)


#: How a statistic merges when records are combined (the calls of one step, ranks, a window of
#: sampled steps): ``sum`` adds, ``max`` keeps the element-wise maximum, ``last`` keeps the
#: newest record's value (sizes, spectra and other values that describe one record).
MergeKind = Literal["sum", "max", "last"]

#: The statistics that do not merge by addition; every other one is a sum. Statistics of one
#: name merge alike in every probe kind (``eig`` of activations and of samples), so one entry
#: serves them all. The loss record (mean and max since the previous sampled step) is never
#: merged.
MERGE: Final[Mapping[str, MergeKind]] = {
    ActivationStat.width: "last",
    ActivationStat.in_dim: "last",
    ActivationStat.live: "last",
    ActivationStat.data_rank: "last",
    ActivationStat.eig: "last",
    ActivationStat.eig_raw: "last",
    ActivationStat.cov_diag: "last",
    SampleStat.ref_eig: "last",
    ClassStat.classes: "last",
    AttentionStat.heads: "last",
    AttentionStat.qk_sigma: "last",
    CodeStat.codes: "last",
    PosteriorStat.dims: "last",
    RoutingStat.experts: "last",
    RoutingStat.k: "last",
    TextStat.generation: "last",
    StateStat.train_length: "last",
    TextStat.hll_2: "max",
    TextStat.hll_3: "max",
    StateStat.max_abs: "max",
}


def merge_kind(stat: str) -> MergeKind:
    """How the statistic named ``stat`` merges across records (see :data:`MERGE`)."""
    return MERGE.get(stat, "sum")
