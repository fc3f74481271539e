"""Scenario ``state_collapse`` (the ``state`` family): a gated linear RNN trained on short sequences
blows up on long ones; trained on longer ones it does not.

Recipe (the ``state`` family of docs/indicators.md): a gated diagonal linear RNN, ``h_t = f_t *
h_(t-1) + W_u x_t`` with the forget gate ``f_t = sigmoid(W_f x_t + b_f)`` (``b_f`` starts at +4,
so f ~ 0.98: a memory of ~50 steps), 64 state channels, read out by ``y_t = W_o h_t``; 4-D
Gaussian inputs, the target is the mean of the last 4 inputs (made here, nothing is downloaded).
MSE, Adam lr 3e-3, batch 32, 300 steps. Every 25 steps (and at the end) the model runs on 16
sequences of 1024 and ``monitor.log_state("rnn.state", h[:, positions], positions,
train_length=T)`` sends the states at positions 0, 1, 3, 7, ..., 1023 (one per log2 bucket, T -
1 among them); the MSE at the training length and at positions 512-1023 go to ``log_scalar``.

- Collapse: trained at T = 16. ``state_norm_ratio`` (mean ||h|| at position 1023 over
  position 15) reads 2.94-3.17 at every evaluation (seeds 0-3), the MSE goes from 0.063-0.074
  at T to 1.26-2.44 at positions 512-1023, and ``state_max_ratio`` reads 2.4-4.1 (growing
  during training for seeds 1-3). The norm ratio is ~3 from initialisation: a forget gate of
  0.98 remembers ~50 steps, so at position 15 the state holds a third of what it accumulates
  by 1023, and nothing in 16-step training shows the model longer states; the readout, fitted
  to short states only, fails on the long ones (state collapse as in Stuffed Mamba: a state
  too large for the training length). The default rule fires on the third evaluation.
- Control: trained at T = 128, longer than the gates' memory: the state has settled by
  position 127, and the ratio stays at 1.05-1.07 (seeds 0-3); MSE 0.18-0.19 at T and
  0.21-0.23 at 512-1023 (less well fitted in 300 steps, but it holds its length). No alert.

The recurrence is evaluated in closed form per chunk of 32 steps (cumulative sums of the log
gates in float64), so a step costs a few tensor operations instead of a Python loop over time.
The two runs take 7 s and 6 s on one CPU thread, SDK included (seed 0; the first pays for
torch's lazy imports), so the scenario is in the fast subset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from collapsewatch_demo.harness import Batch, Recipe, Setup
from collapsewatch_demo.scenarios.registry import Scenario, register

IN_DIM = 4
STATE = 64
WINDOW = 4  # the target is the mean of the last WINDOW inputs
GATE_BIAS = 4.0
BATCH_SIZE = 32
EVAL_LENGTH = 1024
EVAL_BATCH = 16
EVAL_EVERY = 25
#: One position per log2 bucket: 2^k - 1 is the last position of bucket k - 1.
POSITIONS = [0, *(2**k - 1 for k in range(1, 11))]
CHUNK = 32
MIN_LOG_GATE = -20.0
#: Fixes the evaluation sequences, the same for every run and seed.
TASK_SEED = 4321
PROBE = "rnn.state"


class GatedRNN(nn.Module):
    """Diagonal linear recurrence with an input-dependent sigmoid forget gate."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(IN_DIM, STATE)
        self.gate = nn.Linear(IN_DIM, STATE)
        nn.init.constant_(self.gate.bias, GATE_BIAS)
        self.out = nn.Linear(STATE, IN_DIM)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Outputs ``[batch, T, IN_DIM]`` and states ``[batch, T, STATE]``."""
        h = scan(F.logsigmoid(self.gate(x)), self.inp(x))
        return self.out(h), h


def scan(log_f: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``h_t = f_t h_(t-1) + u_t`` from ``h_(-1) = 0``: within a chunk, ``h_t = F_t (h_0 +
    sum_(s<=t) u_s / F_s)`` with ``F_t`` the product of the gates since the chunk began. In
    float64, with gates clamped at e^-20 (what they let through below is far under float32's
    resolution anyway), ``1 / F_s`` stays below e^640 over a chunk of 32: finite."""
    outs = []
    h0 = torch.zeros(u.shape[0], u.shape[2], dtype=torch.float64)
    for s in range(0, u.shape[1], CHUNK):
        c = log_f[:, s : s + CHUNK].double().clamp_min(MIN_LOG_GATE).cumsum(1)
        h = c.exp() * (h0[:, None] + (u[:, s : s + CHUNK].double() * (-c).exp()).cumsum(1))
        outs.append(h)
        h0 = h[:, -1]
    return torch.cat(outs, 1).float()


