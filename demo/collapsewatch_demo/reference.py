"""Brute-force references: the exact value of a collapse indicator, from raw tensors.

The SDK reduces a layer's outputs to small statistics on sampled steps and the server turns
them into indicators; these functions compute the same quantities the slow, exact way, from a
layer's whole output on a fixed held-out batch (every unit, every row, no projection, no
window), so a run's truth is known at every evaluated step whatever the SDK samples.

A :class:`Reference` says which layers are measured, how, and at which value the truth crosses
the family's default threshold (docs/indicators.md). Measures take the layer's output as a ``[rows,
units]`` float64 matrix and the layer's room (see :func:`room`), which only the rank uses.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

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
