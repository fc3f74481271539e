"""Family 6, VQ codebook collapse: mechanisms other than the scenario's (a plain N(0, 1/d)
codebook against SimVQ on an MLP VQ-VAE).

The truth is the perplexity / K of the codes chosen for a fixed held-out batch (2048 inputs;
512 images or signals, one code per position), measured on the quantiser's code scores;
collapsed below 0.25. Every recipe calls ``monitor.log_codes`` with the chosen indices, only on
sampled steps (``monitor.sampled``). Values are measured by ``harness.train`` without the SDK
on one CPU thread of an idle 2-core machine (the waveform pair's on a loaded one).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from collapsewatch_demo import reference
from collapsewatch_demo.data import GaussianClasses, Shapes, Waveforms
from collapsewatch_demo.harness import Batch, Recipe, Setup
from collapsewatch_demo.validation.registry import Pair, register

#: The quantiser's logger name in every recipe.
CODES = "codes"


def quantize_logged(
    model: nn.Module, x: torch.Tensor, codes: int, monitor: Any
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The VQ-VAE ``model``'s reconstruction of ``x``, its VQ loss and the chosen code indices,
    logged as :data:`CODES` (of ``codes`` codes) on sampled steps."""
    x_hat, vq_loss, indices = model(x)
    if monitor.sampled:
        monitor.log_codes(CODES, indices, codes)
    return x_hat, vq_loss, indices


class CodeScores(nn.Module):
    """The codebook, and each input's score for every code: minus the squared distance, or
    the cosine when ``cosine`` (l2-normalised lookup); the chosen code scores highest."""

    def __init__(self, codebook: torch.Tensor, cosine: bool) -> None:
        super().__init__()
        self.codebook = nn.Parameter(codebook)
        self.cosine = cosine

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.cosine:
            return F.normalize(z, dim=1) @ F.normalize(self.codebook, dim=1).T
        return -torch.cdist(z, self.codebook).square()


class Quantizer(nn.Module):
    """Nearest-code quantisation of ``[rows, dim]`` inputs with straight-through gradients;
    ``forward`` gives the quantised rows (gradient to the input), the codebook and commitment
    losses, and the chosen indices."""

    def __init__(self, codebook: torch.Tensor, cosine: bool = False, beta: float = 0.25) -> None:
        super().__init__()
        self.scores = CodeScores(codebook, cosine)
        self.beta = beta

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        indices = self.scores(z).argmax(1)
        codes: torch.Tensor = self.scores.codebook
        if self.scores.cosine:
            z, codes = F.normalize(z, dim=1), F.normalize(codes, dim=1)
        q = codes[indices]
        vq_loss = F.mse_loss(q, z.detach()) + self.beta * F.mse_loss(z, q.detach())
        return z + (q - z).detach(), vq_loss, indices


