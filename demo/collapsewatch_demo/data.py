"""Synthetic data made in code (nothing is downloaded), shared by the recipes.

Every task is fixed by its own seed (the same for every run and training seed); batches are
drawn from the generator the harness hands a recipe, held-out batches from a generator seeded
with the task's seed plus one, so they never overlap the training stream's draws.
"""

from __future__ import annotations

import math

import torch

#: Rows of every held-out batch a reference is computed on.
HELDOUT = 2048
#: Images of a held-out batch: each gives a row per position (256 for 16 x 16), so 512 images
#: give a convolution's channels 131,072 rows at the first layer.
HELDOUT_IMAGES = 512
#: Signals of a held-out batch of 1-D sequences.
HELDOUT_SIGNALS = 512


def heldout_generator(task_seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(task_seed + 1)


class GaussianClasses:
    """``classes`` Gaussian clusters in ``dim`` dimensions: class means drawn once with norm
    about ``separation``, unit isotropic noise around them; inputs times ``scale``."""

    def __init__(
        self, classes: int, dim: int, separation: float, task_seed: int, scale: float = 1.0
    ) -> None:
        g = torch.Generator().manual_seed(task_seed)
        self.means = torch.randn(classes, dim, generator=g) * separation / math.sqrt(dim)
        self.classes, self.dim, self.scale, self.task_seed = classes, dim, scale, task_seed

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, self.classes, (n,), generator=generator)
        x = self.means[y] + torch.randn(n, self.dim, generator=generator)
        return x * self.scale, y

    def heldout(self) -> torch.Tensor:
        return self.sample(HELDOUT, heldout_generator(self.task_seed))[0]


class Manifold:
    """Inputs on a ``latent``-dimensional manifold in ``dim`` dimensions: ``tanh`` of a fixed
    random linear map of Gaussian codes (weights of std ``spread / sqrt(latent)``: the larger,
    the more the tanh bends the manifold), standardised per coordinate."""

    def __init__(self, latent: int, dim: int, task_seed: int, spread: float = 1.5) -> None:
        g = torch.Generator().manual_seed(task_seed)
        self.w = torch.randn(latent, dim, generator=g) * spread / math.sqrt(latent)
        self.latent, self.task_seed = latent, task_seed
        x = torch.tanh(torch.randn(20_000, latent, generator=g) @ self.w)
        self.mean, self.std = x.mean(0), x.std(0)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        z = torch.randn(n, self.latent, generator=generator)
        return (torch.tanh(z @ self.w) - self.mean) / self.std

    def heldout(self) -> torch.Tensor:
        return self.sample(HELDOUT, heldout_generator(self.task_seed))


class Shapes:
    """``size x size`` one-channel images of four classes (a horizontal bar, a vertical bar, a
    diagonal, a square blob) at random positions and contrasts, plus pixel noise; pixel values
    in about [0, 1] times ``scale`` (255 for raw 8-bit pixels)."""

    CLASSES = 4

    def __init__(self, size: int, task_seed: int, scale: float = 1.0) -> None:
        self.size, self.task_seed, self.scale = size, task_seed, scale

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.size
        y = torch.randint(0, self.CLASSES, (n,), generator=generator)
        pos = torch.randint(2, s - 2, (n, 2), generator=generator)
        contrast = 0.5 + 0.5 * torch.rand(n, generator=generator)
        rows = torch.arange(s).view(1, s, 1)
        cols = torch.arange(s).view(1, 1, s)
        r, c = pos[:, 0].view(n, 1, 1), pos[:, 1].view(n, 1, 1)
        shapes = torch.stack(
            (
                ((rows - r).abs() <= 1).expand(n, s, s),  # horizontal bar
                ((cols - c).abs() <= 1).expand(n, s, s),  # vertical bar
                ((rows - cols - (r - c)).abs() <= 1),  # diagonal through (r, c)
                ((rows - r).abs() <= 2) & ((cols - c).abs() <= 2),  # square blob
            ),
            dim=1,
        )
        img = shapes[torch.arange(n), y].float() * contrast.view(n, 1, 1)
        img = (img + 0.1 * torch.randn(n, s, s, generator=generator)).clamp(0, 1)
        return img.unsqueeze(1) * self.scale, y

    def heldout(self) -> torch.Tensor:
        return self.sample(HELDOUT_IMAGES, heldout_generator(self.task_seed))[0]


class Waveforms:
    """Signals of ``length`` samples in 16 classes: 4 shapes (sine, square, sawtooth,
    triangle) times 4 frequencies (1-4 cycles), random phase and amplitude 0.7-1.3, plus
    Gaussian noise of std 0.1, as ``[n, 1, length]``; the class is the label."""

    CLASSES = 16

    def __init__(self, length: int, task_seed: int) -> None:
        self.length, self.task_seed = length, task_seed

    def of(self, y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Signals of the classes ``y``."""
        n = len(y)
        cycles = (y // 4 + 1).view(n, 1).float()
        phase = torch.rand(n, 1, generator=generator)
        t = (torch.arange(self.length).view(1, -1) / self.length * cycles + phase) % 1.0
        shapes = torch.stack(
            (
                torch.sin(2 * math.pi * t),
                torch.where(t < 0.5, 1.0, -1.0),
                2 * t - 1,
                1 - 4 * (t - 0.5).abs(),
            ),
            1,
        )
        wave = shapes[torch.arange(n), y % 4]
        amp = 0.7 + 0.6 * torch.rand(n, 1, generator=generator)
        noise = 0.1 * torch.randn(n, self.length, generator=generator)
        return (amp * wave + noise).unsqueeze(1)

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, self.CLASSES, (n,), generator=generator)
        return self.of(y, generator), y

    def heldout(self) -> torch.Tensor:
        return self.sample(HELDOUT_SIGNALS, heldout_generator(self.task_seed))[0]


class SmoothRegression:
    """y = a . sin(W^T x / sqrt(dim) + b), standardised, on Gaussian inputs of std ``scale``
    (raw features, not standardised, when scale > 1); ``outputs`` target columns."""

    def __init__(self, dim: int, task_seed: int, scale: float = 1.0, outputs: int = 1) -> None:
        g = torch.Generator().manual_seed(task_seed)
        self.w = torch.randn(dim, 64, generator=g)
        self.b = torch.rand(64, generator=g) * 2 * math.pi
        self.a = torch.randn(64, outputs, generator=g)
        self.dim, self.scale, self.task_seed = dim, scale, task_seed
        y = self._raw(torch.randn(20_000, dim, generator=g))
        self.mean, self.std = y.mean(0), y.std(0)

    def _raw(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sin(z @ self.w / math.sqrt(self.dim) + self.b) @ self.a

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.randn(n, self.dim, generator=generator)
        return z * self.scale, (self._raw(z) - self.mean) / self.std

    def heldout(self) -> torch.Tensor:
        return self.sample(HELDOUT, heldout_generator(self.task_seed))[0]


def augment(
    x: torch.Tensor, generator: torch.Generator, mask: float = 0.3, noise: float = 0.1
) -> torch.Tensor:
    """One view of ``x`` for self-supervised learning: a share ``mask`` of the coordinates set
    to zero, then Gaussian noise of std ``noise`` added."""
    keep = (torch.rand(x.shape, generator=generator) >= mask).float()
    return x * keep + noise * torch.randn(x.shape, generator=generator)
