"""Family 8, MoE routing collapse: mechanisms other than the scenario's (a top-1 Switch layer
of 8 experts on Gaussian classes, LayerNorm'd router input, Adam, without its auxiliary loss).

The truth is the normalised entropy of the experts' share of the top-k choices on a fixed
held-out batch (2048 inputs; 512 images, every position a token; 128 sequences of 24 tokens),
measured on the router's logits; collapsed below 0.5. Every recipe calls
``monitor.log_routing`` on sampled steps (``monitor.sampled``). Values are measured by
``harness.train`` without the SDK on one CPU thread of an idle 2-core machine.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from collapsewatch_demo import reference
from collapsewatch_demo.data import GaussianClasses, SmoothRegression, heldout_generator
from collapsewatch_demo.harness import Batch, Recipe, Setup
from collapsewatch_demo.validation.pairs.blocks import SelfAttention
from collapsewatch_demo.validation.pairs.tokens import FlatTargets, motif_sequences
from collapsewatch_demo.validation.registry import Pair, register

#: The router's logger name in every recipe (not a module's name: the SDK refuses a logger
#: named like a watched layer, and ``moe.router`` is a Linear).
ROUTER = "router"


def routed_loss(
    setup: Setup, batch: Batch, monitor: Any, k: int, aux_weight: float
) -> torch.Tensor:
    """The criterion of a model giving ``(prediction, router logits, auxiliary loss)`` plus
    ``aux_weight`` times its auxiliary loss; the router logits are logged as :data:`ROUTER`
    (top-``k``) on sampled steps."""
    x, y = batch
    pred, logits, aux = setup.model(x)
    if monitor.sampled:
        monitor.log_routing(ROUTER, logits, k=k)
    return setup.criterion(pred, y) + aux_weight * aux


class TopKMoE(nn.Module):
    """``experts`` MLPs dim-hidden-dim (GELU) behind a Linear ``router``; each token goes to
    its top ``k`` experts, weighted by their renormalised router probabilities. The experts
    run densely (every expert on every token, the chosen ones kept): faster at this size.
    ``forward`` gives the output, the router logits and the Switch auxiliary loss
    E sum_e f_e P_e (1 when balanced)."""

    def __init__(self, dim: int, hidden: int, experts: int, k: int) -> None:
        super().__init__()
        self.k = k
        self.router = nn.Linear(dim, experts)
        self.w1 = nn.Parameter(torch.randn(experts, dim, hidden) / dim**0.5)
        self.w2 = nn.Parameter(torch.randn(experts, hidden, dim) / hidden**0.5)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = self.router(h)
        probs = logits.softmax(-1)
        top, chosen = probs.topk(self.k, dim=-1)
        gate = torch.zeros_like(probs).scatter(-1, chosen, top / top.sum(-1, keepdim=True))
        out = torch.einsum("te,teh->th", gate, self._experts(h))
        experts = probs.shape[-1]
        load = F.one_hot(chosen, experts).float().sum((0, 1)) / chosen.numel()
        aux = experts * (load * probs.mean(0)).sum()
        return out, logits, aux

    def _experts(self, h: torch.Tensor) -> torch.Tensor:
        """Every expert's output for every token, ``[tokens, experts, dim]``."""
        return torch.einsum(
            "teh,ehd->ted", F.gelu(torch.einsum("td,edh->teh", h, self.w1)), self.w2
        )


class MoEMLP(nn.Module):
    """Linear in-64 and ReLU (the router sees raw ReLU features, no normalisation), a top-k
    :class:`TopKMoE` layer with a skip, a Linear head."""

    def __init__(self, inputs: int, outputs: int, experts: int, k: int) -> None:
        super().__init__()
        self.inp = nn.Sequential(OrderedDict(fc=nn.Linear(inputs, 64), relu=nn.ReLU()))
        self.moe = TopKMoE(64, 64, experts=experts, k=k)
        self.head = nn.Linear(64, outputs)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.inp(x)
        out, logits, aux = self.moe(h)
        return self.head(h + out), logits, aux


