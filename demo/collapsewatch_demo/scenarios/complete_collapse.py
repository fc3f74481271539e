"""Scenario ``complete_collapse`` (the ``complete`` family): SimSiam without its stop-gradient, and
a control.

Recipe (the ``complete`` family of docs/indicators.md): inputs on an 8-D manifold in 32-D
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

The loss is an ``nn.Module`` criterion, so the SDK's hook sees it. Both views go through the
encoder on each step: the SDK's sums add the two forwards up. Each run trains in
1-3 s on one CPU thread, plus what the SDK costs.
"""

from __future__ import annotations

from abc import abstractmethod
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from collapsewatch_demo import reference
from collapsewatch_demo.data import Manifold, augment
from collapsewatch_demo.harness import Batch, Setup, TwoViews
from collapsewatch_demo.losses import SimSiamLoss
from collapsewatch_demo.scenarios.registry import Scenario, register

IN_DIM = 32
HIDDEN = 256
EMBED = 64
#: The inputs of the manifold scenarios (also dimensional, posterior, codebook): 8-D codes,
#: fixed by their task seed, the same for every run and seed.
MANIFOLD = Manifold(8, IN_DIM, task_seed=1234, spread=1.0)


def manifold_encoder(in_dim: int = IN_DIM) -> nn.Sequential:
    """The encoder of the manifold's self-supervised scenarios (this one and ``dimensional``):
    ``in_dim``-256 (BatchNorm, ReLU) -64, the embedding at ``fc2``."""
    return nn.Sequential(
        OrderedDict(
            fc1=nn.Linear(in_dim, HIDDEN),
            bn=nn.BatchNorm1d(HIDDEN),
            relu=nn.ReLU(),
            fc2=nn.Linear(HIDDEN, EMBED),
        )
    )


class SimSiam(nn.Module):
    """Encoder 32-256(BN)-64 and predictor 64-64-64; ``forward`` gives (z, p) of one view."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = manifold_encoder()
        self.predictor = nn.Sequential(
            OrderedDict(fc1=nn.Linear(EMBED, EMBED), relu=nn.ReLU(), fc2=nn.Linear(EMBED, EMBED))
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encoder(x)
        return z, self.predictor(z)


@dataclass(frozen=True)
class ManifoldViews(TwoViews):
    """The manifold's self-supervised scenarios (this one and ``dimensional``): a batch is two
    augmented views of ``batch_size`` points of :data:`MANIFOLD`, and ``network()`` trains on
    ``criterion()`` with SGD lr 0.05 and momentum 0.9."""

    data: ClassVar[Manifold] = MANIFOLD
    batch_size: ClassVar[int] = 128

    @abstractmethod
    def network(self) -> nn.Module: ...

    @abstractmethod
    def criterion(self) -> nn.Module: ...

    def build(self) -> Setup:
        model = self.network()
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        heldout = self.heldout_view(self.data.heldout())
        return Setup(model, opt, self.criterion(), heldout)

    def view(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return augment(x, generator)

    def batch(self, step: int, generator: torch.Generator) -> Batch:
        return self.views(self.data.sample(self.batch_size, generator), generator)


@dataclass(frozen=True)
class SimSiamManifold(ManifoldViews):
    """SimSiam on the 8-D manifold, batch 128; ``stop_grad`` False removes the stop-gradient
    (the collapse)."""

    family: ClassVar[str] = "complete"
    stop_grad: bool = True
    steps: int = 600

    def network(self) -> nn.Module:
        return SimSiam()

    def criterion(self) -> nn.Module:
        return SimSiamLoss(self.stop_grad)

    def loss(self, setup: Setup, batch: Batch, monitor: Any) -> torch.Tensor:
        (z1, p1), (z2, p2) = setup.model(batch[0]), setup.model(batch[1])
        return setup.criterion(p1, p2, z1, z2)

    def reference(self) -> reference.Reference:
        return reference.complete("encoder.fc2")


register(
    Scenario(
        name="complete_collapse",
        summary="SimSiam on an 8-D manifold in 32-D: without the stop-gradient every input maps "
        "to one direction (output std 0.84 -> 0.05 in 100 steps); with it the std stays ~0.5.",
        collapse=SimSiamManifold(stop_grad=False),
        control=SimSiamManifold(stop_grad=True),
        indicator="simsiam_std",
        probe="encoder.fc2",
        runs=("simsiam-no-stopgrad", "simsiam"),
        every=5,
        fast=True,
        also_fires=("predictor.fc1", "predictor.fc2"),  # fed by the collapsed embedding
    )
)
