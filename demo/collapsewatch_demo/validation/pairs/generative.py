"""Family 12, generative mode collapse: mechanisms other than the scenario's (a ring of eight
Gaussians from a 2-D latent, a generator ten times faster than its discriminator, fixed by a
minibatch-std feature).

The truth is the diversity ratio, the mean pairwise distance of the generator's outputs on a
fixed held-out batch of 2048 latents over that of 2048 real samples; collapsed below 0.5.
Every ``LOG_EVERY`` steps the recipes call ``monitor.log_samples`` with 256 generated and
256 real samples, as an evaluation would. Values are measured by ``harness.train`` without
the SDK on one CPU thread of an idle 2-core machine.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from collapsewatch_demo import reference
from collapsewatch_demo.data import HELDOUT, HELDOUT_IMAGES, Shapes, heldout_generator
from collapsewatch_demo.harness import Batch, Recipe, Setup, adversarial_step
from collapsewatch_demo.validation.registry import Pair, register

#: The generator's samples logger name in every recipe.
SAMPLES = "samples"
#: Steps between two calls of ``log_samples``.
LOG_EVERY = 25


class Grid:
    """A 5 x 5 grid of Gaussians (spacing 2, std 0.05) in the plane."""

    def __init__(self, task_seed: int) -> None:
        axis = torch.arange(-2, 3, dtype=torch.float32) * 2
        self.centres = torch.cartesian_prod(axis, axis)
        self.task_seed = task_seed

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        k = torch.randint(0, len(self.centres), (n,), generator=generator)
        return self.centres[k] + 0.05 * torch.randn(n, 2, generator=generator)

    def heldout(self) -> torch.Tensor:
        return self.sample(HELDOUT, heldout_generator(self.task_seed))


def _mlp(sizes: list[int], slope: float = 0.2) -> nn.Sequential:
    """Linear layers fc1, fc2, ... with LeakyReLU between them; the last is ``out``."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for i, (a, b) in enumerate(itertools.pairwise(sizes), start=1):
        last = i == len(sizes) - 1
        layers["out" if last else f"fc{i}"] = nn.Linear(a, b)
        if not last:
            layers[f"act{i}"] = nn.LeakyReLU(slope)
    return nn.Sequential(layers)


def _scale_output(gen: nn.Sequential, gain: float) -> None:
    """Multiply the output layer's initial weights: an untrained generator's samples then
    spread about as much as the data instead of gathering at one point, so a healthy run
    does not read as collapsed before it has learned anything."""
    out = gen.get_submodule("out")
    assert isinstance(out, nn.Linear)
    with torch.no_grad():
        out.weight.mul_(gain)


