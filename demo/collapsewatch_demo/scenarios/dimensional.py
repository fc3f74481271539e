"""Scenario ``dimensional`` (family 2): VICReg without its covariance term, and a control.

No recipe in INDICATORS.md, so this one follows the VICReg paper's ablation: the variance term
alone keeps every embedding dimension's std at 1 (no complete collapse), but without the
covariance term nothing stops all dimensions from carrying the same few directions, and the
embedding collapses into a handful of dimensions.

Same data, views and encoder as ``complete_collapse`` (8-D manifold in 32-D, 30% masking plus
noise; encoder 32-256 (BatchNorm, ReLU) -64, probe ``encoder.fc2``), no predictor, the VICReg
loss 25 invariance + 25 variance + nu covariance, SGD lr 0.05 with momentum 0.9, batch 256,
400 steps.

- Collapse: nu = 0. The covariance effective rank of the 64-D embedding falls from 25-27 to
  about 1.1 (``effective_rank_ratio`` 0.39-0.43 -> 0.016-0.023 by step 100, seeds 0-1), while
  ``simsiam_std`` stays at 0.8-0.99: a dimensional collapse, not a complete one. The hidden
  layer ``encoder.fc1`` keeps a ratio of ~0.2 (of its 32 input dimensions).
- Control: nu = 1 (VICReg as published): the ratio dips to 0.16-0.33 in the first steps and
  climbs to 0.41.

The loss is a plain function, handed to ``monitor.step(loss=...)``. Each run trains in about
2 s on one CPU thread plus what the SDK costs.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from collapsewatch_demo.scenarios.complete_collapse import (
    EMBED,
    HIDDEN,
    IN_DIM,
    LR,
    MOMENTUM,
    Manifold,
    augment,
)
from collapsewatch_demo.scenarios.registry import Scenario, register

BATCH_SIZE = 256
STEPS = 400
INVARIANCE, VARIANCE = 25.0, 25.0
DEMO_EVERY = 5
RUNS = ("vicreg-no-covariance", "vicreg")


def encoder() -> nn.Module:
    return nn.Sequential(
        OrderedDict(
            encoder=nn.Sequential(
                OrderedDict(
                    fc1=nn.Linear(IN_DIM, HIDDEN),
                    bn=nn.BatchNorm1d(HIDDEN),
                    relu=nn.ReLU(),
                    fc2=nn.Linear(HIDDEN, EMBED),
                )
            )
        )
    )


def vicreg_loss(z1: torch.Tensor, z2: torch.Tensor, covariance: float) -> torch.Tensor:
    """VICReg: invariance (MSE between views), variance hinge per dim, covariance off-diagonal."""

    def variance(z: torch.Tensor) -> torch.Tensor:
        return F.relu(1 - torch.sqrt(z.var(0) + 1e-4)).mean()

    def off_diagonal(z: torch.Tensor) -> torch.Tensor:
        z = z - z.mean(0)
        c = z.T @ z / (z.shape[0] - 1)
        return (c.pow(2).sum() - c.diagonal().pow(2).sum()) / z.shape[1]

    loss = INVARIANCE * F.mse_loss(z1, z2) + VARIANCE * (variance(z1) + variance(z2))
    if covariance:
        loss = loss + covariance * (off_diagonal(z1) + off_diagonal(z2))
    return loss


@torch.no_grad()
def embedding_rank(model: nn.Module, seed: int = 4321) -> float:
    """Brute force on 4096 fresh inputs: covariance effective rank / width of the embedding."""
    z = model(Manifold().sample(4096, torch.Generator().manual_seed(seed))).double()
    lam = torch.linalg.eigvalsh(torch.cov(z.T)).clamp_min(0)
    p = lam[lam > 0] / lam.sum()
    return math.exp(-float((p * p.log()).sum())) / z.shape[1]


def train_vicreg(
    *,
    covariance: float,
    run: str,
    project: str = "demo",
    server: str | None = None,
    token: str | None = None,
    seed: int = 0,
    steps: int = STEPS,
    every: int | None = DEMO_EVERY,
    http_client: Any = None,
    log: Callable[[str], object] = print,
) -> dict[str, Any]:
    """Train one run under collapsewatch and return its summary."""
    import collapsewatch

    started = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = encoder()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    config = {
        "recipe": "vicreg",
        "covariance_weight": covariance,
        "model": f"encoder {IN_DIM}-{HIDDEN}(BN)-{EMBED}",
        "lr": LR,
        "steps": steps,
        "batch_size": BATCH_SIZE,
        "seed": seed,
    }
    monitor = collapsewatch.watch(
        model,
        optimizer=optimizer,
        project=project,
        run=run,
        server=server,
        token=token,
        every=every,
        config=config,
        http_client=http_client,
    )
    data, g = Manifold(), torch.Generator().manual_seed(seed)
    loss = torch.tensor(math.nan)
    for _ in range(steps):
        x = data.sample(BATCH_SIZE, g)
        loss = vicreg_loss(model(augment(x, g)), model(augment(x, g)), covariance)
        optimizer.zero_grad()
        loss.backward()
        monitor.step(loss=loss)  # a plain function: the SDK cannot hook it
        optimizer.step()
    monitor.finish()

    summary: dict[str, Any] = {
        "run": run,
        "run_id": str(monitor.run_id),
        "covariance_weight": covariance,
        "seed": seed,
        "final_loss": loss.item(),
        "effective_rank_ratio": embedding_rank(model),
        "seconds": time.perf_counter() - started,
        "sdk": monitor.stats,
    }
    log(
        f"{run}: covariance weight {covariance:g}, {steps} steps, final loss"
        f" {summary['final_loss']:.2f}, embedding effective rank / width"
        f" {summary['effective_rank_ratio']:.3f} ({summary['seconds']:.1f}s,"
        f" run id {summary['run_id']})"
    )
    return summary


register(
    Scenario(
        name="dimensional",
        family="dimensional",
        summary="VICReg on an 8-D manifold in 32-D: without the covariance term the 64-D "
        "embedding collapses to ~1 effective dimension (ratio 0.40 -> 0.02) while its variance "
        "stays; with it the ratio stays ~0.4.",
        train=train_vicreg,
        collapse={"covariance": 0.0},
        control={"covariance": 1.0},
        indicator="effective_rank_ratio",
        probe="encoder.fc2",
        runs=RUNS,
    )
)
