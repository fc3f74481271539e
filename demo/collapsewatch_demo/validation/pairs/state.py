"""Family 13, recurrent state collapse: mechanisms unlike the scenario's (a gated diagonal
linear RNN trained at 16 tokens against one trained at 128, evaluated at 1024).

Every recipe trains on short sequences and, every ``steps / 20`` steps and at the end, runs
the model on fixed sequences far longer than that and logs the states at log-spaced positions
(and the last trained one) with ``monitor.log_state(..., train_length=T)``, the family's
logger. The truth is the mean state norm over the second half of those long sequences (every
position) over the mean norm at the last trained position, on a fixed held-out batch;
collapsed above 2. Values are measured by ``harness.train`` without the SDK on one CPU thread.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from collapsewatch_demo import reference
from collapsewatch_demo.data import heldout_generator
from collapsewatch_demo.harness import Batch, Recipe, Setup
from collapsewatch_demo.validation.registry import Pair, register

#: Evaluations of the long sequences over a run (plus one at the end).
EVALUATIONS = 20


def log_positions(length: int, train_length: int) -> list[int]:
    """Positions 0, 1, 3, 7, ..., ``length - 1`` (one per log2 bucket) and the last trained."""
    return sorted({2**b - 1 for b in range(length.bit_length())} | {train_length - 1})


def windowed_mean(x: torch.Tensor, window: int) -> torch.Tensor:
    """The mean of the last ``window`` inputs at every position (zeros before the start)."""
    c = F.pad(F.pad(x, (0, 0, window - 1, 0)).cumsum(1), (0, 0, 1, 0))
    return (c[:, window:] - c[:, :-window]) / window


class Recurrent(Recipe):
    """A recurrent recipe: ``model.states(x)`` gives ``[batch, T, dim]`` states, ``model(x)``
    the outputs; trained on ``train_length`` sequences, evaluated on ``heldout`` ones."""

    family: ClassVar[str] = "state"
    probe: ClassVar[str] = "rnn.state"

    @property
    def train_length(self) -> int:
        raise NotImplementedError

    def train_step(
        self, setup: Setup, step: int, generator: torch.Generator, monitor: Any
    ) -> float:
        loss = super().train_step(setup, step, generator, monitor)
        every = max(1, self.steps // EVALUATIONS)
        if (step + 1) % every == 0 or step + 1 == self.steps:
            self.log_states(setup, monitor)
        return loss

    @torch.no_grad()
    def log_states(self, setup: Setup, monitor: Any) -> None:
        long = setup.heldout[:8]
        positions = log_positions(long.shape[1], self.train_length)
        states = setup.model.states(long)  # type: ignore[operator]
        monitor.log_state(
            self.probe, states[:, positions], positions, train_length=self.train_length
        )

    def reference(self) -> reference.Reference:
        return reference.state(self.probe)

    def reference_values(self, model: nn.Module, heldout: torch.Tensor) -> dict[str, float]:
        states = model.states(heldout)  # type: ignore[operator]
        return {self.probe: reference.state_norm_ratio(states, self.train_length)}


class DiagonalSSM(nn.Module):
    """A linear time-invariant state-space layer with a complex diagonal transition (LRU-like):
    ``h_t = lambda * h_(t-1) + B x_t``, ``lambda = exp(-exp(nu) + i theta)`` with ``|lambda|``
    initialised uniformly in ``[r_min, r_max]``; read out by a Linear of (Re h, Im h) and the
    input. States are computed all at once by an FFT convolution with the kernel lambda^t."""

    def __init__(self, inputs: int, state: int, outputs: int, r_min: float, r_max: float) -> None:
        super().__init__()
        u = torch.rand(state)
        radius = r_min + (r_max - r_min) * u
        self.nu = nn.Parameter((-radius.log()).log())
        self.theta = nn.Parameter(torch.rand(state) * 2 * math.pi / 10)
        self.b_re = nn.Linear(inputs, state, bias=False)
        self.b_im = nn.Linear(inputs, state, bias=False)
        self.out = nn.Linear(2 * state + inputs, outputs)

    def states(self, x: torch.Tensor) -> torch.Tensor:
        """``[batch, T, 2 * state]``: real and imaginary parts of every state."""
        t = x.shape[1]
        log_lam = torch.complex(-self.nu.exp(), self.theta)  # [N]
        kernel = (torch.arange(t, dtype=torch.float32).view(t, 1) * log_lam).exp()  # [T, N]
        u = torch.complex(self.b_re(x), self.b_im(x))  # [B, T, N]
        n = 2 * t
        h = torch.fft.ifft(torch.fft.fft(u, n, dim=1) * torch.fft.fft(kernel, n, dim=0), dim=1)
        h = h[:, :t]
        return torch.cat((h.real, h.imag), -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.cat((self.states(x), x), -1))


@dataclass(frozen=True)
class SlowDecaySSM(Recurrent):
    """The mean of the last 4 inputs of 6-D Gaussian sequences by a :class:`DiagonalSSM` of 32
    complex states, trained at 24 tokens, evaluated at 1024; Adam 3e-3, batch 32, 1000 steps.
    ``r_min``/``r_max``: the initial range of the transition's modulus. With 0.995-0.9999
    (a memory of hundreds to thousands of steps, as long-range SSM inits choose) the state keeps
    growing far past the 24 trained positions: 3.4 at the start and 3.3-3.6 throughout, since
    nothing in 24-token training shows the model what comes later (seed 0); with 0.3-0.8
    (a memory of a few steps) it stays at 1.0-1.02. About 10 s of CPU a run."""

    r_min: float = 0.3
    r_max: float = 0.8
    steps: int = 1000
    task_seed: ClassVar[int] = 971

    @property
    def train_length(self) -> int:
        return 24

    def build(self) -> Setup:
        model = DiagonalSSM(6, 32, 6, self.r_min, self.r_max)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        heldout = torch.randn(16, 1024, 6, generator=heldout_generator(self.task_seed))
        return Setup(model, opt, nn.MSELoss(), heldout)

    def batch(self, step: int, generator: torch.Generator) -> Batch:
        x = torch.randn(32, self.train_length, 6, generator=generator)
        return x, windowed_mean(x, 4)


class CellLSTM(nn.Module):
    """An ``nn.LSTMCell`` unrolled in Python, forget-gate bias ``forget_bias``, a Linear
    readout of the hidden state; its states are the cell states ``c_t``."""

    def __init__(self, inputs: int, hidden: int, outputs: int, forget_bias: float) -> None:
        super().__init__()
        self.cell = nn.LSTMCell(inputs, hidden)
        with torch.no_grad():
            self.cell.bias_ih[hidden : 2 * hidden].fill_(forget_bias)
            self.cell.bias_hh[hidden : 2 * hidden].zero_()
        self.out = nn.Linear(hidden, outputs)

    def run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden and cell states, each ``[batch, T, hidden]``."""
        h = c = x.new_zeros(x.shape[0], self.cell.hidden_size)
        hs, cs = [], []
        for t in range(x.shape[1]):
            h, c = self.cell(x[:, t], (h, c))
            hs.append(h)
            cs.append(c)
        return torch.stack(hs, 1), torch.stack(cs, 1)

    def states(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.run(x)[0])


