"""Family 7, VAE posterior collapse: mechanisms other than the scenario's (a large fixed
observation variance on an MLP VAE, Adam).

The truth is the share of active units, Var_x(mu_j) > 0.01 over a fixed held-out batch (2048
inputs; 512 images), measured on the encoder layer that gives ``[mu | logvar]``; collapsed
below 0.5. Every recipe calls ``monitor.log_posterior`` on sampled steps (``monitor.sampled``).
Values are measured by ``harness.train`` without the SDK on one CPU thread of an idle 2-core
machine.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from collapsewatch_demo import reference
from collapsewatch_demo.data import GaussianClasses, Shapes
from collapsewatch_demo.harness import Batch, Recipe, Setup
from collapsewatch_demo.validation.registry import Pair, register

#: The posterior's logger name in every recipe (not a module's name: the SDK refuses a logger
#: named like a watched layer).
POSTERIOR = "z"


def kl_per_row(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return 0.5 * (mu.square() + logvar.exp() - 1 - logvar).sum(1)


class ConvVAE(nn.Module):
    """16x16 images: two stride-2 convolutions, a LayerNorm and a Linear ``posterior`` giving
    ``[mu | logvar]`` of ``latent`` dims; a Linear and two transposed convolutions back to
    logits."""

    def __init__(self, latent: int) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 16, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.LayerNorm(32 * 16),
        )
        self.posterior = nn.Linear(32 * 16, 2 * latent)
        self.expand = nn.Linear(latent, 32 * 16)
        self.decoder = nn.Sequential(
            nn.ReLU(),
            nn.Unflatten(1, (32, 4, 4)),
            nn.ConvTranspose2d(32, 16, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(16, 1, 4, stride=2, padding=1),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.posterior(self.encoder(x)).chunk(2, dim=1)
        return mu, logvar


@dataclass(frozen=True)
class ShapesBetaVAE(Recipe):
    """A convolutional beta-VAE on 16x16 shape images (pixels in [0, 1], Bernoulli
    likelihood summed over pixels), 6 latent dims, AdamW 1e-3, batch 64, 1500 steps; the
    KL term weighted by ``beta``. At beta 40 (a beta-VAE pushed for disentanglement) every
    posterior falls to the prior: 0 of 6 units active from step 30 on (the truth crosses at
    30, seed 0); at beta 1 all 6 stay active from step 0 to the end (seed 0). About 13 s a
    run (over a minute beside busy neighbours)."""

    family: ClassVar[str] = "posterior"
    loggers: ClassVar[tuple[str, ...]] = ("log_posterior",)
    beta: float = 1.0
    steps: int = 1500
    data: ClassVar[Shapes] = Shapes(16, task_seed=971)

    def build(self) -> Setup:
        model = ConvVAE(latent=6)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        return Setup(model, opt, nn.BCEWithLogitsLoss(reduction="sum"), self.data.heldout())

    def batch(self, step: int, generator: torch.Generator) -> Batch:
        x = self.data.sample(64, generator)[0]
        return x, torch.randn(64, 6, generator=generator)

    def loss(self, setup: Setup, batch: Batch, monitor: Any) -> torch.Tensor:
        x, eps = batch
        model: ConvVAE = setup.model  # type: ignore[assignment]
        mu, logvar = model(x)
        if monitor.sampled:
            monitor.log_posterior(POSTERIOR, mu, logvar)
        z = mu + eps * (0.5 * logvar).exp()
        recon = setup.criterion(model.decoder(model.expand(z)), x) / len(x)
        return recon + self.beta * kl_per_row(mu, logvar).mean()

    def reference(self) -> reference.Reference:
        return reference.posterior_active_units("posterior", logged_as=POSTERIOR)


class PeekingVAE(nn.Module):
    """MLP VAE 32-64-(2 x 8) (ReLU) whose decoder 8(+32)-64-32 also gets a noisy copy of the
    input when ``peek`` (a decoder strong enough to do without the latent code, as an
    autoregressive one is)."""

    def __init__(self, peek: bool) -> None:
        super().__init__()
        self.peek = peek
        self.encoder = nn.Sequential(
            OrderedDict(fc=nn.Linear(32, 64), relu=nn.ReLU(), posterior=nn.Linear(64, 16))
        )
        self.decoder = nn.Sequential(
            OrderedDict(fc=nn.Linear(8 + 32 * peek, 64), relu=nn.ReLU(), out=nn.Linear(64, 32))
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar


@dataclass(frozen=True)
class PeekingDecoderVAE(Recipe):
    """Eight Gaussian classes in 32-D, Gaussian likelihood (unit variance, summed), SGD 0.01
    with momentum 0.9, batch 128, 800 steps. When the decoder also sees the input with noise
    of std 0.5 it reconstructs without z, and the KL term drives every posterior to the
    prior: active units 1.0 at step 0, 0.62 at 40, 0 from step 48-80 on (seed 0); without
    the peek it needs z: 0.88-1.0 all along (seed 0). About 1 s a run."""

    family: ClassVar[str] = "posterior"
    loggers: ClassVar[tuple[str, ...]] = ("log_posterior",)
    peek: bool = False
    steps: int = 800
    data: ClassVar[GaussianClasses] = GaussianClasses(8, 32, 6.0, task_seed=972)

    def build(self) -> Setup:
        model = PeekingVAE(self.peek)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        return Setup(model, opt, nn.MSELoss(reduction="sum"), self.data.heldout())

    def batch(self, step: int, generator: torch.Generator) -> Batch:
        x = self.data.sample(128, generator)[0]
        eps = torch.randn(128, 8, generator=generator)
        return x, eps, torch.randn(x.shape, generator=generator)

    def loss(self, setup: Setup, batch: Batch, monitor: Any) -> torch.Tensor:
        x, eps, noise = batch
        model: PeekingVAE = setup.model  # type: ignore[assignment]
        mu, logvar = model(x)
        if monitor.sampled:
            monitor.log_posterior(POSTERIOR, mu, logvar)
        z = mu + eps * (0.5 * logvar).exp()
        if self.peek:
            z = torch.cat((z, x + 0.5 * noise), 1)
        recon = 0.5 * setup.criterion(model.decoder(z), x) / len(x)
        return recon + kl_per_row(mu, logvar).mean()

    def reference(self) -> reference.Reference:
        return reference.posterior_active_units("encoder.posterior", logged_as=POSTERIOR)


class LabelledVAE(nn.Module):
    """MLP VAE 24-64-(2 x 4) (tanh); the decoder 4(+10)-64-24 also gets the one-hot class
    label when ``conditional`` (a conditional VAE)."""

    def __init__(self, conditional: bool) -> None:
        super().__init__()
        self.conditional = conditional
        self.encoder = nn.Sequential(
            OrderedDict(fc=nn.Linear(24, 64), act=nn.Tanh(), posterior=nn.Linear(64, 8))
        )
        self.decoder = nn.Sequential(
            OrderedDict(
                fc=nn.Linear(4 + 10 * conditional, 64), act=nn.Tanh(), out=nn.Linear(64, 24)
            )
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar


@dataclass(frozen=True)
class ClassConditionalVAE(Recipe):
    """Ten Gaussian classes in 24-D (unit noise around well separated means), Gaussian
    likelihood of variance 2, 4 latent dims, RMSprop 1e-3, batch 256, 2500 steps. When the
    decoder is also given the class label, the label explains everything the data holds
    beyond its noise, so z is not worth its KL: all 4 units active until step 250, 2 at
    375, none from step 400-500 on (seed 0). Without the label z must carry the class: 4 of
    4 active all along (seed 0). At variance 1 the conditional run only falls to 2 of 4
    units, slowly (crossing at 2100). About 15-20 s a run."""

    family: ClassVar[str] = "posterior"
    loggers: ClassVar[tuple[str, ...]] = ("log_posterior",)
    conditional: bool = False
    variance: ClassVar[float] = 2.0
    steps: int = 2500
    data: ClassVar[GaussianClasses] = GaussianClasses(10, 24, 8.0, task_seed=973)

    def build(self) -> Setup:
        model = LabelledVAE(self.conditional)
        opt = torch.optim.RMSprop(model.parameters(), lr=1e-3)
        return Setup(model, opt, nn.MSELoss(reduction="sum"), self.data.heldout())

    def batch(self, step: int, generator: torch.Generator) -> Batch:
        x, y = self.data.sample(256, generator)
        return x, y, torch.randn(256, 4, generator=generator)

    def loss(self, setup: Setup, batch: Batch, monitor: Any) -> torch.Tensor:
        x, y, eps = batch
        model: LabelledVAE = setup.model  # type: ignore[assignment]
        mu, logvar = model(x)
        if monitor.sampled:
            monitor.log_posterior(POSTERIOR, mu, logvar)
        z = mu + eps * (0.5 * logvar).exp()
        if self.conditional:
            z = torch.cat((z, F.one_hot(y, 10).float()), 1)
        recon = setup.criterion(model.decoder(z), x) / (2 * self.variance * len(x))
        return recon + kl_per_row(mu, logvar).mean()

    def reference(self) -> reference.Reference:
        return reference.posterior_active_units("encoder.posterior", logged_as=POSTERIOR)


register(
    Pair(
        "posterior-conv-beta40-adamw",
        "convolutional beta-VAE at beta 40: every posterior falls to the prior within 30 "
        "steps (control: beta 1)",
        ShapesBetaVAE(beta=40.0),
        ShapesBetaVAE(beta=1.0),
    )
)
register(
    Pair(
        "posterior-peeking-decoder-800",
        "MLP VAE whose decoder also sees a noisy copy of the input: it ignores z and every "
        "latent unit goes inactive (control: the decoder sees z only)",
        PeekingDecoderVAE(peek=True),
        PeekingDecoderVAE(peek=False),
    )
)
register(
    Pair(
        "posterior-cvae-label-explains-2500",
        "conditional VAE whose decoder gets the class label: the label explains the data and "
        "every latent unit goes inactive from step 400 (control: no label)",
        ClassConditionalVAE(conditional=True),
        ClassConditionalVAE(conditional=False),
    )
)
