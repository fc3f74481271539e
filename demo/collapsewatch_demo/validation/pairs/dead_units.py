"""Family 9, dead units: five mechanisms, none the scenario's (SGD on raw std-3 inputs).

The truth is the share of units never positive on a fixed held-out batch (2048 rows; 512
images for the CNNs, every position a row), measured at each ReLU's input: the Linear or Conv
output, or the BatchNorm output where one sits in between. "Dead" below is that share on the
worst layer, measured by ``harness.train`` without the SDK (monitoring changes nothing in the
training) on one CPU thread; times are training plus reference on an idle 2-core machine.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from collapsewatch_demo import reference
from collapsewatch_demo.data import GaussianClasses, Shapes, SmoothRegression
from collapsewatch_demo.harness import Batch, Recipe, Setup
from collapsewatch_demo.validation.registry import Pair, register


def _relu_mlp(dims: list[int], out: int) -> nn.Sequential:
    """Linear + nn.ReLU layers named fc1, relu1, ..., then a Linear ``head``."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for i, (a, b) in enumerate(itertools.pairwise(dims), start=1):
        layers[f"fc{i}"] = nn.Linear(a, b)
        layers[f"relu{i}"] = nn.ReLU()
    layers["head"] = nn.Linear(dims[-1], out)
    return nn.Sequential(layers)


@dataclass(frozen=True)
class DeepMLPAdam(Recipe):
    """Ten Gaussian classes in 32-D; MLP 32-(128 x 5)-10 with nn.ReLU, Adam, cross-entropy,
    batch 128, 1000 steps. At lr 3e-2 (a typo-sized Adam rate) 92-94% of fc2 dies within
    20 steps and the loss stalls near 1 (seeds 0-1); at 1e-3 the worst layer (fc5) holds
    25% of units dead from the default init and never more (seeds 0-1). About 3 s a run."""

    family: ClassVar[str] = "dead_units"
    lr: float = 1e-3
    steps: int = 1000
    data: ClassVar[GaussianClasses] = GaussianClasses(10, 32, 6.0, task_seed=901)

    def build(self) -> Setup:
        model = _relu_mlp([self.data.dim] + [128] * 5, self.data.classes)
        opt = torch.optim.Adam(model.parameters(), lr=self.lr)
        return Setup(model, opt, nn.CrossEntropyLoss(), self.data.heldout())

    def batch(self, step: int, generator: torch.Generator) -> Batch:
        return self.data.sample(128, generator)

    def reference(self) -> reference.Reference:
        return reference.dead_units(*(f"fc{i}" for i in range(1, 6)))


class SmallCNN(nn.Module):
    """Three 3x3 convolutions (16, 32, 32 channels; the last two stride 2), each followed by
    a BatchNorm when asked, and a ReLU; global average pooling; a Linear head."""

    def __init__(self, batchnorm: bool, classes: int) -> None:
        super().__init__()
        chans = (1, 16, 32, 32)
        blocks: OrderedDict[str, nn.Module] = OrderedDict()
        for i in range(3):
            blocks[f"conv{i + 1}"] = nn.Conv2d(
                chans[i], chans[i + 1], 3, stride=1 if i == 0 else 2, padding=1, bias=not batchnorm
            )
            if batchnorm:
                blocks[f"bn{i + 1}"] = nn.BatchNorm2d(chans[i + 1])
            blocks[f"relu{i + 1}"] = nn.ReLU()
        self.features = nn.Sequential(blocks)
        self.head = nn.Linear(chans[-1], classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3)))


@dataclass(frozen=True)
class ShapesCNN(Recipe):
    """Four shapes in 16x16 images; :class:`SmallCNN`, SGD 0.05 with momentum 0.9, batch 32.
    ``lr_spike`` multiplies the learning rate for steps ``spike_at .. spike_at + 39``.

    - Without BatchNorm, 2000 steps: on raw 0-255 pixels (``pixel_scale`` 255) the first
      updates kill 88-100% of conv3's channels by step 40 and the loss stalls at log 4 (seeds
      0-2; seed 3 crosses at 220, peaks at 72% and revives to 38%); on 0-1 pixels the worst
      layer stays at or below 22% (seeds 0-2). About 15 s a run.
    - With BatchNorm, 1500 steps: a x100 spike at step 700 leaves 88% of bn3's channels
      never positive from step 705 on (seed 0; a x50 spike, first chosen, left only 25% dead
      on torch 2.13 and the pair measured nothing), while the loss recovers; without the spike
      no channel dies. The SDK watches the convolutions, before the BatchNorm. About 12-20 s
      a run.
    """

    family: ClassVar[str] = "dead_units"
    batchnorm: bool = False
    pixel_scale: float = 1.0
    lr: float = 0.05
    lr_spike: float = 1.0
    spike_at: int = 700
    steps: int = 2000

    def _data(self) -> Shapes:
        return Shapes(16, task_seed=902, scale=self.pixel_scale)

    def build(self) -> Setup:
        model = SmallCNN(self.batchnorm, Shapes.CLASSES)
        opt = torch.optim.SGD(model.parameters(), lr=self.lr, momentum=0.9)
        return Setup(model, opt, nn.CrossEntropyLoss(), self._data().heldout())

    def batch(self, step: int, generator: torch.Generator) -> Batch:
        return self._data().sample(32, generator)

    def train_step(
        self, setup: Setup, step: int, generator: torch.Generator, monitor: Any
    ) -> float:
        spiking = self.spike_at <= step < self.spike_at + 40
        for group in setup.optimizer.param_groups:
            group["lr"] = self.lr * (self.lr_spike if spiking else 1.0)
        return super().train_step(setup, step, generator, monitor)

    def reference(self) -> reference.Reference:
        where = "bn" if self.batchnorm else "conv"
        return reference.dead_units(*(f"features.{where}{i}" for i in (1, 2, 3)), unit_dim=1)


