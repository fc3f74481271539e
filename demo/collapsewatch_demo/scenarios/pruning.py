"""Scenario ``pruning`` (family 10): global magnitude pruning empties one layer; a control.

No recipe in INDICATORS.md, so this one is made up after "Is Complexity Required for Neural
Network Pruning" (layer collapse): a global magnitude threshold compares weights across layers,
and a layer with a large fan-in has small weights (PyTorch's default init scales them by
1/sqrt(fan_in)), so it loses almost all of them first.

Task: 10 Gaussian clusters in 32-D (unit centres, unit noise; made here), cross-entropy, an
MLP 32-64-2048-64-10 with ReLU (layers ``fc1``, ``fc2``, ``fc3``, ``head``), SGD lr 0.05 with
momentum 0.9, batch 128, 450 steps. From step 100 to 300, every 20 steps, the four weight
matrices are pruned with ``torch.nn.utils.prune`` (L1 magnitude) towards 98% sparsity on the
gradual schedule of Zhu & Gupta (s_t = 0.98 (1 - (1 - t)^3)); the masks stay for the rest.

- Collapse: one global threshold (``prune.global_unstructured``). ``fc3`` (fan-in 2048) keeps
  0.23% of its weights, ``fc2`` 2.9%, ``fc1`` 45%, ``head`` 47-50% (seeds 0-1): ``density`` of
  ``fc3.weight`` falls below the 1% critical default. The task is easy enough that accuracy
  stays at 99.8% here: the indicator says the layer hangs on a few hundred weights, one more
  pruning round from being cut, before accuracy does.
- Control: the same 98% budget, layer by layer (``prune.l1_unstructured`` on each): every
  layer keeps 2.0% (accuracy 86-97%, lower: the sparsity level itself hurts, but no layer is
  disconnected).

The SDK reads a pruned weight through the module (``fc3.weight`` is the masked tensor), not
the dense ``weight_orig`` parameter the optimizer updates. Each run trains in ~2-3 s on one
CPU thread plus what the SDK costs.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

from collapsewatch_demo.scenarios.registry import Scenario, register

IN_DIM = 32
CLASSES = 10
WIDE = 2048
BATCH_SIZE = 128
STEPS = 450
LR = 0.05
MOMENTUM = 0.9
SPARSITY = 0.98
PRUNE_FROM, PRUNE_TO, PRUNE_EVERY = 100, 300, 20
#: Fixes the cluster centres and the held-out set, the same for every run and seed.
TASK_SEED = 99
DEMO_EVERY = 4
RUNS = ("prune-global-98", "prune-layerwise-98")


class Clusters:
    """10 Gaussian clusters in 32-D: centres ~ N(0, I), unit noise around them."""

    def __init__(self) -> None:
        self.centres = torch.randn(
            CLASSES, IN_DIM, generator=torch.Generator().manual_seed(TASK_SEED)
        )

    def sample(self, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, CLASSES, (n,), generator=g)
        return self.centres[y] + torch.randn(n, IN_DIM, generator=g), y


def build(seed: int = 0) -> tuple[nn.Sequential, torch.optim.SGD, nn.CrossEntropyLoss]:
    """The model (drawn from ``seed``, the caller's RNG untouched), optimizer and criterion."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential(
            OrderedDict(
                fc1=nn.Linear(IN_DIM, 64),
                act1=nn.ReLU(),
                fc2=nn.Linear(64, WIDE),
                act2=nn.ReLU(),
                fc3=nn.Linear(WIDE, 64),
                act3=nn.ReLU(),
                head=nn.Linear(64, CLASSES),
            )
        )
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    return model, optimizer, nn.CrossEntropyLoss()


def weights(model: nn.Sequential) -> list[nn.Linear]:
    return [m for m in model if isinstance(m, nn.Linear)]


def target_sparsity(step: int) -> float:
    """Zhu & Gupta's gradual schedule: fast at first, slow near the end."""
    t = (step - PRUNE_FROM) / (PRUNE_TO - PRUNE_FROM)
    return SPARSITY * (1 - (1 - t) ** 3)


