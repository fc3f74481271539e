"""Scenario ``token_uniformity`` (family 4): pure attention stacks lose rank; skips keep it.

Recipe (INDICATORS.md, family 4): 24 stacked self-attention blocks (d = 64, 4 heads), 64
tokens per sequence (random Gaussian token embeddings, batch 8; made here). No training is
needed for the collapse: it is there at initialisation. So that steps are counted, the stack
is trained for a few steps on a small MSE objective (reconstruct the input) with SGD at lr
1e-4, which changes nothing that matters.

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

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from collapsewatch_demo.scenarios.registry import Scenario, register

DEPTH = 24
D_MODEL = 64
HEADS = 4
TOKENS = 64
BATCH_SIZE = 8
STEPS = 20
LR = 1e-4
#: Fixes the inputs, the same for every run and seed.
TASK_SEED = 100
RUNS = ("attention-no-skip", "attention-pre-ln")


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


@torch.no_grad()
def token_cosines(model: Stack, x: torch.Tensor) -> list[float]:
    """Brute force: the mean pairwise token cosine after each block."""
    out = []
    for block in model.blocks:
        x = block(x)
        u = x / x.norm(dim=-1, keepdim=True)
        s = u.sum(1)
        t = x.shape[1]
        out.append(float((((s * s).sum(-1) - t) / (t * (t - 1))).mean()))
    return out


def train_stack(
    *,
    skip: bool,
    run: str,
    project: str = "demo",
    server: str | None = None,
    token: str | None = None,
    seed: int = 0,
    every: int | None = 1,
    http_client: Any = None,
    log: Callable[[str], object] = print,
) -> dict[str, Any]:
    """A few steps of the stack under collapsewatch; returns its summary."""
    import collapsewatch

    started = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Stack(skip)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    criterion = nn.MSELoss()
    config = {
        "recipe": "attention stack",
        "skip": skip,
        "model": f"{DEPTH} x self-attention d={D_MODEL} heads={HEADS}"
        + (" pre-LN residual" if skip else " no skip"),
        "tokens": TOKENS,
        "steps": STEPS,
        "seed": seed,
    }
    monitor = collapsewatch.watch(
        model,
        optimizer=optimizer,
        criterion=criterion,
        project=project,
        run=run,
        server=server,
        token=token,
        every=every,
        config=config,
        http_client=http_client,
        blocks=model.blocks,
    )
    g = torch.Generator().manual_seed(TASK_SEED + seed)
    for _ in range(STEPS):
        x = torch.randn(BATCH_SIZE, TOKENS, D_MODEL, generator=g)
        loss = criterion(model(x), x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    monitor.finish()

    cosines = token_cosines(model, torch.randn(BATCH_SIZE, TOKENS, D_MODEL, generator=g))
    summary: dict[str, Any] = {
        "run": run,
        "run_id": str(monitor.run_id),
        "skip": skip,
        "seed": seed,
        "token_cosine": cosines,
        "seconds": time.perf_counter() - started,
        "sdk": monitor.stats,
    }
    log(
        f"{run}: {'pre-LN skips' if skip else 'no skips'}, token cosine after block 1"
        f" {cosines[0]:.3f}, 3 {cosines[2]:.3f}, {DEPTH} {cosines[-1]:.3f}"
        f" ({summary['seconds']:.1f}s, run id {summary['run_id']})"
    )
    return summary


register(
    Scenario(
        name="token_uniformity",
        family="tokens",
        summary="24 self-attention blocks, d 64, 64 tokens: without skips every token of a "
        "sequence is the same vector from block 3 on (cosine 1.0); pre-LN skips keep ~0.3.",
        train=train_stack,
        collapse={"skip": False},
        control={"skip": True},
        indicator="token_cosine",
        probe=f"blocks.{DEPTH - 1}",
        runs=RUNS,
        fast=True,
        # the first block reads ~0.64; every later one has collapsed too
        also_fires=tuple(f"blocks.{i}" for i in range(1, DEPTH - 1)),
    )
)
