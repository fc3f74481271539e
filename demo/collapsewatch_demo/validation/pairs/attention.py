"""Family 5, attention entropy collapse: mechanisms unlike the scenario's (a stock
``nn.TransformerEncoder`` language model of a bigram chain, Adam at 3e-2).

The models are hand-written (:mod:`.blocks`) and attend through
``F.scaled_dot_product_attention``, so the SDK reads their attention from the function call.
The truth is each attention layer's mean normalised entropy, every head and every query that
sees two keys or more, recomputed from the layer's input on a fixed held-out batch; collapsed
below 0.2. The tasks need broad attention (a sequence's topic is spread over all its tokens, a
signal's frequency over its periods), so a healthy model has no reason to attend to one key.
Values are measured by
``harness.train`` without the SDK on one CPU thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from collapsewatch_demo import reference
from collapsewatch_demo.data import Waveforms, heldout_generator
from collapsewatch_demo.harness import Batch, Recipe, Setup
from collapsewatch_demo.validation.pairs.blocks import SelfAttention, Trunk, attention_entropies
from collapsewatch_demo.validation.pairs.tokens import FlatTargets, TinyGPT
from collapsewatch_demo.validation.registry import Pair, register


class Topics:
    """Sequences of tokens drawn i.i.d. from one of ``topics`` distributions over ``vocab``
    (a softmax of 2 x Gaussian logits each, fixed by ``task_seed``); the topic is the label."""

    def __init__(self, topics: int, vocab: int, task_seed: int) -> None:
        g = torch.Generator().manual_seed(task_seed)
        self.probs = (2 * torch.randn(topics, vocab, generator=g)).softmax(-1)
        self.topics, self.vocab, self.task_seed = topics, vocab, task_seed

    def sample(
        self, n: int, length: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, self.topics, (n,), generator=generator)
        x = torch.multinomial(self.probs[y], length, replacement=True, generator=generator)
        return x, y


@dataclass(frozen=True)
class TopicGPT(Recipe):
    """Next-token prediction of topic sequences (8 topics, V = 64, T = 32): the next token's
    distribution is the sequence's topic, read from every earlier token. A post-LN
    :class:`TinyGPT` (2 blocks, d = 32, 4 heads), AdamW with betas (0.9, 0.98), batch 32,
    1200 steps. At lr 4e-2 (no warm-up) the first layer's logits grow until every query reads
    about one key: 0.98 at the start, 0.35 at step 96, below 0.2 from step 168, 0.006 at the
    end, while the loss stays near the control's (2.80 against 2.77; seed 0). At 1e-3 the
    worst layer stays at or above 0.78 (seed 0). About 25 s of CPU a run."""

    family: ClassVar[str] = "attention"
    lr: float = 1e-3
    steps: int = 800
    data: ClassVar[Topics] = Topics(8, 64, task_seed=951)
    length: ClassVar[int] = 32

    def build(self) -> Setup:
        model = TinyGPT(self.data.vocab, self.length, 32, 2, 4, norm="post")
        opt = torch.optim.AdamW(model.parameters(), lr=self.lr, betas=(0.9, 0.98))
        heldout = self.data.sample(128, self.length + 1, heldout_generator(self.data.task_seed))
        return Setup(model, opt, FlatTargets(), heldout[0][:, :-1])

    def batch(self, step: int, generator: torch.Generator) -> Batch:
        seq = self.data.sample(32, self.length + 1, generator)[0]
        return seq[:, :-1], seq[:, 1:]

    def reference(self) -> reference.Reference:
        return reference.attention("trunk.blocks.0.attn", "trunk.blocks.1.attn")

    def reference_values(self, model: nn.Module, heldout: torch.Tensor) -> dict[str, float]:
        return attention_entropies(model, self.reference().layers, lambda: model(heldout))


class TopicEncoder(nn.Module):
    """A bidirectional pre-LN :class:`Trunk` that masks padding (id 0), masked mean pooling,
    a linear head."""

    def __init__(
        self,
        vocab: int,
        length: int,
        dim: int,
        depth: int,
        heads: int,
        classes: int,
        scale: float | None,
    ) -> None:
        super().__init__()
        self.trunk = Trunk(vocab, length, dim, depth, heads, causal=False, scale=scale)
        self.head = nn.Linear(dim, classes)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pad = idx == 0
        keep = (~pad).unsqueeze(-1).float()
        return self.head((self.trunk(idx, pad) * keep).sum(1) / keep.sum(1))


@dataclass(frozen=True)
class PaddedTopics(Recipe):
    """Topic classification of padded sequences (12 topics, V = 96, lengths 8-32 padded to
    32 with id 0) by a :class:`TopicEncoder` (2 blocks, d = 64, 2 heads of 32), SGD 0.05 with
    momentum 0.9, batch 16, 600 steps. ``scale`` is the attention's logit scale, SDPA's
    ``scale=``: sqrt(d_head) (the inverse of the intended 1/sqrt(d_head), a typo that makes
    the logits 32 times too large) starts both layers at 0.22-0.25 and training sharpens the
    first one further: below 0.2 from step 102, 0.03 at 240, under 1e-5 from 384 (seed 0);
    the default starts them at 0.98. About 11 s of CPU a run."""

    family: ClassVar[str] = "attention"
    scale: float | None = None
    steps: int = 600
    data: ClassVar[Topics] = Topics(12, 96, task_seed=952)
    length: ClassVar[int] = 32

    def _padded(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.data.sample(n, self.length, generator)
        lengths = torch.randint(8, self.length + 1, (n, 1), generator=generator)
        x = (x + 1).masked_fill(torch.arange(self.length).view(1, -1) >= lengths, 0)
        return x, y

    def build(self) -> Setup:
        model = TopicEncoder(self.data.vocab + 1, self.length, 64, 2, 2, 12, self.scale)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        heldout = self._padded(64, heldout_generator(self.data.task_seed))[0]
        return Setup(model, opt, nn.CrossEntropyLoss(), heldout)

    def batch(self, step: int, generator: torch.Generator) -> Batch:
        return self._padded(16, generator)

    def reference(self) -> reference.Reference:
        return reference.attention("trunk.blocks.0.attn", "trunk.blocks.1.attn")

    def reference_values(self, model: nn.Module, heldout: torch.Tensor) -> dict[str, float]:
        return attention_entropies(model, self.reference().layers, lambda: model(heldout))


class QKNormAttention(SelfAttention):
    """:class:`SelfAttention` whose queries and keys go through a LayerNorm over each head's
    dims (QK-LayerNorm, Dehghani et al. 2023; Wortsman et al. 2023) when ``qk_norm``."""

    def __init__(self, dim: int, heads: int, qk_norm: bool) -> None:
        super().__init__(dim, heads, causal=False)
        d_head = dim // heads
        self.q_norm = nn.LayerNorm(d_head) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(d_head) if qk_norm else nn.Identity()

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v = super().split(x)
        return self.q_norm(q), self.k_norm(k), v


class SignalBlock(nn.Module):
    """A pre-LN bidirectional block: :class:`QKNormAttention`, then a GELU MLP 4x."""

    def __init__(self, dim: int, heads: int, qk_norm: bool) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = QKNormAttention(dim, heads, qk_norm)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class SignalTransformer(nn.Module):
    """A transformer on 1-D signals: patches of 4 samples embedded by a Linear, learned
    positions, ``depth`` :class:`SignalBlock`s in a ModuleList, a final LayerNorm, mean
    pooling and a linear head."""

    def __init__(
        self, length: int, dim: int, depth: int, heads: int, classes: int, qk_norm: bool
    ) -> None:
        super().__init__()
        self.embed = nn.Linear(4, dim)
        self.pos = nn.Parameter(torch.randn(length // 4, dim) * 0.02)
        self.blocks = nn.ModuleList(SignalBlock(dim, heads, qk_norm) for _ in range(depth))
        self.ln = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, signals: torch.Tensor) -> torch.Tensor:
        x = self.embed(signals.view(len(signals), -1, 4)) + self.pos
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x).mean(1))


@dataclass(frozen=True)
class WaveformQKNorm(Recipe):
    """Sixteen classes of :class:`Waveforms` (4 shapes x 4 frequencies) of 128 samples as 32
    patches; :class:`SignalTransformer` with two pre-LN blocks (d = 48, 4 heads of 12), NAdam
    2e-2 without warm-up, batch 32, 400 steps. Without QK-LayerNorm nothing bounds the
    attention logits and they grow until each query reads about one patch (attention logit
    growth): the worst layer falls from 0.99 to 0.40 by step 40, below 0.2 from step 80, 0.05
    at step 120 and 0.006 at the end (seed 0; at 1e-2 it creeps down to 0.20-0.23 by step 900).
    With it the same learning rate keeps the worst layer at or above 0.67 (seed 0); the token
    cosine stays at or below 0.75. The collapsed run's loss ends higher (1.6 against 1.2).
    About 30-90 s a run on a loaded 2-core machine."""

    family: ClassVar[str] = "attention"
    qk_norm: bool = True
    lr: float = 2e-2
    steps: int = 400
    data: ClassVar[Waveforms] = Waveforms(128, task_seed=953)

    def build(self) -> Setup:
        model = SignalTransformer(128, 48, 2, 4, Waveforms.CLASSES, self.qk_norm)
        opt = torch.optim.NAdam(model.parameters(), lr=self.lr)
        return Setup(model, opt, nn.CrossEntropyLoss(), self.data.heldout()[:256])

    def batch(self, step: int, generator: torch.Generator) -> Batch:
        return self.data.sample(32, generator)

    def reference(self) -> reference.Reference:
        return reference.attention("blocks.0.attn", "blocks.1.attn")

    def reference_values(self, model: nn.Module, heldout: torch.Tensor) -> dict[str, float]:
        return attention_entropies(model, self.reference().layers, lambda: model(heldout))


register(
    Pair(
        "attention-topic-gpt-hot-lr",
        "post-LN nanoGPT-style LM (SDPA) of topic sequences, AdamW at 4e-2 without warm-up: "
        "the first layer attends to single keys (control 1e-3)",
        TopicGPT(lr=4e-2, steps=1200),
        TopicGPT(lr=1e-3, steps=1200),
    )
)
register(
    Pair(
        "attention-encoder-scale-sqrt-dhead",
        "bidirectional text encoder with padding masks, SDPA scale=sqrt(d_head) instead of "
        "1/sqrt(d_head): peaked attention from the start (control: SDPA's default scale)",
        PaddedTopics(scale=32**0.5),
        PaddedTopics(scale=None),
    )
)
register(
    Pair(
        "attention-signal-no-qk-norm",
        "pre-LN transformer on waveform patches, NAdam at 2e-2 without warm-up: the attention "
        "logits grow until each query reads one patch (control: QK-LayerNorm)",
        WaveformQKNorm(qk_norm=False),
        WaveformQKNorm(qk_norm=True),
    )
)