class ConvVQVAE(nn.Module):
    """16x16 images to a 4x4 grid of 8-D vectors (two stride-2 convolutions), quantised with
    ``codes`` codes, decoded by two transposed convolutions; ``dims=1``: the same in 1-D."""

    def __init__(self, codebook: torch.Tensor, dims: int = 2) -> None:
        super().__init__()
        dim = codebook.shape[1]
        conv, deconv = (
            (nn.Conv1d, nn.ConvTranspose1d) if dims == 1 else (nn.Conv2d, nn.ConvTranspose2d)
        )
        self.encoder = nn.Sequential(
            conv(1, 32, 4, stride=2, padding=1),
            nn.ReLU(),
            conv(32, dim, 4, stride=2, padding=1),
        )
        self.quantizer = Quantizer(codebook)
        self.decoder = nn.Sequential(
            deconv(dim, 32, 4, stride=2, padding=1),
            nn.ReLU(),
            deconv(32, 1, 4, stride=2, padding=1),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reconstruction, VQ loss and the indices (one per image and position)."""
        z = self.encoder(x)
        b, d, h, w = z.shape
        rows = z.permute(0, 2, 3, 1).reshape(-1, d)
        q, vq_loss, indices = self.quantizer(rows)
        q = q.reshape(b, h, w, d).permute(0, 3, 1, 2)
        return self.decoder(q), vq_loss, indices


class RestartingVQ(Recipe):
    """A VQ-VAE recipe that can restart dead codes (Jukebox's random restarts): every step
    marks the codes chosen in ``parts["used"]``; when :meth:`restart_due` says so, the codes
    no input chose since the last restart are set to random rows of :meth:`encoder_rows` and
    the marks cleared. The quantiser is logged by :func:`quantize_logged`."""

    codes: ClassVar[int]

    def restart_due(self, step: int) -> bool:
        """Whether the dead codes are restarted after ``step``."""
        return False

    def encoder_rows(self, model: Any, generator: torch.Generator) -> torch.Tensor:
        """The encoder's output vectors of a fresh batch, one row per input and position."""
        raise NotImplementedError

    def loss(self, setup: Setup, batch: Batch, monitor: Any) -> torch.Tensor:
        x = batch[0]
        x_hat, vq_loss, indices = quantize_logged(setup.model, x, self.codes, monitor)
        setup.parts["used"][indices] = True
        return setup.criterion(x_hat, x) + vq_loss

    def train_step(
        self, setup: Setup, step: int, generator: torch.Generator, monitor: Any
    ) -> float:
        loss = super().train_step(setup, step, generator, monitor)
        if self.restart_due(step):
            used: torch.Tensor = setup.parts["used"]
            self._restart(setup.model, ~used, generator)
            used.zero_()
        return loss

    @torch.no_grad()
    def _restart(self, model: nn.Module, dead: torch.Tensor, generator: torch.Generator) -> None:
        """Reset the ``dead`` codes (a mask) to random encoder outputs of a fresh batch."""
        which = dead.nonzero().flatten()
        if len(which):
            rows = self.encoder_rows(model, generator)
            pick = torch.randint(0, len(rows), (len(which),), generator=generator)
            codebook: torch.Tensor = model.quantizer.scores.codebook  # type: ignore[union-attr, assignment]
            codebook[which] = rows[pick]


@dataclass(frozen=True)
class ShapesConvVQ(RestartingVQ):
    """A convolutional VQ-VAE on 16x16 shape images: 64 codes of dimension 8 for each of 16
    positions, RMSprop 1e-3, batch 32, 1200 steps, reconstruction MSE plus the VQ losses.
    The codebook starts uniform in [-1/K, 1/K] (the init of many VQ-VAE reimplementations),
    tiny next to the encoder's outputs: without restarts a handful of codes take every
    position, 0.21 at step 0, 0.05 by step 60, 0.13 at the end (seed 0). With
    ``restart_every`` the codebook starts from encoder outputs and, every ``restart_every``
    steps, the codes no input chose since the last restart are reset to random encoder
    outputs of a fresh batch (Jukebox's random restarts): every 4 steps, 0.62-0.86 all along
    (seeds 0-1; every 10 steps it dips to 0.17 at step 12). About 5-10 s a run."""

    family: ClassVar[str] = "codebook"
    loggers: ClassVar[tuple[str, ...]] = ("log_codes",)
    codes: ClassVar[int] = 64
    restart_every: int = 0
    steps: int = 1200
    data: ClassVar[Shapes] = Shapes(16, task_seed=961)

    def build(self) -> Setup:
        init = (torch.rand(self.codes, 8) * 2 - 1) / self.codes
        model = ConvVQVAE(init)
        if self.restart_every:  # restarts start with the codebook drawn from encoder outputs
            generator = torch.Generator().manual_seed(self.seed + 1)
            self._restart(model, torch.ones(self.codes, dtype=torch.bool), generator)
        opt = torch.optim.RMSprop(model.parameters(), lr=1e-3)
        parts = {"used": torch.zeros(self.codes, dtype=torch.bool)}
        return Setup(model, opt, nn.MSELoss(), self.data.heldout(), parts=parts)

    def batch(self, step: int, generator: torch.Generator) -> Batch:
        return self.data.sample(32, generator)

    def restart_due(self, step: int) -> bool:
        return bool(self.restart_every) and (step + 1) % self.restart_every == 0

    def encoder_rows(self, model: Any, generator: torch.Generator) -> torch.Tensor:
        z = model.encoder(self.data.sample(32, generator)[0])
        return z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])

    def reference(self) -> reference.Reference:
        return reference.codebook("quantizer.scores", logged_as=CODES)


