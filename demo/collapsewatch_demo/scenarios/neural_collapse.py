"""Scenario ``neural_collapse`` (the ``neural_collapse`` family): a classifier trained into its
terminal phase, and a control stopped early.

Recipe (the ``neural_collapse`` family of docs/indicators.md): 5 overlapping Gaussian classes in
10-D, N = 500 (100 a class; class centres drawn once from N(0, 1.25^2), noise std 2; made here,
nothing is downloaded); MLP 10-512-512-64 with BatchNorm and ReLU after each hidden layer and a
bias-free linear head (probe ``head``, whose input is the 64-D penultimate feature); SGD lr
0.05, momentum 0.9, weight decay 5e-3, cosine schedule over 200 epochs of batches of 50 (2000
steps), cross-entropy.

- Collapse: all 200 epochs. Past 100% training accuracy the features of each class shrink onto
  their class mean: NC1 of the whole training set 1.18-1.24 after the first epoch, 0.0095-0.0124
  at the end (seeds 0-2; the catalogue: 1.1 -> 0.009).
- Control: the same run stopped after 3 epochs (30 steps): NC1 0.85-0.89.

The SDK computes NC1 per sampled batch of 50 (10 rows a class, 64-D, the identity basis: exact
for that batch). Batch values sit a little above the training-set value at the end (0.02-0.03)
and below it at the start (0.4-1.7); the default rule informs at NC1 < 0.05 for 3 sampled
steps. Each run takes a few seconds of training on one CPU thread, plus what the SDK costs.

Importing this module imports torch: the CLI imports it lazily, and the ``server`` extra does
not install torch.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from collapsewatch_demo.harness import Recipe, Setup
from collapsewatch_demo.scenarios.registry import Scenario, register

CLASSES = 5
IN_DIM = 10
HIDDEN = 512
FEATURES = 64
N = 500
CENTRE_SCALE = 1.25
NOISE = 2.0
BATCH_SIZE = 50
#: Steps of one epoch over the 500 points.
EPOCH = N // BATCH_SIZE
EPOCHS = 200
#: Fixes the data set, the same for every run and seed.
TASK_SEED = 1234


def dataset() -> tuple[torch.Tensor, torch.Tensor]:
    """The 500 training points and their labels (100 a class)."""
    g = torch.Generator().manual_seed(TASK_SEED)
    centres = torch.randn(CLASSES, IN_DIM, generator=g) * CENTRE_SCALE
    y = torch.arange(N) % CLASSES
    return centres[y] + NOISE * torch.randn(N, IN_DIM, generator=g), y


def mlp() -> nn.Sequential:
    """MLP 10-512-512-64, each Linear followed by BatchNorm and ReLU, and a bias-free head."""

    def block(i: int, n_in: int, n_out: int) -> list[tuple[str, nn.Module]]:
        return [
            (f"fc{i}", nn.Linear(n_in, n_out)),
            (f"bn{i}", nn.BatchNorm1d(n_out)),
            (f"act{i}", nn.ReLU()),
        ]

    layers = [*block(1, IN_DIM, HIDDEN), *block(2, HIDDEN, HIDDEN), *block(3, HIDDEN, FEATURES)]
    return nn.Sequential(OrderedDict([*layers, ("head", nn.Linear(FEATURES, CLASSES, bias=False))]))


@torch.no_grad()
def nc1_of(features: torch.Tensor, labels: torch.Tensor) -> float:
    """Brute force tr(Sigma_W Sigma_B^+)/C in float64 (mu_G the mean of the class means)."""
    h = features.double()
    means = torch.stack([h[labels == c].mean(0) for c in range(CLASSES)])
    centred = means - means.mean(0)
    dev = h - means[labels]
    sigma_w = dev.T @ dev / h.shape[0]
    sigma_b = centred.T @ centred / CLASSES
    return float(torch.trace(sigma_w @ torch.linalg.pinv(sigma_b, hermitian=True))) / CLASSES


@dataclass(frozen=True)
class TrainedPastZeroError(Recipe):
    """:func:`mlp` on :func:`dataset` in epochs of 10 batches of 50, SGD 0.05 with momentum
    0.9 and weight decay 5e-3, the cosine schedule of the full 200 epochs (so a shorter run is
    the long one stopped early)."""

    family: ClassVar[str] = "neural_collapse"
    steps: int = EPOCHS * EPOCH

    def build(self) -> Setup:
        model = mlp()
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-3)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, EPOCHS * EPOCH)
        x, y = dataset()
        return Setup(
            model, opt, nn.CrossEntropyLoss(), x, scheduler=schedule, parts={"x": x, "y": y}
        )

    def train_step(
        self, setup: Setup, step: int, generator: torch.Generator, monitor: Any
    ) -> float:
        if step % EPOCH == 0:  # a new epoch: a new order of the training set
            setup.parts["order"] = torch.randperm(N, generator=generator)
        start = step % EPOCH * BATCH_SIZE
        rows = setup.parts["order"][start : start + BATCH_SIZE]
        x, y = setup.parts["x"][rows], setup.parts["y"][rows]
        return self.optimise(setup, setup.criterion(setup.model(x), y))


register(
    Scenario(
        name="neural_collapse",
        summary="MLP 10-512-512-64 on 5 overlapping Gaussian classes, SGD with weight decay and a "
        "cosine schedule: after 200 epochs each class sits on its mean (NC1 1.2 -> 0.01); "
        "stopped after 3 epochs it does not (0.9).",
        collapse=TrainedPastZeroError(steps=EPOCHS * EPOCH),
        control=TrainedPastZeroError(steps=3 * EPOCH),
        indicator="nc1",
        probe="head",
        runs=("mlp-200-epochs", "mlp-3-epochs"),
        # One sampled step an epoch: 200 points on the collapse run, 3 on the control; the
        # adaptive default would sample a run this small only rarely.
        every=EPOCH,
    )
)
