"""Family 3, complete collapse: four mechanisms, none the scenario's (SimSiam without its
stop-gradient).

The truth is SimSiam's output std, sqrt(1 - ||mean unit vector||^2), of the embedding layer's
outputs on a fixed held-out batch (2048 inputs; 512 images; one augmented view of them for
the self-supervised recipes, as the SDK sees); collapsed below 0.1. Values are
measured by ``harness.train`` without the SDK on one CPU thread of an idle 2-core machine.
The controls carry healthy narrow layers: the SimSiam predictor's 16-unit bottleneck, the
output layers of a mixture of experts, and a generator after a 2-D latent.
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from collapsewatch_demo import reference
from collapsewatch_demo.data import GaussianClasses, Shapes, augment, heldout_generator
from collapsewatch_demo.harness import Batch, Recipe, Setup, TwoViews
from collapsewatch_demo.losses import SimSiamLoss
from collapsewatch_demo.validation.registry import Pair, register


class SiameseCNN(nn.Module):
    """A small CNN encoder to a 64-D embedding and, when asked, SimSiam's bottleneck
    predictor 64-16-64; ``forward`` gives (embedding, prediction)."""

    def __init__(self, predictor: bool) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(1, 16, 3, padding=1),
                relu1=nn.ReLU(),
                conv2=nn.Conv2d(16, 32, 3, stride=2, padding=1),
                bn2=nn.BatchNorm2d(32),
                relu2=nn.ReLU(),
                pool=nn.AdaptiveAvgPool2d(1),
                flat=nn.Flatten(),
                fc=nn.Linear(32, 64),
                bn=nn.BatchNorm1d(64),
                relu3=nn.ReLU(),
                embed=nn.Linear(64, 64),
            )
        )
        self.predictor: nn.Module = nn.Identity()
        if predictor:
            self.predictor = nn.Sequential(
                OrderedDict(fc1=nn.Linear(64, 16), relu=nn.ReLU(), fc2=nn.Linear(16, 64))
            )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encoder(x)
        return z, self.predictor(z)


@dataclass(frozen=True)
class SimSiamCNN(TwoViews):
    """SimSiam on 16x16 shape images, views by shifts and noise; :class:`SiameseCNN`, Adam
    3e-3, batch 64, 1000 steps. Without the predictor (stop-gradient kept; Chen and He's
    ablation) the embedding drifts to one direction: 0.02-0.03 at the end, crossing 0.1 at
    steps 190-330 (seeds 0-1); with it, it stays at 0.48-0.66 (seeds 0-1). About 12-18 s a
    run."""

    family: ClassVar[str] = "complete"
    predictor: bool = True
    steps: int = 1000
    data: ClassVar[Shapes] = Shapes(16, task_seed=921)

    def build(self) -> Setup:
        model = SiameseCNN(self.predictor)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        return Setup(model, opt, SimSiamLoss(), self.heldout_view(self.data.heldout()))

    def view(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The images rolled by up to 2 pixels each way, plus noise."""
        dx, dy = (int(v) for v in torch.randint(-2, 3, (2,), generator=generator))
        return torch.roll(x, (dx, dy), dims=(2, 3)) + 0.1 * torch.randn(
            x.shape, generator=generator
        )

    def batch(self, step: int, generator: torch.Generator) -> Batch:
        return self.views(self.data.sample(64, generator)[0], generator)

    def loss(self, setup: Setup, batch: Batch, monitor: Any) -> torch.Tensor:
        (z1, p1), (z2, p2) = setup.model(batch[0]), setup.model(batch[1])
        return setup.criterion(p1, p2, z1, z2)

    def reference(self) -> reference.Reference:
        return reference.complete("encoder.embed")


