"""Scenario ``dead_units`` (family 9): a ReLU network whose units die, and a control.

Recipe (INDICATORS.md, family 9 "Dead and saturated units"): regression of a fixed random
smooth function of 20-D Gaussian inputs (made here, nothing is downloaded) by an MLP
20-256-256-1 with ReLU, plain SGD on an MSE criterion, batch 64, 300 steps. The inputs are raw
features with standard deviation 3 (not standardised, as in many real tables); the target is
standardised. At lr 0.1 the first few SGD steps push most units of the second hidden layer
(probe ``fc2``) to a negative pre-activation on every input, and they never come back: 69-79%
of them are dead after 300 steps (seeds 0-9; 46-85% over seeds 10-29; the first layer keeps
all its units). At lr 0.001 no unit dies. The collapse happens within the first 5 steps,
while the loss keeps falling: the loss curve alone does not show it. Each run takes well under
a second of training on one CPU thread, plus what the SDK costs.

The layers are named (``fc1``, ``act1``, ``fc2``, ``act2``, ``out``), so the probes the SDK
reports are ``fc1``, ``fc2`` and ``out``; a unit of ``fc2`` is dead when its output (the
pre-activation of ``act2``) is never positive.

Importing this module imports torch: the CLI imports it lazily, and the ``server`` extra does
not install torch.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from collapsewatch_demo.scenarios.registry import Scenario, register

IN_DIM = 20
HIDDEN = 256
INPUT_SCALE = 3.0
BATCH_SIZE = 64
COLLAPSE_LR = 0.1
CONTROL_LR = 0.001
HELD_OUT_SIZE = 4096
#: Fixes the target function and the held-out batch, the same for every run and seed.
TASK_SEED = 12345
HIDDEN_LAYERS = ("fc1", "fc2")

#: (run name, learning rate) of the two demo runs, collapse first.
DEMO_RUNS = (("relu-lr0.1", COLLAPSE_LR), ("relu-lr0.001", CONTROL_LR))
#: Sampling interval of the demo runs. The SDK's adaptive default keeps its cost within 3% of
#: the step time; a step of this tiny model takes about half a millisecond, so it would sample
#: only steps 0 and 10 of 300 (60 points with every=5, at about 0.6 s more per run).
DEMO_EVERY = 5


class SmoothTarget:
    """y = a . sin(2 W^T x / INPUT_SCALE + b), standardised; W, a, b drawn once from TASK_SEED."""

    def __init__(self, n_waves: int = 32) -> None:
        g = torch.Generator().manual_seed(TASK_SEED)
        self.w = torch.randn(IN_DIM, n_waves, generator=g) / math.sqrt(IN_DIM)
        self.b = torch.rand(n_waves, generator=g) * 2 * math.pi
        self.a = torch.randn(n_waves, 1, generator=g)
        y = self._raw(torch.randn(20_000, IN_DIM, generator=g) * INPUT_SCALE)
        self.mean, self.std = y.mean(), y.std()

    def _raw(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(2 * x @ self.w / INPUT_SCALE + self.b) @ self.a

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (self._raw(x) - self.mean) / self.std


def sample_inputs(n: int, generator: torch.Generator) -> torch.Tensor:
    """n raw inputs: 20-D Gaussian with standard deviation ``INPUT_SCALE``."""
    return torch.randn(n, IN_DIM, generator=generator) * INPUT_SCALE


def build(lr: float, seed: int = 0) -> tuple[nn.Sequential, torch.optim.SGD, nn.MSELoss]:
    """The model (PyTorch's default init, drawn from ``seed``), its SGD optimizer and the criterion.

    The caller's global RNG state is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential(
            OrderedDict(
                fc1=nn.Linear(IN_DIM, HIDDEN),
                act1=nn.ReLU(),
                fc2=nn.Linear(HIDDEN, HIDDEN),
                act2=nn.ReLU(),
                out=nn.Linear(HIDDEN, 1),
            )
        )
    return model, torch.optim.SGD(model.parameters(), lr=lr), nn.MSELoss()


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    *,
    steps: int,
    seed: int = 0,
    target: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> float:
    """A plain training loop, nothing added for monitoring; returns the last batch's loss.

    Batches come from their own generator seeded with ``seed``, so whatever else draws random
    numbers (a monitor, say) does not change the data.
    """
    target = target or SmoothTarget()
    g = torch.Generator().manual_seed(seed)
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        x = sample_inputs(BATCH_SIZE, g)
        loss = criterion(model(x), target(x))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return loss.item()