def _to_prune(layers: list[nn.Linear], sparsity: float) -> int:
    """How many more weights of ``layers`` must go for ``sparsity`` zeros among them."""
    total = sum(layer.weight.numel() for layer in layers)
    zeros = sum(int((layer.weight == 0).sum()) for layer in layers)
    return max(0, min(total - zeros, round(sparsity * total) - zeros))


def prune_step(model: nn.Sequential, step: int, global_threshold: bool) -> None:
    """One round of the schedule: a global magnitude threshold, or the same ratio per layer."""
    sparsity = target_sparsity(step)
    layers = weights(model)
    if global_threshold:
        prune.global_unstructured(
            [(layer, "weight") for layer in layers],
            pruning_method=prune.L1Unstructured,
            amount=_to_prune(layers, sparsity),
        )
    else:
        for layer in layers:
            prune.l1_unstructured(layer, "weight", amount=_to_prune([layer], sparsity))


@torch.no_grad()
def evaluate(model: nn.Sequential, data: Clusters) -> dict[str, Any]:
    """Brute force: each layer's density (non-zero weights after the mask), held-out accuracy."""
    x, y = data.sample(4096, torch.Generator().manual_seed(TASK_SEED + 1))
    accuracy = (model(x).argmax(1) == y).float().mean().item()
    density = {
        name: float((m.weight != 0).float().mean())
        for name, m in model.named_children()
        if isinstance(m, nn.Linear)
    }
    return {"accuracy": accuracy, "density": density}


def train_pruned(
    *,
    global_threshold: bool,
    run: str,
    project: str = "demo",
    server: str | None = None,
    token: str | None = None,
    seed: int = 0,
    every: int | None = DEMO_EVERY,
    http_client: Any = None,
    log: Callable[[str], object] = print,
) -> dict[str, Any]:
    """Train and prune one run under collapsewatch; return its summary."""
    import collapsewatch

    started = time.perf_counter()
    model, optimizer, criterion = build(seed)
    config = {
        "recipe": "gradual magnitude pruning",
        "threshold": "global" if global_threshold else "per layer",
        "sparsity": SPARSITY,
        "model": f"MLP {IN_DIM}-64-{WIDE}-64-{CLASSES} ReLU",
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
    )
    data, g = Clusters(), torch.Generator().manual_seed(seed)
    loss = torch.tensor(math.nan)
    for step in range(STEPS):
        if PRUNE_FROM <= step <= PRUNE_TO and (step - PRUNE_FROM) % PRUNE_EVERY == 0:
            prune_step(model, step, global_threshold)
        x, y = data.sample(BATCH_SIZE, g)
        loss = criterion(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    monitor.finish()

    summary: dict[str, Any] = {
        "run": run,
        "run_id": str(monitor.run_id),
        "seed": seed,
        "final_loss": loss.item(),
        **evaluate(model, data),
        "seconds": time.perf_counter() - started,
        "sdk": monitor.stats,
    }
    density = ", ".join(f"{k} {v:.2%}" for k, v in summary["density"].items())
    log(
        f"{run}: {config['threshold']} magnitude pruning to {SPARSITY:.0%}, density {density},"
        f" accuracy {summary['accuracy']:.1%} ({summary['seconds']:.1f}s, run id"
        f" {summary['run_id']})"
    )
    return summary


register(
    Scenario(
        name="pruning",
        family="sparsity",
        summary="MLP 32-64-2048-64-10 pruned to 98% by magnitude: a global threshold leaves the "
        "wide-fan-in layer fc3 0.23% of its weights (layer collapse); the same budget layer by "
        "layer keeps every layer at 2%.",
        train=train_pruned,
        collapse={"global_threshold": True},
        control={"global_threshold": False},
        indicator="density",
        probe="fc3.weight",
        runs=RUNS,
    )
)
