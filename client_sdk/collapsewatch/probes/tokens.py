"""Token statistics of a transformer block's output, the residual stream (family 4).

For each sampled step and block, sums over the sequences of the batch (``TokenStat``):
the mean pairwise token cosine, ``(sum ||sum_t u_t||^2 - sum T) / sum T (T - 1)``; the
residual ratio ``sqrt(sum ||X - 1 xbar^T||_F^2 / sum ||X||_F^2)``; per log2 length bucket, the
mean pairwise cosine of the sequences' mean-pooled embeddings; and the mean cosine between the
block's input and output, token by token (in a stack, cos(h_l, h_{l+1}) of consecutive layers).

Padded positions are left out when the block gets a key padding mask (``True`` = padding, as
PyTorch's ``*_key_padding_mask`` arguments). Everything is a sum, so forwards, steps and ranks
merge by addition; the length-bucket pairs are the pairs within one sampled step (the embedding
sums stay on the device during the step and only their squared norms are sent).
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from collapsewatch.probes.base import Hooks, Probe
from collapsewatch.schemas import ProbeInfo, ProbeKind

if TYPE_CHECKING:
    import torch
    from torch import nn

    from collapsewatch.pipeline.packing import StepPack

#: Length buckets: bucket b holds sequences with 2^b <= T < 2^(b+1); the last takes the rest.
LENGTH_BUCKETS = 16
_EPS = 1e-12


_SIGNATURES: dict[type, inspect.Signature | None] = {}


def _signature(cls: type) -> inspect.Signature | None:
    """``forward``'s signature, once per block class (inspect is slow)."""
    if cls not in _SIGNATURES:
        try:
            _SIGNATURES[cls] = inspect.signature(cls.forward)  # type: ignore[attr-defined]
        except (TypeError, ValueError):
            _SIGNATURES[cls] = None
    return _SIGNATURES[cls]


def block_inputs(
    module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, Any, bool]:
    """``(input, key padding mask or None, batch_first)`` of one call of a block.

    The input is the first argument of ``forward``; the mask is the argument whose name ends in
    ``key_padding_mask`` (``memory_*`` excluded: it masks the encoder's tokens, not these).
    PyTorch's layers say whether they are batch-first; other blocks are taken as batch-first.
    """
    attention = getattr(module, "self_attn", None)
    batch_first = bool(getattr(attention, "batch_first", True))
    sig = _signature(type(module))
    if sig is None:
        return (args[0] if args else None), None, batch_first
    try:
        bound = sig.bind_partial(module, *args, **kwargs).arguments
    except TypeError:
        return (args[0] if args else None), None, batch_first
    names = list(bound)
    first = bound[names[1]] if len(names) > 1 else None
    mask = next(
        (
            value
            for name, value in bound.items()
            if name.endswith("key_padding_mask") and not name.startswith("memory")
        ),
        None,
    )
    return first, mask, batch_first