@torch.no_grad()
def evaluate(
    model: nn.Sequential, target: Callable[[torch.Tensor], torch.Tensor] | None = None
) -> dict[str, Any]:
    """Brute force on a held-out batch: MSE and, per hidden layer, the fraction of dead units.

    A unit is dead when its ReLU output is not positive on any of the ``HELD_OUT_SIZE`` inputs.
    """
    target = target or SmoothTarget()
    x = sample_inputs(HELD_OUT_SIZE, torch.Generator().manual_seed(TASK_SEED + 1))
    dead: dict[str, float] = {}
    h = x
    for name, module in model.named_children():
        h = module(h)
        if name in HIDDEN_LAYERS:
            dead[name] = (h > 0).sum(dim=0).eq(0).float().mean().item()
    return {"heldout_loss": nn.functional.mse_loss(h, target(x)).item(), "dead_fraction": dead}


def train_dead_relu(
    *,
    lr: float,
    steps: int = 300,
    run: str,
    project: str = "demo",
    server: str | None = None,
    token: str | None = None,
    seed: int = 0,
    http_client: Any = None,
    every: int | None = None,
    log: Callable[[str], object] = print,
) -> dict[str, Any]:
    """Train one run of the recipe under collapsewatch and return what happened.

    The monitoring is the SDK's two lines around the plain loop of :func:`fit`. The summary
    holds the run name and id, the final training loss, the held-out loss, the true dead
    fraction of each hidden layer, the wall time and the monitor's own counters (``sdk``).
    ``every=None`` is the SDK's adaptive sampling, which samples almost nothing of a run this
    small (see ``DEMO_EVERY``).
    """
    import collapsewatch

    started = time.perf_counter()
    model, optimizer, criterion = build(lr, seed)
    config = {
        "recipe": "dead-relu",
        "model": f"MLP {IN_DIM}-{HIDDEN}-{HIDDEN}-1 ReLU",
        "lr": lr,
        "steps": steps,
        "batch_size": BATCH_SIZE,
        "input_scale": INPUT_SCALE,
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
    )
    target = SmoothTarget()
    final_loss = fit(model, optimizer, criterion, steps=steps, seed=seed, target=target)
    monitor.finish()

    summary: dict[str, Any] = {
        "run": run,
        "run_id": str(monitor.run_id),
        "lr": lr,
        "steps": steps,
        "seed": seed,
        "final_loss": final_loss,
        **evaluate(model, target),
        "seconds": time.perf_counter() - started,
        "sdk": monitor.stats,
    }
    dead = ", ".join(f"{k} {v:.0%}" for k, v in summary["dead_fraction"].items())
    log(
        f"{run}: lr {lr:g}, {steps} steps, final loss {final_loss:.3f}, dead units {dead}"
        f" ({summary['seconds']:.1f}s, run id {summary['run_id']})"
    )
    return summary


register(
    Scenario(
        name="dead_units",
        family="dead_units",
        summary="MLP 20-256-256-1 on raw inputs: SGD at lr 0.1 kills most ReLUs of fc2 within "
        "5 steps while the loss keeps falling; lr 0.001 keeps them all.",
        train=train_dead_relu,
        collapse={"lr": COLLAPSE_LR, "every": DEMO_EVERY},
        control={"lr": CONTROL_LR, "every": DEMO_EVERY},
        indicator="dead_fraction",
        probe="fc2",
        runs=tuple(name for name, _ in DEMO_RUNS),  # type: ignore[arg-type]
        fast=True,
    )
)
