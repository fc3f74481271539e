"""Brute-force references: the exact value of a collapse indicator, from raw tensors.

The SDK reduces a layer's outputs to small statistics on sampled steps and the server turns
them into indicators; these functions compute the same quantities the slow, exact way, from a
layer's whole output on a fixed held-out batch (every unit, every row, no projection, no
window), so a run's truth is known at every evaluated step whatever the SDK samples.

A :class:`Reference` says which layers are measured, how, and at which value the truth crosses
the family's default threshold (docs/indicators.md). Measures take the layer's output as a ``[rows,
units]`` float64 matrix and the layer's room (see :func:`room`), which only the rank uses; a
reference that ``reads="weight"`` gets the layer's (masked) weight instead, one row per output
unit.

The explicit loggers' families are measured where the model computes what the user logs:
the code scores of a quantiser, the ``[mu | logvar]`` output of an encoder, a router's logits,
a generator's samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

#: (rows, room) -> value
Measure = Callable[[torch.Tensor, int], float]


def as_units(output: torch.Tensor, unit_dim: int) -> torch.Tensor:
    """A layer output as ``[rows, units]`` in float64: ``unit_dim`` moves last, every other
    dim (batch, positions) becomes rows."""
    out = output.detach().to(torch.float64).movedim(unit_dim, -1)
    return out.reshape(-1, out.shape[-1])


def dead_fraction(rows: torch.Tensor, room: int = 0) -> float:
    """Share of units never positive on any row: dead, once a ReLU follows."""
    return float((rows > 0).sum(0).eq(0).double().mean())


def effective_rank(rows: torch.Tensor) -> float:
    """Roy-Vetterli effective rank exp(H(p)) of the full covariance of ``rows`` (NaN when
    the rows are not all finite: a diverged layer)."""
    if not bool(torch.isfinite(rows).all()):
        return math.nan
    centred = rows - rows.mean(0)
    lam = torch.linalg.eigvalsh(centred.T @ centred / max(rows.shape[0] - 1, 1)).clamp_min(0)
    total = float(lam.sum())
    if total <= 0.0:
        return 0.0
    p = lam / total
    return math.exp(float(torch.special.entr(p).sum()))  # entr(0) = 0, no 0 * log 0


def rank_ratio(rows: torch.Tensor, room: int) -> float:
    """Effective rank over the room the layer has (:func:`room`)."""
    return effective_rank(rows) / max(room, 1)


def output_std(rows: torch.Tensor, room: int = 0) -> float:
    """SimSiam's std of the L2-normalised outputs times sqrt(d) = sqrt(1 - ||mean unit||^2):
    about 1 when outputs point everywhere, 0 when every input maps to one direction."""
    units = rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-12)
    mean = units.mean(0)
    return math.sqrt(max(0.0, 1.0 - float(mean @ mean)))


def in_dim(module: nn.Module) -> int | None:
    """What one output row is computed from: in_features, or in_channels x kernel size."""
    features = getattr(module, "in_features", None)
    if isinstance(features, int):
        return features
    channels, kernel = getattr(module, "in_channels", None), getattr(module, "kernel_size", None)
    if isinstance(channels, int) and isinstance(kernel, tuple):
        return channels * math.prod(kernel)
    return None


def live_units(module: nn.Module, width: int) -> int:
    """Output units whose weights are not all exactly zero (structured pruning removes units
    by zeroing their rows; training never makes a row exactly zero)."""
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() < 2 or weight.shape[0] != width:
        return width
    return int(weight.detach().flatten(1).ne(0).any(1).sum())


def room(module: nn.Module, width: int, data_rank: float) -> int:
    """The most effective rank a layer's output can have: its live units, its input dimension,
    and the effective rank of the network's input data (a generator after a 2-D latent cannot
    have more than about 2 directions of its own, whatever its width), rounded up."""
    bounds = [live_units(module, width), math.ceil(data_rank)]
    fan_in = in_dim(module)
    if fan_in is not None:
        bounds.append(fan_in)
    return max(1, min(bounds))


@dataclass(frozen=True)
class Reference:
    """The brute-force truth of a recipe: ``measure`` of each of ``layers`` (module names in the
    model) on the held-out batch; the run is collapsed at a step when a layer's value is beyond
    ``threshold`` (above it when ``high_is_bad``). ``indicator`` names the server indicator
    this stands for, for the report."""

    indicator: str
    measure: Measure
    threshold: float
    high_is_bad: bool
    layers: tuple[str, ...]
    #: The dim of a layer's output that holds its units: -1 for Linear, 1 for ConvNd/BatchNorm.
    unit_dim: int = -1
    #: What the measure reads: the layer's output on the held-out batch, or its weight.
    reads: Literal["output", "weight"] = "output"
    #: The explicit logger's name the recipe logs this family under, where the server keeps
    #: its series (a logger cannot take a watched module's name); None: the layers' names.
    logged_as: str | None = None

    def probe(self, layer: str) -> str:
        """The server's probe name of one of the layers."""
        return self.logged_as or layer

    #: The truth is judged from this step on (a relative indicator's first logged point).
    from_step: int = 0
    #: Whether each layer's values are taken relative to its value at ``from_step`` (so the
    #: threshold is a ratio: 0.7 for a drop of more than 30%, 1.1 for a rise of more than 10%).
    relative: bool = False

    def beyond(self, value: float) -> bool:
        """Whether ``value`` is on the collapsed side of the threshold (NaN counts)."""
        if math.isnan(value):
            return True
        return value > self.threshold if self.high_is_bad else value < self.threshold

    def worst(self, values: dict[str, float]) -> float:
        """The most collapsed of the layers' values."""
        pick = max if self.high_is_bad else min
        finite = [v for v in values.values() if not math.isnan(v)]
        return math.nan if len(finite) < len(values) else pick(finite)