@dataclass(frozen=True)
class RegressionTop2(Recipe):
    """Regression of a smooth function of raw 16-D Gaussian inputs (std 4) by :class:`MoEMLP`
    with a top-2 layer of 12 experts, SGD 0.02 with momentum 0.9, MSE, batch 128, 1000 steps;
    ``aux`` weighs the Switch auxiliary loss. Without it the router settles on a few experts
    within 20 steps: 0.77 at step 0, 0.40 at 50, 0.30 at the end (seed 0; seed 1 hovers at
    0.50-0.56, the mechanism is seed-dependent); at 0.05 it is 0.88 at step 50 and 1.0 from
    step 250 on (seed 0). About 20-35 s a run."""

    family: ClassVar[str] = "routing"
    loggers: ClassVar[tuple[str, ...]] = ("log_routing",)
    aux: float = 0.0
    experts: ClassVar[int] = 12
    k: ClassVar[int] = 2
    steps: int = 1000
    data: ClassVar[SmoothRegression] = SmoothRegression(16, task_seed=981, scale=4.0)

    def build(self) -> Setup:
        model = MoEMLP(16, 1, self.experts, self.k)
        opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
        return Setup(model, opt, nn.MSELoss(), self.data.heldout())

    def batch(self, step: int, generator: torch.Generator) -> Batch:
        return self.data.sample(128, generator)

    def loss(self, setup: Setup, batch: Batch, monitor: Any) -> torch.Tensor:
        return routed_loss(setup, batch, monitor, self.k, self.aux)

    def reference(self) -> reference.Reference:
        return reference.routing("moe.router", logged_as=ROUTER, k=self.k)


@dataclass(frozen=True)
class ClassesTop1(Recipe):
    """Twenty Gaussian classes in 24-D plus ``offset`` on every coordinate, by :class:`MoEMLP`
    (a top-1 layer of 4 experts), RMSprop 1e-3, cross-entropy, batch 64, 600 steps, no
    auxiliary loss (``aux`` 0). Uncentred inputs (offset 5, features nobody standardised)
    give every ReLU feature a large shared component, so the router sends almost every input
    to one expert from the start: 0.41 at step 0, 0.01-0.05 from step 60 to 420, 0.14 at the
    end (seed 0); centred inputs stay at 0.98-1.0 (seed 0). About 7 s a run."""

    family: ClassVar[str] = "routing"
    loggers: ClassVar[tuple[str, ...]] = ("log_routing",)
    aux: float = 0.0
    offset: float = 0.0
    steps: int = 600
    data: ClassVar[GaussianClasses] = GaussianClasses(20, 24, 5.0, task_seed=982)

    def build(self) -> Setup:
        model = MoEMLP(24, self.data.classes, experts=4, k=1)
        opt = torch.optim.RMSprop(model.parameters(), lr=1e-3)
        return Setup(model, opt, nn.CrossEntropyLoss(), self.data.heldout() + self.offset)

    def batch(self, step: int, generator: torch.Generator) -> Batch:
        x, y = self.data.sample(64, generator)
        return x + self.offset, y

    def loss(self, setup: Setup, batch: Batch, monitor: Any) -> torch.Tensor:
        return routed_loss(setup, batch, monitor, 1, self.aux)

    def reference(self) -> reference.Reference:
        return reference.routing("moe.router", logged_as=ROUTER, k=1)