class FunctionalMLP(nn.Module):
    """16-96-96-96-1 whose ReLUs are ``F.relu`` calls in ``forward`` (no nn.ReLU module),
    hidden biases initialised to ``bias_init``."""

    def __init__(self, bias_init: float) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(16, 96), nn.Linear(96, 96), nn.Linear(96, 96)
        self.out = nn.Linear(96, 1)
        for fc in (self.fc1, self.fc2, self.fc3):
            nn.init.constant_(fc.bias, bias_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.fc1(x))
        h = F.relu(self.fc2(h))
        return self.out(F.relu(self.fc3(h)))


@dataclass(frozen=True)
class FunctionalReLU(Recipe):
    """Regression of a smooth function of 16-D Gaussian inputs by :class:`FunctionalMLP`
    with hidden biases initialised at -0.1 (a bad init that leaves units close to the edge),
    RMSprop, MSE, batch 32, 300 steps. At lr 1e-2 the first steps push 62-76% of fc2 below
    zero for good while the loss still falls to 0.18-0.21 (seeds 0-2); at lr 1e-3 the worst
    layer (fc3) has 29-38% dead, never half (seeds 0-2). About 3-7 s a run."""

    family: ClassVar[str] = "dead_units"
    lr: float = 1e-3
    bias_init: float = -0.1
    steps: int = 300
    data: ClassVar[SmoothRegression] = SmoothRegression(16, task_seed=903)

    def build(self) -> Setup:
        model = FunctionalMLP(self.bias_init)
        opt = torch.optim.RMSprop(model.parameters(), lr=self.lr)
        return Setup(model, opt, nn.MSELoss(), self.data.heldout())

    def batch(self, step: int, generator: torch.Generator) -> Batch:
        return self.data.sample(32, generator)

    def reference(self) -> reference.Reference:
        return reference.dead_units("fc1", "fc2", "fc3")


@dataclass(frozen=True)
class ShiftingTargets(Recipe):
    """Regression of a smooth function of 8-D inputs by an MLP 8-128-128-128-1 (nn.ReLU),
    Adam 1e-3, MSE, batch 64, 4000 steps. From step 2000 the targets' mean jumps by
    +-``shift`` every 250 steps (non-stationary targets, as a value function sees when
    rewards are rescaled). With shift 10, 90-98% of fc2 dies at the first jump (truth crosses
    at step 2040, seeds 0-2); with no shift the worst layer reaches 8-20% (seeds 0-2).
    About 6-10 s a run."""

    family: ClassVar[str] = "dead_units"
    shift: float = 0.0
    shift_from: int = 2000
    steps: int = 4000
    data: ClassVar[SmoothRegression] = SmoothRegression(8, task_seed=904)

    def build(self) -> Setup:
        model = _relu_mlp([8, 128, 128, 128], 1)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        return Setup(model, opt, nn.MSELoss(), self.data.heldout())

    def batch(self, step: int, generator: torch.Generator) -> Batch:
        x, y = self.data.sample(64, generator)
        if step < self.shift_from:
            return x, y
        jumps = (step - self.shift_from) // 250
        return x, y + (self.shift if jumps % 2 == 0 else -self.shift)

    def reference(self) -> reference.Reference:
        return reference.dead_units("fc1", "fc2", "fc3")


register(
    Pair(
        "dead-mlp5-adam-classes",
        "deep MLP classifier, Adam at 3e-2 kills most of fc2 within 20 steps (control 1e-3)",
        DeepMLPAdam(lr=3e-2),
        DeepMLPAdam(lr=1e-3),
    )
)
register(
    Pair(
        "dead-cnn-raw-pixels",
        "CNN without BatchNorm on 0-255 pixels: conv3's channels die by step 40 and the "
        "loss stalls at log 4 (control: pixels in 0-1)",
        ShapesCNN(pixel_scale=255.0),
        ShapesCNN(pixel_scale=1.0),
    )
)
register(
    Pair(
        "dead-cnn-bn-lr-spike",
        "CNN with BatchNorm: a 40-step learning-rate spike (x100) at step 700 kills most of "
        "bn3's channels; the loss recovers (control: no spike)",
        ShapesCNN(batchnorm=True, lr_spike=100.0, steps=1500),
        ShapesCNN(batchnorm=True, lr_spike=1.0, steps=1500),
    )
)
register(
    Pair(
        "dead-functional-relu-300",
        "F.relu MLP with biases at -0.1, RMSprop 1e-2: fc2 dies in 3 steps of a 300-step run "
        "(control 1e-3)",
        FunctionalReLU(lr=1e-2),
        FunctionalReLU(lr=1e-3),
        fast=True,
    )
)
register(
    Pair(
        "dead-shifting-targets-4000",
        "MLP regression, Adam: target mean jumps from step 2000 of 4000 kill fc2 at 2040 "
        "(control: no jumps)",
        ShiftingTargets(shift=10.0),
        ShiftingTargets(shift=0.0),
    )
)
