"""Scenario ``token_uniformity`` (the ``tokens`` family): pure attention stacks lose rank; skips
keep it.

Recipe (the ``tokens`` family of docs/indicators.md): 24 stacked self-attention blocks (d = 64,
4 heads), 64 tokens per sequence (random Gaussian token embeddings, batch 8; made here). No
training is needed for the collapse: it is there at initialisation. So that steps are counted,
the stack is trained for a few steps on a small MSE objective (reconstruct the input) with SGD
at lr 1e-4, which changes nothing that matters.

- Collapse: plain blocks ``y = Attention(x)``, no skip connection, no normalisation. The
  mean pairwise token cosine is 0.63-0.65 after the first block and 1.000 from the third on
  (``residual_ratio`` 0.000), seeds 0-2: every token of a sequence is the same vector (rank
  collapse, Dong et al. 2021). Alerts fire on every block but the first.
- Control: pre-LN residual blocks ``y = x + Attention(LayerNorm(x))``. The cosine creeps up
  with depth and reaches 0.23-0.31 at block 24 (residual ratio 0.82-0.87).

The blocks are a small ``nn.Module`` (not ``nn.TransformerEncoderLayer``, which always has its
skips), handed to the SDK as ``watch(..., blocks=model.blocks)``. Each run takes about a second.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from collapsewatch_demo.harness import Batch, Recipe, Setup
from collapsewatch_demo.scenarios.registry import Scenario, register

DEPTH = 24
D_MODEL = 64
HEADS = 4
TOKENS = 64
BATCH_SIZE = 8


class AttentionBlock(nn.Module):
    """Self-attention, with (pre-LN) or without a skip connection."""

    def __init__(self, skip: bool) -> None:
        super().__init__()
        self.skip = skip
        self.norm: nn.Module = nn.LayerNorm(D_MODEL) if skip else nn.Identity()
        self.attn = nn.MultiheadAttention(D_MODEL, HEADS, batch_first=True)

    def forward(
        self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        y = self.norm(x)
        y = self.attn(y, y, y, key_padding_mask=key_padding_mask, need_weights=False)[0]
        return x + y if self.skip else y


class Stack(nn.Module):
    def __init__(self, skip: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(AttentionBlock(skip) for _ in range(DEPTH))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


@dataclass(frozen=True)
class AttentionStack(Recipe):
    """:class:`Stack` trained to reconstruct random token embeddings (MSE), SGD at 1e-4 for
    a few steps, so that steps are counted; ``skip`` chooses pre-LN residual blocks."""

    family: ClassVar[str] = "tokens"
    skip: bool = True
    steps: int = 20

    def build(self) -> Setup:
        model = Stack(self.skip)
        opt = torch.optim.SGD(model.parameters(), lr=1e-4)
        heldout = torch.randn(BATCH_SIZE, TOKENS, D_MODEL)
        return Setup(model, opt, nn.MSELoss(), heldout, watch={"blocks": model.blocks})

    def batch(self, step: int, generator: torch.Generator) -> Batch:
        x = torch.randn(BATCH_SIZE, TOKENS, D_MODEL, generator=generator)
        return x, x


register(
    Scenario(
        name="token_uniformity",
        summary="24 self-attention blocks, d 64, 64 tokens: without skips every token of a "
        "sequence is the same vector from block 3 on (cosine 1.0, residual ratio 0); pre-LN skips "
        "keep a cosine of ~0.3.",
        collapse=AttentionStack(skip=False),
        control=AttentionStack(skip=True),
        indicator="residual_ratio",
        probe=f"blocks.{DEPTH - 1}",
        runs=("attention-no-skip", "attention-pre-ln"),
        every=1,
        fast=True,
        # the first block reads ~0.64; every later one has collapsed too
        also_fires=tuple(f"blocks.{i}" for i in range(1, DEPTH - 1)),
    )
)