class PackedDiscriminator(nn.Module):
    """An MLP critic that judges ``pack`` samples at once, concatenated (PacGAN): a batch of
    near-identical samples is then easy to call fake."""

    def __init__(self, dim: int, pack: int) -> None:
        super().__init__()
        self.pack = pack
        self.body = _mlp([dim * pack, 128, 128, 1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.reshape(len(x) // self.pack, -1))


@dataclass(frozen=True)
class GridGAN(Recipe):
    """A GAN on :class:`Grid`: generator 8-64-64-64-2 (LeakyReLU) from an 8-D latent,
    non-saturating loss, Adam (beta1 0.5) at 1e-3 for the generator and 1e-4 for the
    discriminator, batch 128, 1500 steps; the discriminator sees ``pack`` samples at once.
    The generator's output layer starts 60 times PyTorch's default, so its samples spread
    over the grid from the start (0.75 at step 0) instead of gathering at one point. With a
    plain discriminator the generator gathers on a few modes and hops between them: 0.25
    at step 75, then 0.13-0.99, 0.18 at the end (seed 0); PacGAN2 keeps it at 0.71-1.48
    (seed 0). About 15-50 s a run."""

    family: ClassVar[str] = "generative"
    loggers: ClassVar[tuple[str, ...]] = ("log_samples",)
    pack: int = 1
    out_gain: ClassVar[float] = 60.0
    steps: int = 1500
    data: ClassVar[Grid] = Grid(task_seed=1201)

    def build(self) -> Setup:
        gen = _mlp([8, 64, 64, 64, 2])
        _scale_output(gen, self.out_gain)
        disc = PackedDiscriminator(2, self.pack)
        parts = {
            "disc": disc,
            "opt_disc": torch.optim.Adam(disc.parameters(), lr=1e-4, betas=(0.5, 0.999)),
            "disc_loss": nn.BCEWithLogitsLoss(),  # not the criterion: the SDK records that one
        }
        opt = torch.optim.Adam(gen.parameters(), lr=1e-3, betas=(0.5, 0.999))
        z = torch.randn(HELDOUT, 8, generator=heldout_generator(1202))
        return Setup(gen, opt, nn.BCEWithLogitsLoss(), z, parts=parts)

    def batch(self, step: int, generator: torch.Generator) -> Batch:
        return self.data.sample(128, generator), torch.randn(128, 8, generator=generator)

    def train_step(
        self, setup: Setup, step: int, generator: torch.Generator, monitor: Any
    ) -> float:
        real, z = self.batch(step, generator)
        fake = setup.model(z)
        if step % LOG_EVERY == 0:
            monitor.log_samples(SAMPLES, fake.detach(), reference=real)
        return adversarial_step(setup, real, fake, verdicts=len(real) // self.pack)

    def reference(self) -> reference.Reference:
        return reference.generative("out", SAMPLES, self.data.heldout())


def mmd(x: torch.Tensor, y: torch.Tensor, scales: tuple[float, ...]) -> torch.Tensor:
    """Squared maximum mean discrepancy of two samples under a sum of Gaussian kernels of
    the given bandwidths (biased estimate: its minimum is at matching distributions)."""
    both = torch.cat((x, y))
    d2 = torch.cdist(both, both).square()
    k = sum(torch.exp(-d2 / (2 * s * s)) for s in scales)
    assert isinstance(k, torch.Tensor)
    n = len(x)
    return k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()


@dataclass(frozen=True)
class ShapesGenerator(Recipe):
    """A generator of 16x16 shape images (flattened to 256 values): MLP 16-128-128-256
    (LeakyReLU) from a 16-D latent, RMSprop 1e-3, batch 64, 500 steps, trained against a
    batch of real images drawn independently of its latents. ``loss`` "mmd": the Gaussian-
    kernel MMD of the two batches (a generative moment-matching network). "mse": the pixel
    MSE between each generated image and the real one it was paired with by chance, whose
    minimiser is the mean image for every latent (a reconstruction loss where no pairing
    exists). The output layer starts 10 times PyTorch's default (3.15 at step 0). MSE:
    0.45 at step 25, 0.13 at the end (seed 0); MMD: 0.96-1.05 from step 25 on (seed 0).
    About 12-25 s a run."""

    family: ClassVar[str] = "generative"
    loggers: ClassVar[tuple[str, ...]] = ("log_samples",)
    loss_kind: str = "mmd"
    out_gain: ClassVar[float] = 10.0
    steps: int = 500
    data: ClassVar[Shapes] = Shapes(16, task_seed=1203)

    def build(self) -> Setup:
        gen = _mlp([16, 128, 128, 256])
        _scale_output(gen, self.out_gain)
        opt = torch.optim.RMSprop(gen.parameters(), lr=1e-3)
        z = torch.randn(HELDOUT_IMAGES, 16, generator=heldout_generator(1204))
        return Setup(gen, opt, nn.MSELoss(), z)

    def batch(self, step: int, generator: torch.Generator) -> Batch:
        real = self.data.sample(64, generator)[0].flatten(1)
        return real, torch.randn(64, 16, generator=generator)

    def loss(self, setup: Setup, batch: Batch, monitor: Any) -> torch.Tensor:
        real, z = batch
        fake = setup.model(z)
        if self.loss_kind == "mse":
            return setup.criterion(fake, real)
        return mmd(fake, real, (2.0, 5.0, 10.0))

    def train_step(
        self, setup: Setup, step: int, generator: torch.Generator, monitor: Any
    ) -> float:
        if step % LOG_EVERY == 0:
            with torch.no_grad():
                real, z = (
                    self.data.sample(256, generator)[0].flatten(1),
                    torch.randn(256, 16, generator=generator),
                )
                monitor.log_samples(SAMPLES, setup.model(z), reference=real)
        return super().train_step(setup, step, generator, monitor)

    def reference(self) -> reference.Reference:
        real = self.data.sample(HELDOUT_IMAGES, heldout_generator(1205))[0]
        return reference.generative("out", SAMPLES, real)


class Waves:
    """Sine waves of 32 samples over one period of time: frequency uniform in [1, 3],
    amplitude in [0.5, 1.5], any phase, an offset of std 0.3."""

    length = 32

    def __init__(self, task_seed: int) -> None:
        self.task_seed = task_seed

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        t = torch.linspace(0, 1, self.length).view(1, -1)
        f, a, phase = torch.rand(3, n, 1, generator=generator)
        offset = 0.3 * torch.randn(n, 1, generator=generator)
        return (0.5 + a) * torch.sin(2 * torch.pi * ((1 + 2 * f) * t + phase)) + offset

    def heldout(self) -> torch.Tensor:
        return self.sample(HELDOUT, heldout_generator(self.task_seed))


class WaveGenerator(nn.Module):
    """A 1-D deconvolutional generator: an 8-D latent through a Linear to 32 channels x 8
    positions, ConvTranspose1d to 16 x 16, then ``out``, ConvTranspose1d to 1 x 32 (LeakyReLU
    between); samples come out as ``[n, 32]``."""

    def __init__(self, latent: int) -> None:
        super().__init__()
        self.fc = nn.Linear(latent, 32 * 8)
        self.up = nn.ConvTranspose1d(32, 16, 4, stride=2, padding=1)
        self.out = nn.ConvTranspose1d(16, 1, 4, stride=2, padding=1)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.act(self.fc(z)).view(len(z), 32, 8)
        return self.out(self.act(self.up(h))).squeeze(1)


@dataclass(frozen=True)
class SelfConsumingWaves(Recipe):
    """A :class:`WaveGenerator` of :class:`Waves` trained by the Gaussian-kernel MMD of a
    batch of 64 samples against 64 training waves, SGD 0.1 with momentum 0.9, 3000 steps:
    600 steps on real waves, then generations of 400 steps, each starting by drawing 2048
    samples of the current generator with the truncation trick (latents times 0.7, what
    sampling for quality does), which the same weights go on training on. ``real``: the
    share of each batch drawn fresh from the real waves, the rest from the generation's
    samples. Trained on its own truncated samples only, the generator's spread shrinks
    generation after generation (self-consuming loops with a sampling bias, Alemohammad et
    al.): 1.37 at step 0 (the output layer starts ``out_gain`` times PyTorch's default),
    0.97 at step 600, 0.66 after one generation, below 0.5 from step 1020, 0.05 at the end
    (seed 0). Trained on real waves throughout it stays at 0.94-1.05 after its first steps.
    (At SGD 0.3 the self-consuming run also diverged now and then: 18.6 at step 2880.) About
    25-60 s a run on the shared machine."""

    family: ClassVar[str] = "generative"
    loggers: ClassVar[tuple[str, ...]] = ("log_samples",)
    real: float = 1.0
    steps: int = 3000
    pretrain: ClassVar[int] = 600
    generation: ClassVar[int] = 400
    truncation: ClassVar[float] = 0.7
    out_gain: ClassVar[float] = 5.0
    latent: ClassVar[int] = 8
    data: ClassVar[Waves] = Waves(task_seed=1206)

    def build(self) -> Setup:
        gen = WaveGenerator(self.latent)
        with torch.no_grad():
            gen.out.weight.mul_(self.out_gain)  # samples spread from the start (see _scale_output)
        opt = torch.optim.SGD(gen.parameters(), lr=0.1, momentum=0.9)
        z = torch.randn(HELDOUT, self.latent, generator=heldout_generator(1207))
        return Setup(gen, opt, nn.MSELoss(), z)

    def train_step(
        self, setup: Setup, step: int, generator: torch.Generator, monitor: Any
    ) -> float:
        since = step - self.pretrain
        if since >= 0 and since % self.generation == 0:
            with torch.no_grad():
                z = torch.randn(2048, self.latent, generator=generator)
                setup.parts["samples"] = setup.model(self.truncation * z)
        if step % LOG_EVERY == 0:
            with torch.no_grad():
                z = torch.randn(256, self.latent, generator=generator)
                monitor.log_samples(
                    SAMPLES, setup.model(z), reference=self.data.sample(256, generator)
                )
        fresh = 64 if "samples" not in setup.parts else round(self.real * 64)
        target = self.data.sample(fresh, generator)
        if fresh < 64:
            samples = setup.parts["samples"]
            pick = torch.randint(0, len(samples), (64 - fresh,), generator=generator)
            target = torch.cat((target, samples[pick]))
        fake = setup.model(torch.randn(64, self.latent, generator=generator))
        return self.optimise(setup, mmd(fake, target, (2.0, 5.0, 10.0)))

    def reference(self) -> reference.Reference:
        return reference.generative("out", SAMPLES, self.data.heldout())


register(
    Pair(
        "generative-grid-gan-no-pacgan",
        "GAN on a 5 x 5 grid from an 8-D latent with a plain discriminator: the samples "
        "gather on a few modes (control: PacGAN2 discriminator)",
        GridGAN(pack=1),
        GridGAN(pack=2),
    )
)
register(
    Pair(
        "generative-shapes-mse-generator-500",
        "image generator trained by pixel MSE against unpaired real images: every latent "
        "gives the mean image (control: Gaussian-kernel MMD)",
        ShapesGenerator(loss_kind="mse"),
        ShapesGenerator(loss_kind="mmd"),
    )
)
register(
    Pair(
        "generative-waves-self-consuming",
        "1-D deconvolutional MMD generator retrained generation after generation on its own "
        "truncated samples: its spread shrinks (control: real waves only)",
        SelfConsumingWaves(real=0.0),
        SelfConsumingWaves(real=1.0),
    )
)