def dead_units(*layers: str, unit_dim: int = -1) -> Reference:
    """Family 9: share of units never positive on the held-out batch, measured at the input of
    each ReLU (the Linear or Conv output, or the BatchNorm output when one sits in between);
    critical at more than half (the default rule's threshold)."""
    return Reference("dead_fraction", dead_fraction, 0.5, True, layers, unit_dim)


def dimensional(*layers: str, unit_dim: int = -1) -> Reference:
    """Family 2: exact covariance effective rank over the layer's room (:func:`room`),
    collapsed below 0.05 (the family's default). The server's ``effective_rank_ratio``
    divides by min(width, input dimension); this room also counts live units and the data's
    own rank, so a healthy narrow layer reads near 1 (or above: a ReLU layer can spread a few
    input directions over more)."""
    return Reference("effective_rank_ratio", rank_ratio, 0.05, False, layers, unit_dim)


def complete(*layers: str, unit_dim: int = -1) -> Reference:
    """Family 3: SimSiam's output std on the held-out batch, critical below 0.1."""
    return Reference("simsiam_std", output_std, 0.1, False, layers, unit_dim)


def code_perplexity_ratio(rows: torch.Tensor, room: int = 0) -> float:
    """Codebook perplexity over the codes that could be reached: ``rows`` hold one score per
    code (a quantiser's negative distances), each row picks its largest; exp(H(frequencies))
    divided by min(K, rows), as the server divides its window's counts."""
    counts = torch.bincount(rows.argmax(1), minlength=rows.shape[1]).double()
    p = counts[counts > 0] / counts.sum()
    return math.exp(float(torch.special.entr(p).sum())) / min(rows.shape[1], rows.shape[0])


def codebook(layer: str, logged_as: str) -> Reference:
    """Family 6: perplexity / K of the codes chosen on the held-out batch, measured on a
    layer whose output scores every code; below 0.25 (the default rule's warning)."""
    return Reference(
        "codebook_perplexity_ratio",
        code_perplexity_ratio,
        0.25,
        False,
        (layer,),
        logged_as=logged_as,
    )


