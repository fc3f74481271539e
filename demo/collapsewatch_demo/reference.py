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