class MoE(nn.Module):
    """A residual top-1 mixture of ``experts`` MLPs 64-128-64 behind a Linear router."""

    def __init__(self, experts: int = 4) -> None:
        super().__init__()
        self.router = nn.Linear(64, experts)
        self.experts = nn.ModuleList(
            nn.Sequential(
                OrderedDict(fc1=nn.Linear(64, 128), relu=nn.ReLU(), fc2=nn.Linear(128, 64))
            )
            for _ in range(experts)
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        weight, choice = self.router(h).softmax(-1).max(-1)
        out = torch.zeros_like(h)
        for k, expert in enumerate(self.experts):
            mask = choice == k
            if mask.any():
                out[mask] = expert(h[mask]) * weight[mask, None]
        return h + out


class AlignUniform(nn.Module):
    """Wang and Isola's alignment of two views' unit embeddings plus ``uniformity`` times
    their uniformity term log E exp(-2 ||u - v||^2)."""

    def __init__(self, uniformity: float) -> None:
        super().__init__()
        self.uniformity = uniformity

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        a, b = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
        align = (a - b).pow(2).sum(1).mean()
        if self.uniformity == 0:
            return align
        return align + self.uniformity * torch.pdist(a).pow(2).mul(-2).exp().mean().log()


@dataclass(frozen=True)
class AlignmentMoE(TwoViews):
    """Eight Gaussian classes in 32-D, views by 30% masking and noise 0.5; a Linear 32-64, a
    residual top-1 :class:`MoE` of 4 experts, a Linear 64-32 embedding; SGD 0.05 with
    momentum 0.9, batch 256, 1500 steps. Alignment alone (no uniformity term: positives
    without negatives) maps every input to one point: 0.008-0.01, crossing 0.1 at step 60
    (seeds 0-1); with the uniformity term the embedding stays at 0.95-1 (seeds 0-1). About
    6-15 s a run."""

    family: ClassVar[str] = "complete"
    uniformity: float = 1.0
    steps: int = 1500
    data: ClassVar[GaussianClasses] = GaussianClasses(8, 32, 5.0, task_seed=922)

    def build(self) -> Setup:
        model = nn.Sequential(
            OrderedDict(inp=nn.Linear(32, 64), moe=MoE(), embed=nn.Linear(64, 32))
        )
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        heldout = self.heldout_view(self.data.heldout())
        return Setup(model, opt, AlignUniform(self.uniformity), heldout)

    def view(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return augment(x, generator, noise=0.5)

    def batch(self, step: int, generator: torch.Generator) -> Batch:
        return self.views(self.data.sample(256, generator)[0], generator)

    def reference(self) -> reference.Reference:
        return reference.complete("embed")


class DinoLoss(nn.Module):
    """Cross-entropy of the student's softmax (temperature 0.1) against the teacher's
    probabilities."""

    def forward(self, student: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
        return -(teacher_probs * F.log_softmax(student / 0.1, dim=-1)).sum(-1).mean()


@dataclass(frozen=True)
class Dino(TwoViews):
    """DINO on sixteen Gaussian classes in 32-D, views by masking and noise 0.3; student MLP
    32-128-128-64 (ReLU), teacher its EMA (momentum 0.99), teacher temperature 0.04, AdamW
    1e-2 with weight decay 0.04, batch 128, 300 steps. Without centering the teacher's
    sharpened outputs settle on one dimension and the student follows: 0.05-0.09, crossing
    0.1 at steps 15-18 (seeds 0-2); with centering the head dips to 0.24-0.42 early and ends
    at 0.82-0.87 (seeds 0-2). About 1 s a run."""

    family: ClassVar[str] = "complete"
    centering: bool = True
    steps: int = 300
    data: ClassVar[GaussianClasses] = GaussianClasses(16, 32, 5.0, task_seed=923)

    def build(self) -> Setup:
        model = nn.Sequential(
            OrderedDict(
                fc1=nn.Linear(32, 128),
                relu1=nn.ReLU(),
                fc2=nn.Linear(128, 128),
                relu2=nn.ReLU(),
                head=nn.Linear(128, 64),
            )
        )
        parts = {"teacher": copy.deepcopy(model).requires_grad_(False), "center": torch.zeros(64)}
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.04)
        heldout = self.heldout_view(self.data.heldout())
        return Setup(model, opt, DinoLoss(), heldout, parts=parts)

    def view(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return augment(x, generator, noise=0.3)

    def batch(self, step: int, generator: torch.Generator) -> Batch:
        return self.views(self.data.sample(128, generator)[0], generator)

    def loss(self, setup: Setup, batch: Batch, monitor: Any) -> torch.Tensor:
        teacher, center = setup.parts["teacher"], setup.parts["center"]
        with torch.no_grad():
            t1, t2 = teacher(batch[0]), teacher(batch[1])
            c = center if self.centering else torch.zeros_like(center)
            q1, q2 = F.softmax((t1 - c) / 0.04, -1), F.softmax((t2 - c) / 0.04, -1)
            center.mul_(0.9).add_(0.1 * torch.cat((t1, t2)).mean(0))
        s1, s2 = setup.model(batch[0]), setup.model(batch[1])
        return (setup.criterion(s1, q2) + setup.criterion(s2, q1)) / 2

    def train_step(
        self, setup: Setup, step: int, generator: torch.Generator, monitor: Any
    ) -> float:
        loss = super().train_step(setup, step, generator, monitor)
        with torch.no_grad():
            teacher = setup.parts["teacher"]
            for ps, pt in zip(setup.model.parameters(), teacher.parameters(), strict=True):
                pt.mul_(0.99).add_(0.01 * ps)
        return loss

    def reference(self) -> reference.Reference:
        return reference.complete("head")


#: Centres of the ring of eight Gaussians (radius 2) the GAN learns.
RING = torch.tensor(
    [[2 * math.cos(2 * math.pi * k / 8), 2 * math.sin(2 * math.pi * k / 8)] for k in range(8)]
)


class Discriminator(nn.Module):
    """MLP 2-128-128-1 (LeakyReLU 0.2), with the batch's mean std as an extra input feature
    when ``minibatch_std`` (so a batch of identical samples is easy to spot)."""

    def __init__(self, minibatch_std: bool) -> None:
        super().__init__()
        self.minibatch_std = minibatch_std
        self.body = nn.Sequential(
            nn.Linear(2 + minibatch_std, 128),
            nn.LeakyReLU(0.2),
            nn.Linear(128, 128),
            nn.LeakyReLU(0.2),
            nn.Linear(128, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.minibatch_std:
            x = torch.cat((x, x.std(0).mean().expand(len(x), 1)), 1)
        return self.body(x)


@dataclass(frozen=True)
class RingGAN(Recipe):
    """A GAN on a ring of eight Gaussians (std 0.02); generator 2-128-128-2 (ReLU) from a 2-D
    latent, Adam 2e-3 (beta1 0.5), discriminator Adam 2e-4, batch 256, 2000 steps; the SDK
    watches the generator. The plain discriminator lets the generator put every sample on
    one or two modes, hopping between them: the output std falls from 0.51 (the init) to
    0.02-0.04 by step 20 and then moves between 0.02 and 0.24 (seeds 1-2); the minibatch-std
    feature keeps all modes, 1.0 from step 160 on (seeds 1-2). Seed 1: at seed 0 the
    untrained generator already reads 0.11, at the threshold. About 7-16 s a run."""

    family: ClassVar[str] = "complete"
    minibatch_std: bool = True
    steps: int = 2000
    seed: int = 1

    def build(self) -> Setup:
        gen = nn.Sequential(
            OrderedDict(
                fc1=nn.Linear(2, 128),
                relu1=nn.ReLU(),
                fc2=nn.Linear(128, 128),
                relu2=nn.ReLU(),
                out=nn.Linear(128, 2),
            )
        )
        disc = Discriminator(self.minibatch_std)
        parts = {
            "disc": disc,
            "opt_disc": torch.optim.Adam(disc.parameters(), lr=2e-4, betas=(0.5, 0.999)),
            "disc_loss": nn.BCEWithLogitsLoss(),  # not the criterion: the SDK records that one
        }
        opt = torch.optim.Adam(gen.parameters(), lr=2e-3, betas=(0.5, 0.999))
        z = torch.randn(2048, 2, generator=heldout_generator(924))
        return Setup(gen, opt, nn.BCEWithLogitsLoss(), z, parts=parts)

    def batch(self, step: int, generator: torch.Generator) -> Batch:
        k = torch.randint(0, 8, (256,), generator=generator)
        real = RING[k] + 0.02 * torch.randn(256, 2, generator=generator)
        return real, torch.randn(256, 2, generator=generator)

    def train_step(
        self, setup: Setup, step: int, generator: torch.Generator, monitor: Any
    ) -> float:
        real, z = self.batch(step, generator)
        disc, opt_disc, disc_loss = (setup.parts[k] for k in ("disc", "opt_disc", "disc_loss"))
        fake = setup.model(z)
        ones, zeros = torch.ones(len(real), 1), torch.zeros(len(real), 1)
        loss_d = disc_loss(disc(real), ones) + disc_loss(disc(fake.detach()), zeros)
        opt_disc.zero_grad()
        loss_d.backward()
        opt_disc.step()
        loss_g = setup.criterion(disc(fake), ones)
        setup.optimizer.zero_grad()
        loss_g.backward()
        setup.optimizer.step()
        return float(loss_g.detach())

    def reference(self) -> reference.Reference:
        return reference.complete("out")


register(
    Pair(
        "complete-simsiam-cnn-no-predictor",
        "SimSiam CNN without its predictor: the embedding drifts to one direction "
        "(control: with the bottleneck predictor)",
        SimSiamCNN(predictor=False),
        SimSiamCNN(predictor=True),
    )
)
register(
    Pair(
        "complete-alignment-only-moe",
        "positives without negatives (alignment, no uniformity) through a mixture of experts: "
        "one point for every input",
        AlignmentMoE(uniformity=0.0),
        AlignmentMoE(uniformity=1.0),
    )
)
register(
    Pair(
        "complete-dino-no-centering-300",
        "DINO without centering: the teacher settles on one dimension within 20 steps",
        Dino(centering=False),
        Dino(centering=True),
        fast=True,
    )
)
register(
    Pair(
        "complete-gan-ring-2d-latent",
        "GAN from a 2-D latent with a plain discriminator: every sample on one or two modes "
        "(control: minibatch-std discriminator)",
        RingGAN(minibatch_std=False),
        RingGAN(minibatch_std=True),
    )
)