class TokenAccumulator:
    """Sums of one block's token statistics over a sampled step (see the module docstring)."""

    __slots__ = (
        "io_cos",
        "io_tokens",
        "len_n",
        "len_sum",
        "n",
        "pairs",
        "resid_sq",
        "seqs",
        "sq",
        "tokens",
        "usum_sq",
    )

    def __init__(self) -> None:
        self.n = 0  # forward calls added
        self.seqs: torch.Tensor | None = None
        self.tokens: torch.Tensor | None = None
        self.pairs: torch.Tensor | None = None
        self.usum_sq: torch.Tensor | None = None
        self.sq: torch.Tensor | None = None
        self.resid_sq: torch.Tensor | None = None
        self.io_cos: torch.Tensor | None = None
        self.io_tokens: torch.Tensor | None = None
        self.len_sum: torch.Tensor | None = None  # [LENGTH_BUCKETS, d] unit embedding sums
        self.len_n: torch.Tensor | None = None

    def add(self, output: Any, block_input: Any, pad: Any, batch_first: bool) -> None:
        """Add one call of the block; call under no_grad. ``output`` may be a tuple (its first
        element is the hidden states, as in many libraries' blocks)."""
        import torch

        x = output[0] if isinstance(output, tuple | list) and output else output
        if not isinstance(x, torch.Tensor) or x.is_nested or x.dim() not in (2, 3):
            raise TypeError(f"block output is not a [batch, seq, dim] tensor: {type(x).__name__}")
        unbatched = x.dim() == 2  # one [seq, dim] sequence
        if unbatched:
            x = x.unsqueeze(0)
        elif not batch_first:
            x = x.transpose(0, 1)
        x = x.float()
        b, t, _ = x.shape
        valid = self._valid(pad, b, t, x.device, unbatched)
        w = valid.to(x.dtype)
        keep = valid[..., None]

        lengths = w.sum(1)  # [b]
        norms = torch.linalg.vector_norm(x, dim=-1)  # [b, t]
        inv = norms.clamp_min(_EPS).reciprocal()
        if isinstance(pad, torch.Tensor):
            # where(), not a product: padded positions may hold NaN
            usum = torch.where(keep, x * inv[..., None], 0.0).sum(1)
            xsum = torch.where(keep, x, 0.0).sum(1)
        else:  # no padding: no masked copies of x, and the unit vectors summed by one bmm
            usum = torch.bmm(inv[:, None, :], x).squeeze(1)
            xsum = x.sum(1)
        mean = xsum / lengths.clamp_min(1)[:, None]  # [b, d] mean-pooled sequence embedding
        resid = x - mean[:, None]
        if isinstance(pad, torch.Tensor):
            resid = torch.where(keep, resid, 0.0)
        has = lengths > 0
        emb = mean / torch.linalg.vector_norm(mean, dim=-1).clamp_min(_EPS)[:, None]
        emb = torch.where(has[:, None], emb, 0.0)
        bucket = torch.log2(lengths.clamp_min(1)).floor().long().clamp(max=LENGTH_BUCKETS - 1)
        len_sum = torch.zeros(LENGTH_BUCKETS, x.shape[-1], dtype=x.dtype, device=x.device)
        len_sum.index_add_(0, bucket, emb)
        len_n = torch.zeros(LENGTH_BUCKETS, dtype=x.dtype, device=x.device)
        len_n.index_add_(0, bucket, has.to(x.dtype))
        values = {
            "seqs": has.sum().to(x.dtype),
            "tokens": lengths.sum(),
            "pairs": (lengths * (lengths - 1)).sum(),
            "usum_sq": (usum * usum).sum(),
            "sq": torch.where(valid, norms * norms, 0.0).sum(),
            "resid_sq": (resid * resid).sum(),
            "len_sum": len_sum,
            "len_n": len_n,
        }
        inp = block_input
        if isinstance(inp, torch.Tensor) and not inp.is_nested:
            if unbatched:
                inp = inp.unsqueeze(0)
            elif not batch_first:
                inp = inp.transpose(0, 1)
            if inp.shape == x.shape:
                inp = inp.float()
                dot = (inp * x).sum(-1)
                cos = dot / (torch.linalg.vector_norm(inp, dim=-1) * norms).clamp_min(_EPS)
                values["io_cos"] = torch.where(valid, cos, 0.0).sum()
                values["io_tokens"] = lengths.sum()
        for key, value in values.items():
            current = getattr(self, key)
            setattr(self, key, value if current is None else current + value)
        self.n += 1

    @staticmethod
    def _valid(pad: Any, b: int, t: int, device: torch.device, unbatched: bool) -> torch.Tensor:
        """``[b, t]`` bool, True for real tokens. A float mask marks padding with non-zeros
        (-inf), as PyTorch's attention takes it."""
        import torch

        if not isinstance(pad, torch.Tensor):
            return torch.ones(b, t, dtype=torch.bool, device=device)
        mask = pad.unsqueeze(0) if unbatched and pad.dim() == 1 else pad
        padded = mask if mask.dtype == torch.bool else mask != 0
        if padded.shape != (b, t):
            raise ValueError(f"key padding mask of shape {tuple(pad.shape)} for [{b}, {t}] tokens")
        return ~padded.to(device)

    def pack(self, stats: dict[str, Any], pack: StepPack) -> None:
        """File the step's ``TokenStat`` values into a record."""
        assert self.len_sum is not None and self.len_n is not None
        for key in ("seqs", "tokens", "pairs", "usum_sq", "sq", "resid_sq", "io_cos", "io_tokens"):
            value = getattr(self, key)
            if value is not None:
                pack.put(stats, key, value)
        pack.put(stats, "len_n", self.len_n)
        pack.put(stats, "len_pairs", self.len_n * (self.len_n - 1))
        pack.put(stats, "len_usum_sq", (self.len_sum * self.len_sum).sum(1))


class TokenProbe(Probe):
    """Token statistics of one transformer block's output, the residual stream (probe kind
    ``tokens``, named after the block)."""

    def __init__(
        self, name: str, module: nn.Module, width: int | None = None, *, found: bool = False
    ) -> None:
        super().__init__()
        self.name = name
        self.label = f"block {name!r}"
        self.module = module
        self.width = width
        #: Found as a repeated block rather than given or a torch transformer layer: it is
        #: dropped quietly when its calls do not map [batch, seq, dim] to the same shape.
        self.found = found
        self.acc = TokenAccumulator()

    def infos(self, order: int) -> list[ProbeInfo]:
        kind, module = ProbeKind.tokens, type(self.module).__name__[:128]
        return [ProbeInfo(name=self.name, kind=kind, module=module, order=order, width=self.width)]

    def install(self, hooks: Hooks) -> None:
        hooks.forward(self.module, self, self._on_call, with_kwargs=True)

    def _on_call(self, module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        inputs = block_inputs(module, args, kwargs)
        if self.found and not _residual(inputs[0], output):
            self.disabled = True  # not a residual stream of tokens (a conv or MLP block)
            self.acc = TokenAccumulator()
            return
        self.acc.add(output, *inputs)

    def flush(self, pack: StepPack, step: int) -> None:
        acc, self.acc = self.acc, TokenAccumulator()
        if acc.n:
            acc.pack(pack.record(self.name, ProbeKind.tokens.value, step), pack)

    def reset(self) -> None:
        self.acc = TokenAccumulator()


def _residual(block_input: Any, output: Any) -> bool:
    """A call that maps hidden states ``[batch, seq, dim]`` to the same shape."""
    import torch

    x = output[0] if isinstance(output, tuple | list) and output else output
    return (
        isinstance(block_input, torch.Tensor)
        and isinstance(x, torch.Tensor)
        and x.dim() == 3
        and x.shape == block_input.shape
        and x.is_floating_point()
    )
