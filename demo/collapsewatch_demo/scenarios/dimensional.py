"""Scenario ``dimensional`` (the ``dimensional`` family): VICReg without its covariance term, and a
control.

No recipe in the indicator catalogue (docs/indicators.md), so this one follows the VICReg
paper's ablation: the variance term alone keeps every embedding dimension's std at 1 (no
complete collapse), but without the covariance term nothing stops all dimensions from carrying
the same few directions, and the embedding collapses into a handful of dimensions.

Views and encoder as ``complete_collapse`` (30% masking plus noise; encoder 96-256 (BatchNorm,
ReLU) -64, probe ``encoder.fc2``) on a richer input, a 48-D manifold in 96-D, so that the
embedding has room for many directions; no predictor, the VICReg loss 25 invariance + 25
variance + nu covariance, SGD lr 0.05 with momentum 0.9, batch 256, 400 steps.

- Collapse: nu = 0. ``effective_rank_ratio`` falls below 0.05 by step 84-104 and stays at
  0.025-0.035 after the rule's 200-step warm-up (seeds 0-2), while ``simsiam_std`` stays high:
  a dimensional collapse, not a complete one.
- Control: nu = 1 (VICReg as published): the ratio stays at 0.47-0.53 after step 200.

The loss is an ``nn.Module`` criterion, so the SDK's hook sees it. Each run trains in about
2 s on one CPU thread plus what the SDK costs.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from collapsewatch_demo import reference
from collapsewatch_demo.data import Manifold
from collapsewatch_demo.scenarios.complete_collapse import ManifoldViews, manifold_encoder
from collapsewatch_demo.scenarios.registry import Scenario, register

INVARIANCE, VARIANCE = 25.0, 25.0
#: The input: a 48-D manifold in 96-D, so that the 64-D embedding has room for ~45 directions
#: (``effective_rank_ratio`` divides by the input data's effective rank): on the 8-D manifold
#: of ``complete_collapse`` a collapse to 1-2 directions still read 0.06-0.08 of its room.
IN = 96
DATA = Manifold(48, IN, task_seed=1234, spread=1.0)


def encoder() -> nn.Module:
    """``complete_collapse``'s encoder on 96 inputs (96-256(BN)-64, as ``encoder``), without a
    predictor."""
    return nn.Sequential(OrderedDict(encoder=manifold_encoder(IN)))


class VICRegLoss(nn.Module):
    """VICReg: invariance (MSE between views), variance hinge per dim and, weighted by
    ``covariance``, the off-diagonal covariance."""

    def __init__(self, covariance: float) -> None:
        super().__init__()
        self.covariance = covariance

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        def variance(z: torch.Tensor) -> torch.Tensor:
            return F.relu(1 - torch.sqrt(z.var(0) + 1e-4)).mean()

        def off_diagonal(z: torch.Tensor) -> torch.Tensor:
            z = z - z.mean(0)
            c = z.T @ z / (z.shape[0] - 1)
            return (c.pow(2).sum() - c.diagonal().pow(2).sum()) / z.shape[1]

        loss = INVARIANCE * F.mse_loss(z1, z2) + VARIANCE * (variance(z1) + variance(z2))
        if self.covariance:
            loss = loss + self.covariance * (off_diagonal(z1) + off_diagonal(z2))
        return loss


@dataclass(frozen=True)
class VICRegManifold(ManifoldViews):
    """VICReg on the 48-D manifold, batch 256; ``covariance`` is the weight of the covariance
    term (0: the collapse)."""

    family: ClassVar[str] = "dimensional"
    data: ClassVar[Manifold] = DATA
    covariance: float = 1.0
    steps: int = 400
    batch_size: ClassVar[int] = 256

    def network(self) -> nn.Module:
        return encoder()

    def criterion(self) -> nn.Module:
        return VICRegLoss(self.covariance)

    def reference(self) -> reference.Reference:
        return reference.dimensional("encoder.fc2")


register(
    Scenario(
        name="dimensional",
        summary="VICReg on a 48-D manifold in 96-D: without the covariance term the 64-D "
        "embedding collapses to ~1 effective dimension of its ~45 (ratio 0.03) while its "
        "variance stays; with it the ratio stays ~0.5.",
        collapse=VICRegManifold(covariance=0.0),
        control=VICRegManifold(covariance=1.0),
        indicator="effective_rank_ratio",
        probe="encoder.fc2",
        runs=("vicreg-no-covariance", "vicreg"),
        every=5,
    )
)
