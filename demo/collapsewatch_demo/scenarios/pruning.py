"""Scenario ``pruning`` (the ``sparsity`` family): global magnitude pruning empties one layer; a
control.

No recipe in the indicator catalogue (docs/indicators.md), so this one is made up after "Is
Complexity Required for Neural Network Pruning" (layer collapse): a global magnitude threshold
compares weights across layers, and a layer with a large fan-in has small weights (PyTorch's
default init scales them by 1/sqrt(fan_in)), so it loses almost all of them first.

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

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn.utils import prune

from collapsewatch_demo.harness import Batch, Recipe, Setup
from collapsewatch_demo.scenarios.registry import Scenario, register

IN_DIM = 32
CLASSES = 10
WIDE = 2048
BATCH_SIZE = 128
SPARSITY = 0.98
PRUNE_FROM, PRUNE_TO, PRUNE_EVERY = 100, 300, 20
#: Fixes the cluster centres and the held-out set, the same for every run and seed.
TASK_SEED = 99


class Clusters:
    """10 Gaussian clusters in 32-D: centres ~ N(0, I), unit noise around them."""

    def __init__(self) -> None:
        self.centres = torch.randn(
            CLASSES, IN_DIM, generator=torch.Generator().manual_seed(TASK_SEED)
        )

    def sample(self, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, CLASSES, (n,), generator=g)
        return self.centres[y] + torch.randn(n, IN_DIM, generator=g), y


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


@dataclass(frozen=True)
class GradualPruning(Recipe):
    """MLP 32-64-2048-64-10 (ReLU) on :class:`Clusters`, SGD 0.05 with momentum 0.9, batch
    128, pruned by weight magnitude on the gradual schedule, with one threshold for the whole
    model (``global_threshold``, the collapse) or the same ratio in every layer."""

    family: ClassVar[str] = "sparsity"
    global_threshold: bool = False
    steps: int = 450
    data: ClassVar[Clusters] = Clusters()

    def build(self) -> Setup:
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
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        heldout, _ = self.data.sample(4096, torch.Generator().manual_seed(TASK_SEED + 1))
        return Setup(model, opt, nn.CrossEntropyLoss(), heldout)

    def batch(self, step: int, generator: torch.Generator) -> Batch:
        return self.data.sample(BATCH_SIZE, generator)

    def train_step(
        self, setup: Setup, step: int, generator: torch.Generator, monitor: Any
    ) -> float:
        if PRUNE_FROM <= step <= PRUNE_TO and (step - PRUNE_FROM) % PRUNE_EVERY == 0:
            assert isinstance(setup.model, nn.Sequential)
            prune_step(setup.model, step, self.global_threshold)
        return super().train_step(setup, step, generator, monitor)


register(
    Scenario(
        name="pruning",
        summary="MLP 32-64-2048-64-10 pruned to 98% by magnitude: a global threshold leaves the "
        "wide-fan-in layer fc3 0.23% of its weights (layer collapse); the same budget layer by "
        "layer keeps every layer at 2%.",
        collapse=GradualPruning(global_threshold=True),
        control=GradualPruning(global_threshold=False),
        indicator="density",
        probe="fc3.weight",
        runs=("prune-global-98", "prune-layerwise-98"),
        every=4,
    )
)
