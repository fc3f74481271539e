"""Family 2, dimensional collapse: four mechanisms, none the scenario's (VICReg without its
covariance term).

The truth is the exact covariance effective rank of each layer's output on a fixed held-out
batch of 2048 inputs (one augmented view of them for the self-supervised recipes, as the SDK
sees), over the layer's room: its live units, its input dimension and the effective rank of
the data (``reference.room``); a layer is collapsed below 0.05 of its room, the family's
default. The ratio can exceed 1 (a ReLU layer spreads a few input directions over more).
Values are the worst layer, measured by ``harness.train`` without the SDK on one CPU thread
of a 2-core machine. The low-rank-targets pair carries a healthy narrow layer in both runs (a
structurally pruned layer with 13 of 256 units left), the kind today's
``effective_rank_ratio`` below 0.05 false-alarms on.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

from collapsewatch_demo import reference
from collapsewatch_demo.data import HELDOUT, Manifold, augment, heldout_generator
from collapsewatch_demo.harness import Batch, Recipe, Setup, TwoViews
from collapsewatch_demo.validation.registry import Pair, register


def _gaussian_heldout(dim: int, task_seed: int) -> torch.Tensor:
    return torch.randn(HELDOUT, dim, generator=heldout_generator(task_seed))


def _linear_map(task_seed: int, spectrum: torch.Tensor) -> torch.Tensor:
    """A fixed 32 x 32 map U diag(spectrum) V^T with random orthogonal U, V."""
    g = torch.Generator().manual_seed(task_seed)
    u, _ = torch.linalg.qr(torch.randn(32, 32, generator=g))
    v, _ = torch.linalg.qr(torch.randn(32, 32, generator=g))
    return (u * spectrum) @ v.T


class BarlowLoss(nn.Module):
    """Barlow Twins: the cross-correlation of the batch-standardised embeddings of two views
    pulled to the identity; ``redundancy`` weighs its off-diagonal part."""

    def __init__(self, redundancy: float) -> None:
        super().__init__()
        self.redundancy = redundancy

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        a = (z1 - z1.mean(0)) / (z1.std(0) + 1e-5)
        b = (z2 - z2.mean(0)) / (z2.std(0) + 1e-5)
        c = a.T @ b / len(a)
        diag = torch.diagonal(c)
        return (diag - 1).pow(2).sum() + self.redundancy * (c.pow(2).sum() - diag.pow(2).sum())


@dataclass(frozen=True)
class BarlowTwins(TwoViews):
    """A 16-D manifold in 64-D, views by 30% masking and noise; encoder 64-256(BN)-256(BN)-128
    (ReLU), Barlow Twins loss, Adam 1e-3, batch 256, 800 steps. Without the redundancy term
    (0 instead of 5e-3) every embedding dimension may carry the same feature, and does: the
    128-D ``proj`` falls to about one direction (0.032-0.033 of its room, crossing 0.05 at
    steps 264-352, seeds 0-1); with it, no layer goes below 0.32 (seeds 0-1). About 8 s a
    run."""

    family: ClassVar[str] = "dimensional"
    redundancy: float = 5e-3
    steps: int = 800
    data: ClassVar[Manifold] = Manifold(16, 64, task_seed=911)

    def build(self) -> Setup:
        model = nn.Sequential(
            OrderedDict(
                fc1=nn.Linear(64, 256),
                bn1=nn.BatchNorm1d(256),
                relu1=nn.ReLU(),
                fc2=nn.Linear(256, 256),
                bn2=nn.BatchNorm1d(256),
                relu2=nn.ReLU(),
                proj=nn.Linear(256, 128),
            )
        )
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        heldout = self.heldout_view(self.data.heldout())
        return Setup(model, opt, BarlowLoss(self.redundancy), heldout)

    def view(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return augment(x, generator)

    def batch(self, step: int, generator: torch.Generator) -> Batch:
        return self.views(self.data.sample(256, generator), generator)

    def reference(self) -> reference.Reference:
        return reference.dimensional("fc1", "fc2", "proj")


@dataclass(frozen=True)
class LowRankTargets(Recipe):
    """Regression of y = A x (x ~ N(0, I_32), A of rank ``target_rank``) by an MLP
    32-256-256-256-32 (ReLU) whose fc2 is structurally pruned to 13 of its 256 units (L2
    norm, at build time), AdamW 1e-3 with weight decay 0.1, batch 128, 600 steps. With rank-1
    targets, fc3 and ``out`` fall to one direction (0.031-0.039, crossing at steps 12-18, seeds
    0-1); with full-rank targets the worst layer stays at 0.19-0.2 and the pruned fc2 at
    0.59-0.64 of its room (seeds 0-1; its ratio to its width is below 0.05). About 2-7 s a
    run."""

    family: ClassVar[str] = "dimensional"
    target_rank: int = 32
    steps: int = 600
    task_seed: ClassVar[int] = 912

    def build(self) -> Setup:
        model = nn.Sequential(
            OrderedDict(
                fc1=nn.Linear(32, 256),
                relu1=nn.ReLU(),
                fc2=nn.Linear(256, 256),
                relu2=nn.ReLU(),
                fc3=nn.Linear(256, 256),
                relu3=nn.ReLU(),
                out=nn.Linear(256, 32),
            )
        )
        prune.ln_structured(model.fc2, "weight", amount=0.95, n=2, dim=0)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
        return Setup(model, opt, nn.MSELoss(), _gaussian_heldout(32, self.task_seed))

    def batch(self, step: int, generator: torch.Generator) -> Batch:
        r = self.target_rank
        spectrum = torch.zeros(32)
        spectrum[:r] = math.sqrt(32 / r)
        x = torch.randn(128, 32, generator=generator)
        return x, x @ _linear_map(self.task_seed, spectrum)

    def reference(self) -> reference.Reference:
        return reference.dimensional("fc1", "fc2", "fc3", "out")


class InfoNCE(nn.Module):
    """SimCLR's symmetric InfoNCE between two views' embeddings at ``temperature``."""

    def __init__(self, temperature: float) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        logits = F.normalize(z1, dim=1) @ F.normalize(z2, dim=1).T / self.temperature
        labels = torch.arange(len(logits))
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


@dataclass(frozen=True)
class StrongAugmentation(TwoViews):
    """Contrastive learning on 32-D Gaussian inputs, views by additive noise; encoder
    32-128-64 (ReLU), InfoNCE at temperature 0.2, SGD 0.1 with momentum 0.9, batch 256, 3000
    steps. When the augmentation noise (std 3) swamps every direction but one (Jing et al.,
    "Understanding dimensional collapse in contrastive self-supervised learning"), the
    hidden layer ends with about two directions of 32 (0.057-0.058, just above the default)
    and the embedding dips to 0.048 at steps 120-150 (the crossing) before spreading to
    0.13-0.17 (seeds 0-2); with noise std 0.1 the worst layer stays at 0.87 (seeds 0-2).
    About 7-12 s a run."""

    family: ClassVar[str] = "dimensional"
    noise: float = 0.1
    steps: int = 3000
    task_seed: ClassVar[int] = 913

    def build(self) -> Setup:
        model = nn.Sequential(
            OrderedDict(fc1=nn.Linear(32, 128), relu1=nn.ReLU(), fc2=nn.Linear(128, 64))
        )
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        heldout = self.heldout_view(_gaussian_heldout(32, self.task_seed))
        return Setup(model, opt, InfoNCE(0.2), heldout)

    def view(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        std = torch.full((32,), self.noise)
        std[0] = 0.1  # the one direction the augmentation spares
        return x + std * torch.randn(x.shape, generator=generator)

    def batch(self, step: int, generator: torch.Generator) -> Batch:
        return self.views(torch.randn(256, 32, generator=generator), generator)

    def reference(self) -> reference.Reference:
        return reference.dimensional("fc1", "fc2")


@dataclass(frozen=True)
class DeepLinear(Recipe):
    """Regression of y = A x + noise (A with singular values 2/sqrt(i)) by a deep linear
    network 32-64-64-64-32 (no activation), Adam 1e-3, batch 128, 1500 steps. With an L2
    penalty of 3e-2 in Adam (meant as AdamW's decoupled decay; on a deep linear network it
    favours low rank) every layer ends with one direction (0.031, crossing at step 60,
    seeds 0-1); with 1e-4 the worst layer dips to 0.16 while it learns directions one by
    one and ends at 0.55 (seeds 0-1). About 2 s a run."""

    family: ClassVar[str] = "dimensional"
    weight_decay: float = 1e-4
    steps: int = 1500
    task_seed: ClassVar[int] = 916

    def build(self) -> Setup:
        model = nn.Sequential(
            OrderedDict(
                fc1=nn.Linear(32, 64),
                fc2=nn.Linear(64, 64),
                fc3=nn.Linear(64, 64),
                out=nn.Linear(64, 32),
            )
        )
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=self.weight_decay)
        return Setup(model, opt, nn.MSELoss(), _gaussian_heldout(32, self.task_seed))

    def batch(self, step: int, generator: torch.Generator) -> Batch:
        x = torch.randn(128, 32, generator=generator)
        a = _linear_map(self.task_seed, 2.0 / torch.arange(1, 33).float().sqrt())
        return x, x @ a + 0.1 * torch.randn(128, 32, generator=generator)

    def reference(self) -> reference.Reference:
        return reference.dimensional("fc1", "fc2", "fc3", "out")


register(
    Pair(
        "rank-barlow-no-redundancy",
        "Barlow Twins without its redundancy term: the embedding keeps one direction",
        BarlowTwins(redundancy=0.0),
        BarlowTwins(redundancy=5e-3),
    )
)
register(
    Pair(
        "rank-lowrank-targets-pruned",
        "MLP regression with a pruned layer: rank-1 targets squeeze fc3 to one direction "
        "(control: full-rank targets)",
        LowRankTargets(target_rank=1),
        LowRankTargets(target_rank=32),
    )
)
register(
    Pair(
        "rank-infonce-strong-augmentation",
        "InfoNCE with augmentation noise that spares one direction: the encoder keeps two",
        StrongAugmentation(noise=3.0),
        StrongAugmentation(noise=0.1),
    )
)
register(
    Pair(
        "rank-deep-linear-l2",
        "deep linear network, Adam with L2 3e-2: every layer ends rank one (control 1e-4)",
        DeepLinear(weight_decay=3e-2),
        DeepLinear(weight_decay=1e-4),
        fast=True,
    )
)