def target(x: torch.Tensor) -> torch.Tensor:
    """The mean of the last ``WINDOW`` inputs at every position (zeros before the start)."""
    c = F.pad(F.pad(x, (0, 0, WINDOW - 1, 0)).cumsum(1), (0, 0, 1, 0))
    return (c[:, WINDOW:] - c[:, :-WINDOW]) / WINDOW


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, length: int) -> dict[str, Any]:
    """States at ``POSITIONS`` and brute-force numbers on long sequences ``x``."""
    y, h = model(x)
    err = (y - target(x)).square().mean(-1).mean(0)  # per position
    return {
        "states": h[:, POSITIONS],
        "mse_train_length": float(err[:length].mean()),
        "mse_long": float(err[EVAL_LENGTH // 2 :].mean()),
    }


@dataclass(frozen=True)
class ShortSequenceRNN(Recipe):
    """:class:`GatedRNN` trained on sequences of ``length``, MSE, Adam 3e-3, batch 32; every
    ``EVAL_EVERY`` steps and after the last, evaluated on 16 sequences of 1024 (the states go
    to ``log_state``, the two MSEs to ``log_scalar``)."""

    family: ClassVar[str] = "state"
    loggers: ClassVar[tuple[str, ...]] = ("log_state", "log_scalar")
    length: int = 128
    steps: int = 300

    def build(self) -> Setup:
        model = GatedRNN()
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        task = torch.Generator().manual_seed(TASK_SEED)
        long_x = torch.randn(EVAL_BATCH, EVAL_LENGTH, IN_DIM, generator=task)
        return Setup(model, opt, nn.MSELoss(), long_x)

    def batch(self, step: int, generator: torch.Generator) -> Batch:
        x = torch.randn(BATCH_SIZE, self.length, IN_DIM, generator=generator)
        return x, target(x)

    def loss(self, setup: Setup, batch: Batch, monitor: Any) -> torch.Tensor:
        x, y = batch
        return setup.criterion(setup.model(x)[0], y)

    def train_step(
        self, setup: Setup, step: int, generator: torch.Generator, monitor: Any
    ) -> float:
        if step % EVAL_EVERY == 0:
            self.check(setup, monitor)
        loss = super().train_step(setup, step, generator, monitor)
        if step == self.steps - 1:
            self.check(setup, monitor)
        return loss

    def check(self, setup: Setup, monitor: Any) -> None:
        result = evaluate(setup.model, setup.heldout, self.length)
        monitor.log_state(PROBE, result["states"], POSITIONS, train_length=self.length)
        monitor.log_scalar("eval.mse_train_length", result["mse_train_length"])
        monitor.log_scalar("eval.mse_1024", result["mse_long"])


register(
    Scenario(
        name="state_collapse",
        summary="Gated linear RNN (forget bias +4) on the mean of the last 4 inputs: trained at "
        "16, its state is x3 larger at position 1023 and the MSE goes 0.07 -> 1.3-2.4; trained "
        "at 128 it holds (x1.06).",
        collapse=ShortSequenceRNN(length=16),
        control=ShortSequenceRNN(length=128),
        indicator="state_norm_ratio",
        probe=PROBE,
        runs=("rnn-train-16", "rnn-train-128"),
        every=5,
        fast=True,
    )
)
