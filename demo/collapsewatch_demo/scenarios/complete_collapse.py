"""Scenario ``complete_collapse`` (family 3): SimSiam without its stop-gradient, and a control.

Recipe (INDICATORS.md, family 3 "Complete collapse"): inputs on an 8-D manifold in 32-D
(``tanh`` of a fixed random linear map of 8-D Gaussian codes, standardised; made here, nothing
is downloaded); two views per sample by masking 30% of the coordinates and adding Gaussian noise
(std 0.1); encoder MLP 32-256 (BatchNorm, ReLU) -64, predictor 64-64-64 (ReLU), SimSiam's
symmetric negative-cosine loss, SGD lr 0.05 with momentum 0.9, batch 128, 600 steps.

- Collapse: the predictor is kept but the stop-gradient is removed, so both branches can agree
  by mapping every input to the same vector. ``simsiam_std`` of the encoder output (probe
  ``encoder.fc2``) falls from 0.84 to below 0.1 within 70-95 steps and ends at 0.054 (seeds 0-4).
- Control: with the stop-gradient. The std dips to 0.35-0.42 around step 35 while the predictor
  catches up, then recovers to 0.52-0.56 (seeds 0-4). With a BatchNorm in the predictor the
  control stays at ~0.95, but the collapse then needs ~1100 steps to pass 0.1, too slow here.

The loss is a plain function, not an ``nn.Module`` criterion, so the loop hands it to
``monitor.step(loss=...)``, the one line this family adds to the two SDK lines. Both views go
through the encoder on each step: the SDK's sums add the two forwards up. Each run trains in
1-3 s on one CPU thread, plus what the SDK costs.
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

from collapsewatch_demo.scenarios.registry import Scenario, register

LATENT_DIM = 8
IN_DIM = 32
HIDDEN = 256
EMBED = 64
MASK = 0.3
NOISE = 0.1
BATCH_SIZE = 128
STEPS = 600
LR = 0.05
MOMENTUM = 0.9
#: Fixes the manifold, the same for every run and seed.
TASK_SEED = 1234
DEMO_EVERY = 5
RUNS = ("simsiam-no-stopgrad", "simsiam")


class Manifold:
    """x = tanh(W^T z / sqrt(8)), z ~ N(0, I_8), standardised per coordinate."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(TASK_SEED)
        self.w = torch.randn(LATENT_DIM, IN_DIM, generator=g) / math.sqrt(LATENT_DIM)
        x = torch.tanh(torch.randn(20_000, LATENT_DIM, generator=g) @ self.w)
        self.mean, self.std = x.mean(0), x.std(0)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        z = torch.randn(n, LATENT_DIM, generator=generator)
        return (torch.tanh(z @ self.w) - self.mean) / self.std


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A view: 30% of the coordinates masked to zero, Gaussian noise added."""
    keep = (torch.rand(x.shape, generator=generator) >= MASK).float()
    return x * keep + NOISE * torch.randn(x.shape, generator=generator)


class SimSiam(nn.Module):
    """Encoder 32-256(BN)-64 and predictor 64-64-64; ``forward`` gives (z, p) of one view."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            OrderedDict(
                fc1=nn.Linear(IN_DIM, HIDDEN),
                bn=nn.BatchNorm1d(HIDDEN),
                relu=nn.ReLU(),
                fc2=nn.Linear(HIDDEN, EMBED),
            )
        )
        self.predictor = nn.Sequential(
            OrderedDict(fc1=nn.Linear(EMBED, EMBED), relu=nn.ReLU(), fc2=nn.Linear(EMBED, EMBED))
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encoder(x)
        return z, self.predictor(z)


def simsiam_loss(
    z1: torch.Tensor, z2: torch.Tensor, p1: torch.Tensor, p2: torch.Tensor, stop_grad: bool
) -> torch.Tensor:
    """Symmetric negative cosine between each view's prediction and the other's embedding."""
    if stop_grad:
        z1, z2 = z1.detach(), z2.detach()
    return -(F.cosine_similarity(p1, z2).mean() + F.cosine_similarity(p2, z1).mean()) / 2


def build(seed: int = 0) -> tuple[SimSiam, torch.optim.SGD]:
    """The model (drawn from ``seed``, the caller's RNG state untouched) and its optimizer."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SimSiam()
    return model, torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)


@torch.no_grad()
def output_std(model: SimSiam, seed: int = TASK_SEED + 1) -> float:
    """Brute force on 4096 fresh inputs: sqrt(1 - ||mean unit embedding||^2)."""
    data = Manifold().sample(4096, torch.Generator().manual_seed(seed))
    model.train()  # BatchNorm with batch statistics, as in training
    z, _ = model(data)
    mean_unit = F.normalize(z, dim=1).mean(0)
    return math.sqrt(max(0.0, 1.0 - float(mean_unit @ mean_unit)))


def train_simsiam(
    *,
    stop_grad: bool,
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
    """Train one run under collapsewatch and return its summary (run id, std, loss, time)."""
    import collapsewatch

    started = time.perf_counter()
    model, optimizer = build(seed)
    config = {
        "recipe": "simsiam",
        "stop_grad": stop_grad,
        "model": f"encoder {IN_DIM}-{HIDDEN}(BN)-{EMBED}, predictor {EMBED}-{EMBED}-{EMBED}",
        "lr": LR,
        "momentum": MOMENTUM,
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
        (z1, p1), (z2, p2) = model(augment(x, g)), model(augment(x, g))
        loss = simsiam_loss(z1, z2, p1, p2, stop_grad)
        optimizer.zero_grad()
        loss.backward()
        monitor.step(loss=loss)  # a plain function: the SDK cannot hook it
        optimizer.step()
    monitor.finish()

    summary: dict[str, Any] = {
        "run": run,
        "run_id": str(monitor.run_id),
        "stop_grad": stop_grad,
        "seed": seed,
        "final_loss": loss.item(),
        "output_std": output_std(model),
        "seconds": time.perf_counter() - started,
        "sdk": monitor.stats,
    }
    log(
        f"{run}: stop-grad {stop_grad}, {steps} steps, final loss {summary['final_loss']:.3f},"
        f" output std {summary['output_std']:.3f} ({summary['seconds']:.1f}s,"
        f" run id {summary['run_id']})"
    )
    return summary


register(
    Scenario(
        name="complete_collapse",
        family="complete",
        summary="SimSiam on an 8-D manifold in 32-D: without the stop-gradient every input maps "
        "to one direction (output std 0.84 -> 0.05 in 100 steps); with it the std stays ~0.5.",
        train=train_simsiam,
        collapse={"stop_grad": False},
        control={"stop_grad": True},
        indicator="simsiam_std",
        probe="encoder.fc2",
        runs=RUNS,
        fast=True,
        also_fires=("predictor.fc1", "predictor.fc2"),  # fed by the collapsed embedding
    )
)
