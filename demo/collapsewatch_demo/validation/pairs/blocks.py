"""Hand-written transformer blocks, nanoGPT-style, for the token and attention pairs: a
``SelfAttention`` calling ``F.scaled_dot_product_attention`` (no ``nn.MultiheadAttention``)
and a ``Block`` repeated in an ``nn.ModuleList``, as most real transformers are written. The
SDK is given neither ``blocks=`` nor the attention modules: it has to find them itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from collapsewatch_demo import reference

Norm = Literal["pre", "post"]


class SelfAttention(nn.Module):
    """Multi-head self-attention by ``F.scaled_dot_product_attention``: one ``qkv`` Linear,
    an output ``proj``. ``scale`` is SDPA's (None: 1/sqrt(d_head))."""

    def __init__(self, dim: int, heads: int, *, causal: bool, scale: float | None = None) -> None:
        super().__init__()
        self.heads, self.causal, self.scale = heads, causal, scale
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v of ``x`` ``[batch, seq, dim]``, each ``[batch, heads, seq, d_head]``."""
        b, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)
        return tuple(  # type: ignore[return-value]
            z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v)
        )

    def visible(self, x: torch.Tensor, pad: torch.Tensor | None) -> torch.Tensor | None:
        """Which keys each query may see, ``[batch or 1, 1, seq, seq]`` (True: visible), or
        None when all of them; ``pad`` ``[batch, seq]`` is True on padding."""
        t = x.shape[1]
        mask = None
        if self.causal:
            mask = torch.ones(t, t, dtype=torch.bool).tril().view(1, 1, t, t)
        if pad is not None:
            keys = (~pad).view(len(pad), 1, 1, t)
            mask = keys if mask is None else mask & keys
        return mask

    def forward(self, x: torch.Tensor, pad: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = self.split(x)
        if pad is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal, scale=self.scale)
        else:
            mask = self.visible(x, pad)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
        b, _, t, _ = y.shape
        return self.proj(y.transpose(1, 2).reshape(b, t, -1))

    def entropy(self, x: torch.Tensor, pad: torch.Tensor | None = None) -> float:
        """The brute-force mean normalised entropy of this layer's attention on input ``x``."""
        q, k, _ = self.split(x)
        return reference.attention_entropy(q, k, self.visible(x, pad), self.scale)


class Block(nn.Module):
    """Attention then a GELU MLP (4x), each with a LayerNorm before it (``pre``) or after the
    sum (``post``); ``residual=False`` drops both skip connections."""

    def __init__(
        self,
        dim: int,
        heads: int,
        *,
        causal: bool,
        norm: Norm = "pre",
        residual: bool = True,
        scale: float | None = None,
    ) -> None:
        super().__init__()
        self.norm, self.residual = norm, residual
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, causal=causal, scale=scale)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor, pad: torch.Tensor | None = None) -> torch.Tensor:
        skip = 1.0 if self.residual else 0.0
        if self.norm == "pre":
            x = skip * x + self.attn(self.ln1(x), pad)
            return skip * x + self.mlp(self.ln2(x))
        x = self.ln1(skip * x + self.attn(x, pad))
        return self.ln2(skip * x + self.mlp(x))


def attention_entropies(
    model: nn.Module, names: tuple[str, ...], forward: Callable[[], object]
) -> dict[str, float]:
    """The brute-force entropy of each named ``SelfAttention`` on its inputs in ``forward()``."""
    modules = dict(model.named_modules())
    seen = reference.capture(model, names, forward)
    return {n: modules[n].entropy(*args) for n, (args, _) in seen.items()}  # type: ignore[operator]


def token_cosines(
    model: nn.Module, names: tuple[str, ...], forward: Callable[[], object]
) -> dict[str, float]:
    """The brute-force mean token cosine of each named block's output in ``forward()``."""
    seen = reference.capture(model, names, forward)
    return {n: reference.token_cosine(out) for n, (_, out) in seen.items()}


class Trunk(nn.Module):
    """Token embeddings and learned positions, ``depth`` :class:`Block`s in a ModuleList
    (``blocks``) and a final LayerNorm: the body of a GPT or of a text encoder."""

    def __init__(
        self, vocab: int, length: int, dim: int, depth: int, heads: int, **block: Any
    ) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.randn(length, dim) * 0.02)
        self.blocks = nn.ModuleList(Block(dim, heads, **block) for _ in range(depth))
        self.ln = nn.LayerNorm(dim)

    def forward(self, idx: torch.Tensor, pad: torch.Tensor | None = None) -> torch.Tensor:
        x = self.tok(idx) + self.pos[: idx.shape[1]]
        for block in self.blocks:
            x = block(x, pad)
        return self.ln(x)