@dataclass(frozen=True)
class RunningSumLSTM(Recurrent):
    """The sum of the last 3 inputs of 4-D sequences with a drift (inputs of mean 0.5) by a
    :class:`CellLSTM` of 24 units with a forget-gate bias of 3 (the long-memory trick),
    RMSprop 3e-3, batch 16, 400 steps, evaluated at 512. ``train_length``: at 8 the cells keep
    integrating the drift past the trained length: 3.9 at the start, 2.9 at its lowest, up to
    9.8 (seed 0); at 64 the forget gates have to learn to let go: 1.08 at the start, 1.45 at
    most. About 7 s of CPU a run (the collapse; the control unrolls 64 steps)."""

    length: int = 64
    steps: int = 400
    task_seed: ClassVar[int] = 972

    @property
    def train_length(self) -> int:
        return self.length

    def build(self) -> Setup:
        model = CellLSTM(4, 24, 4, forget_bias=3.0)
        opt = torch.optim.RMSprop(model.parameters(), lr=3e-3)
        g = heldout_generator(self.task_seed)
        heldout = 0.5 + torch.randn(16, 512, 4, generator=g)
        return Setup(model, opt, nn.MSELoss(), heldout)

    def batch(self, step: int, generator: torch.Generator) -> Batch:
        x = 0.5 + torch.randn(16, self.length, 4, generator=generator)
        return x, 3 * windowed_mean(x, 3)


register(
    Pair(
        "state-lru-fft-slow-decay",
        "linear time-invariant SSM (complex diagonal, FFT) initialised with slow decays, "
        "trained at 24 tokens: its state triples by 1024 (control: fast decays)",
        SlowDecaySSM(r_min=0.995, r_max=0.9999),
        SlowDecaySSM(r_min=0.3, r_max=0.8),
    )
)
register(
    Pair(
        "state-lstm-cell-train-8",
        "LSTM cell with a forget-gate bias of 3 on drifting inputs, trained at 8 steps: the "
        "cell state keeps growing to 512 (control: trained at 64)",
        RunningSumLSTM(length=8),
        RunningSumLSTM(length=64),
    )
)