def _mu_logvar(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if rows.shape[1] % 2:
        raise ValueError(f"a posterior layer gives [mu | logvar]: got an odd {rows.shape[1]} units")
    mu, logvar = rows.chunk(2, dim=1)
    return mu, logvar


def active_units(rows: torch.Tensor, room: int = 0) -> float:
    """Share of latent dimensions whose posterior mean varies with the input,
    Var_x(mu_j) > 0.01 (Burda et al.), from an encoder output ``[mu | logvar]``."""
    mu, _ = _mu_logvar(rows)
    return float((mu.var(0, unbiased=False) > 0.01).double().mean())


def total_kl(rows: torch.Tensor, room: int = 0) -> float:
    """KL(N(mu, exp(logvar)) || N(0, I)) summed over the latent dimensions, averaged over
    the rows, in nats, from an encoder output ``[mu | logvar]``."""
    mu, logvar = _mu_logvar(rows)
    return float((0.5 * (mu.square() + logvar.exp() - 1 - logvar)).sum(1).mean())


def posterior_active_units(layer: str, logged_as: str) -> Reference:
    """Family 7, partial collapse: active units / latent dims below 0.5 (the default rule's
    warning), on a layer giving ``[mu | logvar]``."""
    return Reference(
        "posterior_active_units", active_units, 0.5, False, (layer,), logged_as=logged_as
    )


def posterior_kl(layer: str, logged_as: str) -> Reference:
    """Family 7, complete collapse: total KL below 0.5 nats (the default rule's critical),
    on a layer giving ``[mu | logvar]``."""
    return Reference("posterior_kl", total_kl, 0.5, False, (layer,), logged_as=logged_as)


def load_entropy(rows: torch.Tensor, k: int = 1) -> float:
    """H(f) / log E of the share f of the top-``k`` choices each expert gets, from router
    logits ``[tokens, experts]`` (ties broken as ``torch.topk`` breaks them)."""
    counts = torch.bincount(rows.topk(k, dim=1).indices.reshape(-1), minlength=rows.shape[1])
    f = counts.double() / counts.sum()
    return float(torch.special.entr(f).sum()) / math.log(rows.shape[1])


def routing(layer: str, logged_as: str, k: int = 1) -> Reference:
    """Family 8: load entropy of a router's top-``k`` choices on the held-out tokens, measured
    on the router's logits; below 0.5 (the default rule's critical)."""
    return Reference(
        "moe_load_entropy",
        lambda rows, _room: load_entropy(rows, k),
        0.5,
        False,
        (layer,),
        logged_as=logged_as,
    )


def density(weight: torch.Tensor, room: int = 0) -> float:
    """Share of a weight's entries that are not zero (after any pruning mask)."""
    return float(weight.ne(0).double().mean())


def sparsity(*layers: str) -> Reference:
    """Family 10: density of each layer's (masked) weight, critical below 1%."""
    return Reference("density", density, 0.01, False, layers, reads="weight")


def mean_pairwise_distance(rows: torch.Tensor) -> float:
    """Mean Euclidean distance over all pairs of rows."""
    return float(torch.nn.functional.pdist(rows).mean())


def generative(layer: str, logged_as: str, real: torch.Tensor) -> Reference:
    """Family 12: the diversity ratio, mean pairwise distance of the generator's outputs on
    the held-out latents over that of ``real`` samples (each flattened); below 0.5 (the
    default rule's warning)."""
    real_distance = mean_pairwise_distance(real.detach().to(torch.float64).flatten(1))
    return Reference(
        "samples_diversity_ratio",
        lambda rows, _room: mean_pairwise_distance(rows) / real_distance,
        0.5,
        False,
        (layer,),
        logged_as=logged_as,
    )


def capture(
    model: nn.Module, names: tuple[str, ...], forward: Callable[[], object]
) -> dict[str, tuple[tuple[torch.Tensor, ...], torch.Tensor]]:
    """The positional inputs and the output of each module of ``model`` named in ``names``
    during ``forward()`` (the last call of each), as raw tensors."""
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        raise KeyError(f"no module named {missing} in the model")
    seen: dict[str, tuple[tuple[torch.Tensor, ...], torch.Tensor]] = {}
    handles = [
        modules[n].register_forward_hook(
            lambda _m, args, out, n=n: seen.__setitem__(n, (tuple(args), out))
        )
        for n in names
    ]
    try:
        forward()
    finally:
        for h in handles:
            h.remove()
    return seen


def direct(rows: torch.Tensor, room: int = 0) -> float:
    """The measure of a reference that the recipe computes from the whole model
    (``Recipe.reference_values``), never from one layer's output rows."""
    raise TypeError("this reference is computed by the recipe's reference_values")


def nc1(features: torch.Tensor, labels: torch.Tensor) -> float:
    """NC1 = tr(Sigma_W Sigma_B^+) / C of ``features`` ``[rows, d]`` by integer ``labels``,
    with the server's conventions: only classes present count, mu_G is the mean of the class
    means, Sigma_W averages over rows and Sigma_B over classes."""
    h = features.detach().to(torch.float64)
    classes = labels.unique()
    means = torch.stack([h[labels == c].mean(0) for c in classes])
    centred_rows = h - means[torch.searchsorted(classes, labels)]
    within = centred_rows.T @ centred_rows / len(h)
    m = means - means.mean(0)
    between = m.T @ m / len(classes)
    pinv = torch.linalg.pinv(between, hermitian=True, rtol=1e-7)
    return float(torch.trace(within @ pinv)) / len(classes)


def neural_collapse(*layers: str) -> Reference:
    """Family 1: NC1 of the classifier's input features on the recipe's fixed training set,
    by class; informs below 0.05 (the default rule). ``layers`` are the classifiers, as the
    SDK names its ``classes`` probe."""
    return Reference("nc1", direct, 0.05, False, layers)


def token_cosine(states: torch.Tensor) -> float:
    """Mean over sequences of the mean pairwise cosine of their tokens, ``states`` ``[batch,
    seq, dim]``: every pair of distinct positions, from the unit token vectors."""
    u = states.detach().to(torch.float64)
    u = u / u.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    t = u.shape[1]
    gram = u @ u.transpose(1, 2)
    return float(((gram.sum((1, 2)) - gram.diagonal(dim1=1, dim2=2).sum(1)) / (t * (t - 1))).mean())


def tokens(*layers: str) -> Reference:
    """Family 4: mean pairwise token cosine of each block's output (the residual stream),
    critical above 0.9. ``layers`` are the blocks."""
    return Reference("token_cosine", direct, 0.9, True, layers)


def attention_entropy(
    q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None = None, scale: float | None = None
) -> float:
    """Mean normalised attention entropy of ``softmax(q k^T * scale)``, ``q``/``k`` ``[batch,
    heads, seq, d_head]``, over every head and every query that sees at least two keys:
    ``-sum_j A_ij log A_ij / log n_i``. ``mask`` ``[seq, seq]`` or ``[batch, 1, seq, seq]``:
    True where a query may see a key (all of them when None)."""
    q, k = q.detach().to(torch.float64), k.detach().to(torch.float64)
    logits = q @ k.transpose(-1, -2) * (scale if scale is not None else q.shape[-1] ** -0.5)
    visible = torch.ones_like(logits, dtype=torch.bool) if mask is None else mask.expand_as(logits)
    probs = logits.masked_fill(~visible, -math.inf).softmax(-1)
    n = visible.sum(-1).double()
    entropy = torch.special.entr(probs).sum(-1)
    keep = n >= 2
    return float((entropy[keep] / n[keep].log()).mean())


def attention(*layers: str) -> Reference:
    """Family 5: mean normalised attention entropy of each attention layer, critical below
    0.2. ``layers`` are the modules whose forward computes the attention."""
    return Reference("attention_entropy", direct, 0.2, False, layers)


def state_norm_ratio(states: torch.Tensor, train_length: int) -> float:
    """Mean state norm over the positions of the last log2 bucket ``[L/2, L)`` of ``states``
    ``[batch, L, dim]`` (``L`` a power of two) over the mean norm at the last trained position
    ``train_length - 1``: every position, no bucket sampling."""
    norms = states.detach().to(torch.float64).norm(dim=-1)
    length = norms.shape[1]
    return float(norms[:, length // 2 :].mean() / norms[:, train_length - 1].mean())


def state(*layers: str) -> Reference:
    """Family 13: state norm ratio of each recurrent layer, warning above 2."""
    return Reference("state_norm_ratio", direct, 2.0, True, layers)


def distinct_2(token_ids: torch.Tensor) -> float:
    """Distinct bigrams over all bigrams of ``token_ids`` ``[samples, length]``, exactly."""
    pairs = torch.stack((token_ids[:, :-1], token_ids[:, 1:]), -1).reshape(-1, 2)
    return len(pairs.unique(dim=0)) / max(len(pairs), 1)


def diversity_drop(name: str, from_step: int) -> Reference:
    """Family 11: distinct-2 of the model's samples relative to its value at ``from_step``
    (the first logged generation), collapsed below 0.7 (the default's drop of 30%)."""
    return Reference(
        "text_distinct_2", direct, 0.7, False, (name,), from_step=from_step, relative=True
    )


def perplexity_rise(name: str, from_step: int) -> Reference:
    """Family 11: validation perplexity relative to its value at ``from_step`` (the first
    evaluation), collapsed above 1.1 (the default's rise of 10%)."""
    return Reference(
        "eval_perplexity", direct, 1.1, True, (name,), from_step=from_step, relative=True
    )
