"""Losses the recipes share, as ``nn.Module`` criteria so the SDK's hook sees them."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SimSiamLoss(nn.Module):
    """Symmetric negative cosine of each view's prediction with the other's embedding, the
    embeddings detached (SimSiam's stop-gradient) unless ``stop_grad`` is False: then both
    branches can agree by mapping every input to the same vector."""

    def __init__(self, stop_grad: bool = True) -> None:
        super().__init__()
        self.stop_grad = stop_grad

    def forward(
        self, p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor
    ) -> torch.Tensor:
        if self.stop_grad:
            z1, z2 = z1.detach(), z2.detach()
        a = F.cosine_similarity(p1, z2).mean()
        b = F.cosine_similarity(p2, z1).mean()
        return -(a + b) / 2
