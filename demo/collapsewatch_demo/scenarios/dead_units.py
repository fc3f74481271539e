"""Scenario ``dead_units`` (the ``dead_units`` family): a ReLU network whose units die, and a
control.

Recipe (the ``dead_units`` family of docs/indicators.md): regression of a fixed random
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
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from collapsewatch_demo import reference
from collapsewatch_demo.harness import Batch, Recipe, Setup
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


@dataclass(frozen=True)
class RawInputsReLU(Recipe):
    """MLP 20-256-256-1 (ReLU) regressing :class:`SmoothTarget` of raw std-3 inputs, plain
    SGD at ``lr`` on an MSE criterion, batch 64."""

    family: ClassVar[str] = "dead_units"
    lr: float = CONTROL_LR
    steps: int = 300
    target: ClassVar[SmoothTarget] = SmoothTarget()

    def build(self) -> Setup:
        model = nn.Sequential(
            OrderedDict(
                fc1=nn.Linear(IN_DIM, HIDDEN),
                act1=nn.ReLU(),
                fc2=nn.Linear(HIDDEN, HIDDEN),
                act2=nn.ReLU(),
                out=nn.Linear(HIDDEN, 1),
            )
        )
        heldout = sample_inputs(HELD_OUT_SIZE, torch.Generator().manual_seed(TASK_SEED + 1))
        return Setup(model, torch.optim.SGD(model.parameters(), lr=self.lr), nn.MSELoss(), heldout)

    def batch(self, step: int, generator: torch.Generator) -> Batch:
        x = sample_inputs(BATCH_SIZE, generator)
        return x, self.target(x)

    def reference(self) -> reference.Reference:
        """A unit is dead when its pre-activation is not positive on any held-out input."""
        return reference.dead_units("fc1", "fc2")


register(
    Scenario(
        name="dead_units",
        summary="MLP 20-256-256-1 on raw inputs: SGD at lr 0.1 kills most ReLUs of fc2 within "
        "5 steps while the loss keeps falling; lr 0.001 keeps them all.",
        collapse=RawInputsReLU(lr=COLLAPSE_LR),
        control=RawInputsReLU(lr=CONTROL_LR),
        indicator="dead_fraction",
        probe="fc2",
        runs=("relu-lr0.1", "relu-lr0.001"),
        # The SDK's adaptive default keeps its cost within 3% of the step time; a step of this
        # tiny model takes about half a millisecond, so it would sample only steps 0 and 10 of
        # 300 (60 points with every=5, at about 0.6 s more per run).
        every=5,
        fast=True,
    )
)
