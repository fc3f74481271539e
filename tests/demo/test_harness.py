"""The trainer harness on a tiny recipe, without a server (``watch(..., enabled=False)``), and
the loss-change step."""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from collapsewatch_demo import reference
from collapsewatch_demo.harness import (
    REFERENCE_POINTS,
    Batch,
    Recipe,
    Setup,
    loss_change_step,
    train,
)


@dataclass(frozen=True)
class BiasKill(Recipe):
    """A ReLU layer whose bias is pushed down by ``push`` each step: every unit dies."""

    family: ClassVar[str] = "dead_units"
    push: float = 0.0
    steps: int = 200

    def build(self) -> Setup:
        model = nn.Sequential(OrderedDict(fc=nn.Linear(4, 8), relu=nn.ReLU(), out=nn.Linear(8, 1)))
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)
        heldout = torch.randn(256, 4, generator=torch.Generator().manual_seed(1))
        return Setup(model, opt, nn.MSELoss(), heldout)

    def batch(self, step: int, generator: torch.Generator) -> Batch:
        x = torch.randn(16, 4, generator=generator)
        return x, x.sum(1, keepdim=True)

    def train_step(
        self, setup: Setup, step: int, generator: torch.Generator, monitor: object
    ) -> float:
        loss = super().train_step(setup, step, generator, monitor)
        with torch.no_grad():
            setup.model.fc.bias.sub_(self.push)
        return loss

    def reference(self) -> reference.Reference:
        return reference.dead_units("fc")


def test_train_evaluates_the_reference_on_the_twin_and_finds_the_crossing() -> None:
    threads = torch.get_num_threads()
    dying = train(BiasKill(push=0.05), log=lambda _: None)
    assert torch.get_num_threads() == threads
    assert dying.run_id is None and len(dying.losses) == 200
    assert len(dying.evaluated) == REFERENCE_POINTS + 1 and dying.evaluated[-1] == 200
    assert dying.values["fc"][0] < 0.5 and dying.values["fc"][-1] == 1.0
    assert dying.crossed_at is not None and 0 < dying.crossed_at < 200
    assert dying.layers_beyond() == ["fc"]
    healthy = train(BiasKill(push=0.0), log=lambda _: None)
    assert healthy.crossed_at is None, healthy.values


def test_the_same_recipe_trains_the_same_run() -> None:
    a, b = (train(BiasKill(push=0.01), log=lambda _: None) for _ in range(2))
    assert a.losses == b.losses and a.values == b.values


def test_loss_change_step() -> None:
    control = [1.0 / (1 + 0.01 * s) for s in range(1000)]
    assert loss_change_step(control, control) is None
    jump = [v * (1.5 if s >= 400 else 1.0) for s, v in enumerate(control)]
    # the trailing mean (w = 20) departs by more than 10% once 5 of its 20 steps have jumped
    assert loss_change_step(jump, control) == 404
    diverged = [*control[:700], math.nan, *control[701:]]
    assert loss_change_step(diverged, control) == 700
    blip = [*control[:500], 10.0, *control[501:]]  # one bad batch moves w means, not 2 w
    assert loss_change_step(blip, control) is None