class MoEBlock(nn.Module):
    """A pre-LN causal transformer block whose feed-forward is a :class:`TopKMoE` layer
    (``moe``) over the block's tokens, or a dense GELU MLP when ``experts`` is 0; ``forward``
    gives the block's output, and the router's logits and auxiliary loss (None when dense)."""

    def __init__(self, dim: int, heads: int, experts: int, k: int) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, causal=True)
        self.moe = TopKMoE(dim, 2 * dim, experts, k) if experts else None
        self.mlp = (
            None
            if experts
            else nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        )

    def forward(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        x = x + self.attn(self.ln1(x))
        h = self.ln2(x)
        if self.mlp is not None:
            return x + self.mlp(h), None, None
        assert self.moe is not None
        out, logits, aux = self.moe(h.flatten(0, 1))
        return x + out.view_as(x), logits, aux


class SwitchGPT(nn.Module):
    """A causal LM of two :class:`MoEBlock`s, dense then MoE (GShard/Switch alternate
    them), token embeddings and learned positions, a final LayerNorm and a linear head.
    ``forward`` gives the logits flattened to ``[batch * seq, vocab]``, the MoE block's router
    logits ``[batch * seq, experts]`` and its auxiliary loss."""

    def __init__(self, vocab: int, length: int, dim: int, heads: int, experts: int, k: int) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.randn(length, dim) * 0.02)
        self.blocks = nn.ModuleList((MoEBlock(dim, heads, 0, k), MoEBlock(dim, heads, experts, k)))
        self.ln = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab)

    def forward(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.tok(idx) + self.pos[: idx.shape[1]]
        x, _, _ = self.blocks[0](x)
        x, logits, aux = self.blocks[1](x)
        assert logits is not None and aux is not None
        return self.head(self.ln(x)).flatten(0, 1), logits, aux


@dataclass(frozen=True)
class MotifSwitchLM(Recipe):
    """Next-token prediction of repeated motifs (V = 48, T = 24; :func:`.tokens.motif_sequences`)
    by a :class:`SwitchGPT` (d = 32, 4 heads, the second block's feed-forward a top-1 layer of
    8 experts), AdamW 2e-3, batch 16, 1200 steps, cross-entropy plus ``aux`` times the Switch
    auxiliary loss E sum_e f_e P_e. A negative ``aux`` is the sign slip of a balancing term
    subtracted like an entropy bonus: the router is pushed to send every token to one expert.
    At -0.01: 0.94 at step 0, 0.09 at step 100, 0.00-0.006 from step 200 on, the loss about
    the control's (seed 0); at +0.01 (Switch's coefficient) 0.98-1.0 from step 100 on (seed 0).
    About 90 s a run on a loaded 2-core machine."""

    family: ClassVar[str] = "routing"
    loggers: ClassVar[tuple[str, ...]] = ("log_routing",)
    aux: float = 0.01
    steps: int = 1200
    vocab: ClassVar[int] = 48
    length: ClassVar[int] = 24
    task_seed: ClassVar[int] = 983

    def build(self) -> Setup:
        model = SwitchGPT(self.vocab, self.length, 32, 4, experts=8, k=1)
        opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
        heldout = motif_sequences(128, self.length, self.vocab, heldout_generator(self.task_seed))
        return Setup(model, opt, FlatTargets(), heldout)

    def batch(self, step: int, generator: torch.Generator) -> Batch:
        seq = motif_sequences(16, self.length + 1, self.vocab, generator)
        return seq[:, :-1], seq[:, 1:]

    def loss(self, setup: Setup, batch: Batch, monitor: Any) -> torch.Tensor:
        return routed_loss(setup, batch, monitor, 1, self.aux)

    def reference(self) -> reference.Reference:
        return reference.routing("blocks.1.moe.router", logged_as=ROUTER, k=1)


register(
    Pair(
        "routing-regression-top2-no-aux",
        "top-2 of 12 experts behind raw ReLU features, SGD, no auxiliary loss: a few experts "
        "take every token within 20 steps (control: Switch auxiliary loss 0.05)",
        RegressionTop2(aux=0.0),
        RegressionTop2(aux=0.05),
    )
)
register(
    Pair(
        "routing-top1-uncentred-inputs-600",
        "top-1 of 4 experts on uncentred inputs (offset 5): one expert takes every input "
        "from the start (control: centred inputs)",
        ClassesTop1(offset=5.0),
        ClassesTop1(offset=0.0),
    )
)
register(
    Pair(
        "routing-switch-lm-aux-sign-slip",
        "causal LM with a top-1 Switch feed-forward of 8 experts in its second block, AdamW: the "
        "balancing loss subtracted instead of added sends every token to one expert (control: "
        "added, 0.01)",
        MotifSwitchLM(aux=-0.01),
        MotifSwitchLM(aux=0.01),
    )
)