class MLPVQ(nn.Module):
    """An MLP autoencoder 32-64-8 (tanh) with a one-code quantiser between its halves."""

    def __init__(self, codebook: torch.Tensor, cosine: bool) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            OrderedDict(fc1=nn.Linear(32, 64), act=nn.Tanh(), fc2=nn.Linear(64, 8))
        )
        self.quantizer = Quantizer(codebook, cosine)
        self.decoder = nn.Sequential(
            OrderedDict(fc1=nn.Linear(8, 64), act=nn.Tanh(), fc2=nn.Linear(64, 32))
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, vq_loss, indices = self.quantizer(self.encoder(x))
        return self.decoder(q), vq_loss, indices


@dataclass(frozen=True)
class ClassesMLPVQ(Recipe):
    """Sixteen Gaussian classes in 32-D through :class:`MLPVQ` with 128 codes of dimension 8
    drawn from N(0, 3^2) (a codebook initialised far outside the encoder's range), SGD 0.05
    with momentum 0.9, batch 256, 600 steps. With Euclidean lookup the few codes nearest the
    encoder's outputs take every input and the rest never move: 0.02 at step 0, 0.15 at the
    end (seed 0); with l2-normalised (cosine) lookup the codes' scale no longer matters:
    0.39 at its lowest, 0.56 at the end (seed 0). About 3 s a run."""

    family: ClassVar[str] = "codebook"
    loggers: ClassVar[tuple[str, ...]] = ("log_codes",)
    codes: ClassVar[int] = 128
    cosine: bool = True
    steps: int = 600
    data: ClassVar[GaussianClasses] = GaussianClasses(16, 32, 6.0, task_seed=962)

    def build(self) -> Setup:
        model = MLPVQ(torch.randn(self.codes, 8) * 3.0, self.cosine)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        return Setup(model, opt, nn.MSELoss(), self.data.heldout())

    def batch(self, step: int, generator: torch.Generator) -> Batch:
        return self.data.sample(256, generator)

    def loss(self, setup: Setup, batch: Batch, monitor: Any) -> torch.Tensor:
        x = batch[0]
        x_hat, vq_loss, _ = quantize_logged(setup.model, x, self.codes, monitor)
        return setup.criterion(x_hat, x) + vq_loss

    def reference(self) -> reference.Reference:
        return reference.codebook("quantizer.scores", logged_as=CODES)


class SignalVQVAE(ConvVQVAE):
    """A 1-D convolutional VQ-VAE: a signal to one 8-D vector every 4 samples (two stride-2
    convolutions), quantised with the codebook given, decoded by two transposed
    convolutions."""

    def __init__(self, codebook: torch.Tensor) -> None:
        super().__init__(codebook, dims=1)

    def rows(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's vectors of ``x``, one row per signal and position."""
        z = self.encoder(x)
        return z.transpose(1, 2).reshape(-1, z.shape[1])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reconstruction, VQ loss and the indices (one per signal and position)."""
        b, positions = len(x), x.shape[-1] // 4
        q, vq_loss, indices = self.quantizer(self.rows(x))
        q = q.reshape(b, positions, -1).transpose(1, 2)
        return self.decoder(q), vq_loss, indices


@dataclass(frozen=True)
class WaveformVQ(RestartingVQ):
    """A 1-D convolutional VQ-VAE on :class:`Waveforms` of 32 samples: 128 codes of dimension 8
    for each of 8 positions, initialised from encoder outputs of a first batch (data-dependent
    init), AdamW 1e-3, batch 64, 3000 steps, reconstruction MSE plus the VQ losses.
    ``codebook_updates``: "restarts", the codebook trained with the rest and the codes no
    input chose in the last 4 steps reset to random encoder outputs of a fresh batch (Jukebox's
    random restarts); "frozen", the codebook left out of the optimizer (built from the
    encoder's and the decoder's parameters only) and never restarted: it gets its gradients and
    never moves, so once the encoder's outputs drift away from it only the few codes nearest
    them are chosen. Frozen: 0.68 at step 0, below 0.25 from step 30, 0.08 at its lowest,
    0.14-0.22 from step 300 to the end; the VQ terms grow the loss from 0.56 to 4.0 (seed 0).
    Restarts: 0.47 at its lowest, 0.79-0.95 from step 150 on (seed 0). A trained codebook
    without restarts dips to 0.07 around step 150 and recovers to 0.44 by the end, with a
    500-step warm-up too; frozen with that warm-up it hovers at 0.24-0.26 after step 1500.
    About 2 minutes a run on a loaded 2-core machine."""

    family: ClassVar[str] = "codebook"
    loggers: ClassVar[tuple[str, ...]] = ("log_codes",)
    codes: ClassVar[int] = 128
    restart_every: ClassVar[int] = 4
    codebook_updates: Literal["restarts", "frozen"] = "restarts"
    steps: int = 3000
    data: ClassVar[Waveforms] = Waveforms(32, task_seed=963)

    def build(self) -> Setup:
        model = SignalVQVAE(torch.zeros(self.codes, 8))
        generator = torch.Generator().manual_seed(self.seed + 1)
        self._restart(model, torch.ones(self.codes, dtype=torch.bool), generator)
        frozen = self.codebook_updates == "frozen"
        params = [p for n, p in model.named_parameters() if not (frozen and n.startswith("quant"))]
        opt = torch.optim.AdamW(params, lr=1e-3)
        parts = {"used": torch.zeros(self.codes, dtype=torch.bool)}
        return Setup(model, opt, nn.MSELoss(), self.data.heldout(), parts=parts)

    def batch(self, step: int, generator: torch.Generator) -> Batch:
        return self.data.sample(64, generator)

    def restart_due(self, step: int) -> bool:
        return self.codebook_updates == "restarts" and (step + 1) % self.restart_every == 0

    def encoder_rows(self, model: Any, generator: torch.Generator) -> torch.Tensor:
        rows: torch.Tensor = model.rows(self.data.sample(64, generator)[0])
        return rows

    def reference(self) -> reference.Reference:
        return reference.codebook("quantizer.scores", logged_as=CODES)


register(
    Pair(
        "codebook-conv-shapes-no-restarts",
        "convolutional VQ-VAE, codebook uniform in [-1/K, 1/K]: a few codes take every "
        "position (control: codebook from encoder outputs, dead codes restarted every 4 steps)",
        ShapesConvVQ(restart_every=0),
        ShapesConvVQ(restart_every=4),
    )
)
register(
    Pair(
        "codebook-mlp-far-init-sgd-600",
        "MLP VQ-VAE with a codebook drawn far outside the encoder's range, Euclidean lookup: "
        "the nearest few codes take every input (control: cosine lookup)",
        ClassesMLPVQ(cosine=False),
        ClassesMLPVQ(cosine=True),
    )
)
register(
    Pair(
        "codebook-signal-frozen-codebook-3000",
        "1-D convolutional VQ-VAE on waveforms, AdamW, the codebook left out of the optimizer: "
        "the encoder drifts away from it and a few codes take every input (control: trained, "
        "dead codes restarted every 4 steps)",
        WaveformVQ(codebook_updates="frozen"),
        WaveformVQ(codebook_updates="restarts"),
    )
)
