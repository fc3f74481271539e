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


class DecayedLinearAttention(nn.Module):
    """Token embeddings read by ``heads`` heads of linear attention with a learned decay per
    head (RetNet-style): a matrix state ``S_t = gamma * S_(t-1) + phi(k_t) v_t^T`` per head,
    read by ``phi(q_t)^T S_t`` (``phi = elu + 1``), then a Linear of the heads' reads and the
    token's embedding. ``gamma = sigmoid(a)`` starts uniform in ``[g_min, g_max]``.

    Training uses the parallel form (the decayed causal mask); :meth:`states` runs the
    recurrence, since the states themselves are what is watched."""

    def __init__(
        self, vocab: int, dim: int, heads: int, outputs: int, g_min: float, g_max: float
    ) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.embed = nn.Embedding(vocab, dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        gamma = g_min + (g_max - g_min) * torch.rand(heads)
        self.decay = nn.Parameter(torch.logit(gamma))
        self.out = nn.Linear(2 * dim, outputs)

    def _qkv(self, idx: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Embeddings ``[B, T, dim]`` and phi(q), phi(k), v, each ``[B, heads, T, head_dim]``."""
        e = self.embed(idx)
        b, t, _ = e.shape
        q, k, v = (
            z.view(b, t, self.heads, self.head_dim).transpose(1, 2)
            for z in self.qkv(e).chunk(3, -1)
        )
        return e, F.elu(q) + 1, F.elu(k) + 1, v

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        e, q, k, v = self._qkv(idx)
        t = idx.shape[1]
        lag = torch.arange(t).view(t, 1) - torch.arange(t).view(1, t)  # t - s
        log_gamma = F.logsigmoid(self.decay).view(-1, 1, 1)
        mask = torch.where(lag >= 0, (lag.clamp_min(0) * log_gamma).exp(), 0.0)  # [H, T, T]
        reads = (q @ k.transpose(-1, -2) * mask) @ v  # [B, H, T, head_dim]
        return self.out(torch.cat((reads.transpose(1, 2).flatten(2), e), -1))

    def states(self, idx: torch.Tensor) -> torch.Tensor:
        """``[batch, T, heads * head_dim^2]``: every head's state matrix at every position."""
        _, _, k, v = self._qkv(idx)
        gamma = torch.sigmoid(self.decay).view(1, -1, 1, 1)
        s = k.new_zeros(k.shape[0], self.heads, self.head_dim, self.head_dim)
        out = []
        for t in range(idx.shape[1]):
            s = gamma * s + k[:, :, t, :, None] * v[:, :, t, None, :]
            out.append(s.flatten(1))
        return torch.stack(out, 1)


def token_counts(idx: torch.Tensor, vocab: int, window: int | None) -> torch.Tensor:
    """How often each token occurred up to each position ``[B, T, vocab]``, over the whole
    prefix (``window`` None) or the last ``window`` positions."""
    counts = F.one_hot(idx, vocab).float().cumsum(1)
    if window is not None:
        counts = counts - F.pad(counts, (0, 0, window, 0))[:, : idx.shape[1]]
    return counts


@dataclass(frozen=True)
class CountingLinearAttention(Recurrent):
    """Token counting (V = 8, uniform tokens) by a :class:`DecayedLinearAttention` (d = 32,
    4 heads, decays starting in 0.5-0.9), trained at 32 tokens, evaluated at 1024; SGD 0.05
    with Nesterov momentum 0.9 (the decays' logits at 1.0, a group of their own: at 0.05
    they take thousands of steps to move), gradients clipped at 1, batch 32, 2000 steps. The
    target at each position is how often each token occurred, over the last 8 tokens
    (``window`` 8) or the whole prefix (``window`` 0). Counting the whole prefix needs a memory
    at least as long as the training sequences: one decay climbs towards 1 and nothing past
    32 tokens tells it to stop, so the state keeps adding up over the long sequences: 1.01 at
    the start, above 2 from step 300, 9.1 at the end (seed 0); counting the last 8 tokens
    keeps it at 1.01-1.06. About 50 s of CPU a run (the 1024-step states are a Python loop)."""

    window: int = 8
    steps: int = 2000
    vocab: ClassVar[int] = 8
    task_seed: ClassVar[int] = 973

    @property
    def train_length(self) -> int:
        return 32

    def build(self) -> Setup:
        model = DecayedLinearAttention(self.vocab, 32, 4, self.vocab, 0.5, 0.9)
        rest = [p for name, p in model.named_parameters() if name != "decay"]
        groups: list[dict[str, Any]] = [{"params": rest}, {"params": [model.decay], "lr": 1.0}]
        opt = torch.optim.SGD(groups, lr=0.05, momentum=0.9, nesterov=True)
        g = heldout_generator(self.task_seed)
        heldout = torch.randint(0, self.vocab, (16, 1024), generator=g)
        return Setup(model, opt, nn.MSELoss(), heldout)

    def batch(self, step: int, generator: torch.Generator) -> Batch:
        idx = torch.randint(0, self.vocab, (32, self.train_length), generator=generator)
        return idx, token_counts(idx, self.vocab, self.window or None) / 4

    def optimise(self, setup: Setup, loss: torch.Tensor) -> float:
        """As the base, with the gradients clipped (SGD on a growing count can spike)."""
        setup.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(setup.model.parameters(), 1.0)
        setup.optimizer.step()
        return float(loss.detach())


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
register(
    Pair(
        "state-linear-attention-counting",
        "RetNet-style linear attention with learned decays counting tokens over the whole "
        "prefix at 32 tokens: the decays go to 1 and the state keeps growing to 1024 "
        "(control: counting over the last 8 tokens)",
        CountingLinearAttention(window=0),
        CountingLinearAttention(window=8),
    )
)
