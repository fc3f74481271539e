"""Attention entropy per head (the ``attention`` family of docs/indicators.md: attention entropy
collapse).

For a query i of head h, ``H_i = -sum_j A_ij log A_ij``, normalised by ``log n_i``, where
``n_i`` is the number of keys the query may see; queries with ``n_i < 2`` are left out (their
entropy is 0 whatever the model does). A record holds, per head, the sum of the normalised
entropies and the number of queries in it (``AttentionStat``): sums, so forward calls, steps
and ranks merge by addition and the server divides.

Two sources, both reduced on a sample of at most 4 sequences of the batch and 64 query
positions per sequence (deterministic strides, never the user's RNG), with all their keys, one
chunk of sequences at a time (the transient memory stays within a few times 16 MB):

- ``monitor.log_attention(name, probs)``: the probabilities of a custom attention,
  ``[batch, heads, queries, keys]``. A key is visible to a query when some head gives it a
  probability > 0: masked keys are exactly 0 after a softmax of ``-inf`` (or of ``-1e4`` and
  below, in float32). Taking any head, not each head alone, keeps a head whose probabilities
  underflow to 0 (a very sharp head, or float16 probabilities, which underflow past a logit gap
  of ~17) from losing keys from its normaliser and looking less collapsed than it is. Masks
  that differ between heads are therefore read as their union.
- every ``nn.MultiheadAttention`` (hence ``nn.TransformerEncoderLayer``/``DecoderLayer``, which
  call it with ``need_weights=False``: fused kernels never materialise the probabilities): a
  forward hook recomputes ``softmax(q k^T / sqrt(d_head) + masks)`` for the sample from the
  captured inputs and the module's weights, exactly as ``F.multi_head_attention_forward``
  does. There a key is visible unless its mask hides it (a boolean ``True``, or an additive
  value of -1e4 or below), so no underflow can shrink ``n_i``.

``qk_sigma(module)`` gives, per head, the spectral norm of ``W_Q^h W_K^h^T``, the leading
indicator of the collapse (the attention logits, hence their entropy, are bounded by it).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from collapsewatch.probes.base import Hooks, Probe
from collapsewatch.schemas import ProbeInfo, ProbeKind

if TYPE_CHECKING:
    import torch
    from torch import nn

    from collapsewatch.pipeline.packing import StepPack

#: Sequences of a batch sampled (strided: 0, s, 2s, ... with s = batch // 4).
MAX_SEQUENCES = 4
#: Query positions sampled per sequence, evenly spread over its length.
MAX_QUERIES = 64
#: An additive mask value at or below this hides the key (exp of it is 0 in float32): -inf,
#: ``finfo.min``, -1e9 and BERT's -10000 all do; ALiBi-like biases of tens do not.
MASKED_AT = -1e4
#: Probabilities reduced at once (float32: 16 MB); more sequences are taken one chunk at a time.
CHUNK = 1 << 22

#: nn.MultiheadAttention.forward's parameters, in order (to read positional arguments).
_MHA_ARGS = (
    "query",
    "key",
    "value",
    "key_padding_mask",
    "need_weights",
    "attn_mask",
    "average_attn_weights",
    "is_causal",
)


def _pick_sequences(x: torch.Tensor) -> torch.Tensor:
    """Up to MAX_SEQUENCES rows of dim 0, strided over the batch (a view, no copy)."""
    return x[:: max(1, x.shape[0] // MAX_SEQUENCES)][:MAX_SEQUENCES]


def _per_chunk(n: int, per_sequence: int) -> int:
    """Sequences per chunk: as many as fit in CHUNK elements, at least one."""
    return max(1, min(n, CHUNK // max(1, per_sequence)))


def _positions(length: int, device: torch.device) -> torch.Tensor:
    """Up to MAX_QUERIES distinct positions evenly spread over ``range(length)``."""
    import torch

    m = min(length, MAX_QUERIES)
    return torch.div(torch.arange(m, device=device) * length, m, rounding_mode="floor")


class AttentionAccumulator:
    """Per-head sums of normalised query entropies over a sampled step (``AttentionStat``).

    ``add_probs`` serves ``log_attention``; ``add_mha`` the ``nn.MultiheadAttention`` hook.
    Everything stays on the device; nothing of the caller's tensors is kept.
    """

    __slots__ = ("ent_sum", "heads", "n", "queries")

    def __init__(self) -> None:
        self.n = 0  # calls added
        self.heads = 0
        self.ent_sum: torch.Tensor | None = None  # [H]
        self.queries: torch.Tensor | None = None  # [H]

    def add_probs(self, probs: torch.Tensor) -> None:
        """Add attention probabilities ``[batch, heads, queries, keys]`` (or ``[heads,
        queries, keys]`` for one sequence), rows summing to 1, masked keys exactly 0."""
        import torch

        if not isinstance(probs, torch.Tensor) or probs.is_nested or probs.layout != torch.strided:
            raise TypeError(f"probs must be a dense tensor, not {type(probs).__name__}")
        if probs.dim() == 3:
            probs = probs.unsqueeze(0)
        if probs.dim() != 4 or 0 in probs.shape:
            raise ValueError(
                "probs must be [batch, heads, queries, keys] with no empty dim, got shape "
                f"{tuple(probs.shape)}"
            )
        if not probs.is_floating_point():
            raise TypeError(f"probs must be floating point, not {probs.dtype}")
        picked = _pick_sequences(probs.detach())
        pos = _positions(picked.shape[2], picked.device)

        def sequences() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            per_sequence = picked.shape[1] * pos.shape[0] * picked.shape[3]
            for chunk in picked.split(_per_chunk(picked.shape[0], per_sequence)):
                p = chunk.index_select(2, pos).float()
                yield p, (p > 0).any(1, keepdim=True)

        self.add_sequences(sequences())

    def add_mha(self, module: nn.MultiheadAttention, args: tuple[Any, ...], kw: Any) -> None:
        """Add one call of ``module`` (the arguments its forward hook got), recomputing the
        probabilities of the sample from its inputs and weights."""
        self.add_sequences(mha_probs(module, args, kw))

    def add_sequences(self, sequences: Iterable[tuple[torch.Tensor, torch.Tensor | None]]) -> None:
        """Reduce one call's sampled sequences (probabilities ``[c, H, m, S]`` and the keys
        each query may see), chunk by chunk, then update the sums."""
        ent_sum = queries = None
        heads = 0
        for probs, visible in sequences:
            e, q = _reduce(probs, visible)
            ent_sum = e if ent_sum is None else ent_sum + e
            queries = q if queries is None else queries + q
            heads = probs.shape[1]
        if ent_sum is None or queries is None:
            return
        if self.heads and heads != self.heads:
            raise ValueError(f"{heads} heads, but earlier calls of this step had {self.heads}")
        if self.ent_sum is None or self.queries is None:
            self.ent_sum, self.queries = ent_sum, queries
        else:
            self.ent_sum = self.ent_sum + ent_sum
            self.queries = self.queries + queries
        self.heads = heads
        self.n += 1

    def pack(self, stats: dict[str, Any], pack: StepPack) -> None:
        """File the step's ``heads``, ``queries`` and ``ent_sum``."""
        assert self.ent_sum is not None and self.queries is not None
        stats["heads"] = float(self.heads)
        pack.put(stats, "queries", self.queries)
        pack.put(stats, "ent_sum", self.ent_sum)


def _reduce(probs: torch.Tensor, visible: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per head: the sum of the normalised entropies of the queries with 2+ visible keys, and
    their count. ``probs`` ``[n, H, m, S]`` float32; ``visible`` broadcasts to it (None: all)."""
    import torch

    ent = -torch.special.xlogy(probs, probs).sum(-1)  # [n, H, m]; NaN on fully masked rows
    if visible is None:
        count = torch.full_like(ent, float(probs.shape[-1]))
    else:
        count = visible.sum(-1, dtype=torch.float32).expand_as(ent)
    counted = count >= 2
    norm = torch.where(counted, ent / torch.log(count.clamp_min(2)), 0.0)
    return norm.sum((0, 2)), counted.sum((0, 2), dtype=torch.float32)


def _qk_weights(module: nn.MultiheadAttention) -> tuple[torch.Tensor, torch.Tensor]:
    """``W_Q`` ``[E, E]`` and ``W_K`` ``[E, kdim]`` of the module."""
    e = module.embed_dim
    if module._qkv_same_embed_dim:
        assert module.in_proj_weight is not None
        return module.in_proj_weight[:e], module.in_proj_weight[e : 2 * e]
    assert module.q_proj_weight is not None and module.k_proj_weight is not None
    return module.q_proj_weight, module.k_proj_weight


def _as_bias(mask: torch.Tensor) -> torch.Tensor:
    """A mask as PyTorch's attention takes it, as an additive float32 bias (True: -inf)."""
    import torch

    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, device=mask.device).masked_fill_(mask, -math.inf)
    return mask.float()


def mha_probs(
    module: nn.MultiheadAttention, args: tuple[Any, ...], kw: Any
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """The sampled attention probabilities of one call of ``module``, a chunk of sampled
    sequences at a time (``[c, H, m, S]``), each with the keys its queries may see
    (broadcastable to them; None: every key).

    As ``F.multi_head_attention_forward``: the q/k projections with their biases, ``bias_k``
    and ``add_zero_attn`` appended as extra keys (visible), ``attn_mask`` 2-D ``[L, S]`` or 3-D
    ``[N*H, L, S]`` and ``key_padding_mask`` (boolean True = hidden, or additive floats),
    ``is_causal`` without a mask as the causal mask (with a mask, ``is_causal`` only promises
    that the mask is causal, so the mask is used).
    """
    import torch
    import torch.nn.functional as F

    call = dict(zip(_MHA_ARGS, args, strict=False))
    call.update(kw)
    query, key = call.get("query"), call.get("key")
    if not isinstance(query, torch.Tensor) or not isinstance(key, torch.Tensor):
        raise TypeError("the attention call has no query/key tensors")
    if query.is_nested or key.is_nested:
        raise TypeError("nested tensors are not supported")
    heads, e, dh = module.num_heads, module.embed_dim, module.head_dim
    if query.dim() == 2:  # unbatched [L, E]
        query, key = query.unsqueeze(0), key.unsqueeze(0)
    elif not module.batch_first:
        query, key = query.transpose(0, 1), key.transpose(0, 1)
    batch, length, src = query.shape[0], query.shape[1], key.shape[1]
    pos = _positions(length, query.device)

    wq, wk = (w.detach().float() for w in _qk_weights(module))
    bq = bk = None
    if module.in_proj_bias is not None:
        bq, bk = (b.detach().float() for b in module.in_proj_bias.detach()[: 2 * e].chunk(2))
    q = F.linear(_pick_sequences(query).index_select(1, pos).float(), wq, bq)
    k = F.linear(_pick_sequences(key).float(), wk, bk)  # [n, S, E]
    n, m = q.shape[0], q.shape[1]
    extra = 0
    if module.bias_k is not None:
        k = torch.cat([k, module.bias_k.detach().float().expand(n, 1, e)], 1)
        extra += 1
    q = q.view(n, m, heads, dh).transpose(1, 2)
    k = k.view(n, src + extra, heads, dh).transpose(1, 2)
    if module.add_zero_attn:
        k = torch.cat([k, k.new_zeros(n, heads, 1, dh)], 2)
        extra += 1

    bias: torch.Tensor | None = None
    attn_mask, pad = call.get("attn_mask"), call.get("key_padding_mask")
    if isinstance(attn_mask, torch.Tensor):
        if attn_mask.dim() == 2:
            am = attn_mask.index_select(0, pos)[None, None]
        else:
            am = _pick_sequences(attn_mask.reshape(batch, heads, length, src)).index_select(2, pos)
        bias = _as_bias(am)
    elif call.get("is_causal"):
        keys = torch.arange(src, device=query.device)
        bias = _as_bias(keys[None, None, None, :] > pos[None, None, :, None])
    if isinstance(pad, torch.Tensor):
        pad_bias = _as_bias(_pick_sequences(pad.reshape(batch, src))[:, None, None, :])
        bias = pad_bias if bias is None else bias + pad_bias
    if bias is not None:
        bias = F.pad(bias.to(q.device), (0, extra))  # the extra keys are never masked
    c = _per_chunk(n, heads * m * k.shape[2])
    for i in range(0, n, c):
        scores = (q[i : i + c] @ k[i : i + c].transpose(-1, -2)) * (1.0 / math.sqrt(dh))
        if bias is None:
            yield torch.softmax(scores, -1), None
        else:
            b = bias[i : i + c] if bias.shape[0] > 1 else bias
            yield torch.softmax(scores + b, -1), b > MASKED_AT


def sdpa_probs(
    query: torch.Tensor,
    key: torch.Tensor,
    *,
    attn_mask: torch.Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """The sampled attention probabilities of one ``F.scaled_dot_product_attention`` call, as
    :func:`mha_probs` gives them, recomputed as the function defines them: ``query``
    ``[B, H, L, E]`` (or ``[H, L, E]``), ``key`` ``[B, H_kv, S, E]`` (grouped-query attention:
    each key head serves ``H / H_kv`` query heads), ``attn_mask`` broadcastable to
    ``[B, H, L, S]`` (boolean True = may attend, or an additive float), ``is_causal`` the
    lower-triangular mask aligned at the top left, ``scale`` default ``1/sqrt(E)``.
    """
    import torch

    if not isinstance(query, torch.Tensor) or not isinstance(key, torch.Tensor):
        raise TypeError("the attention call has no query/key tensors")
    q, k = query.detach(), key.detach()
    if q.dim() == 3:
        q, k = q.unsqueeze(0), k.unsqueeze(0)
    if q.dim() != 4 or k.dim() != 4:
        raise ValueError(f"query of shape {tuple(query.shape)}: expected [batch, heads, L, E]")
    batch, heads, length, dim = q.shape
    src = k.shape[2]
    pos = _positions(length, q.device)
    qs = _pick_sequences(q).index_select(2, pos).float()  # [n, H, m, E]
    ks = _pick_sequences(k).float()
    if ks.shape[1] != heads:
        ks = ks.repeat_interleave(heads // ks.shape[1], dim=1)
    bias: torch.Tensor | None = None
    if isinstance(attn_mask, torch.Tensor):
        am = attn_mask.detach()
        while am.dim() < 4:
            am = am.unsqueeze(0)
        if am.shape[0] == batch and batch > 1:
            am = _pick_sequences(am)
        if am.shape[2] == length and length > 1:
            am = am.index_select(2, pos)
        if am.dtype == torch.bool:
            bias = torch.zeros(am.shape, device=q.device).masked_fill_(~am.to(q.device), -math.inf)
        else:
            bias = am.float().to(q.device)
    elif is_causal:
        keys = torch.arange(src, device=q.device)
        bias = _as_bias(keys[None, None, None, :] > pos[None, None, :, None])
    factor = scale if scale is not None else 1.0 / math.sqrt(dim)
    n = qs.shape[0]
    c = _per_chunk(n, heads * qs.shape[2] * src)
    for i in range(0, n, c):
        scores = (qs[i : i + c] @ ks[i : i + c].transpose(-1, -2)) * factor
        if bias is None:
            yield torch.softmax(scores, -1), None
        else:
            b = bias[i : i + c] if bias.shape[0] > 1 else bias
            yield torch.softmax(scores + b, -1), b > MASKED_AT


def qk_grams(module: nn.MultiheadAttention) -> tuple[torch.Tensor, torch.Tensor]:
    """Per head, the ``d_head x d_head`` Grams ``W_Q^h W_Q^h^T`` and ``W_K^h W_K^h^T``
    (``[H, d_head, d_head]`` each): all :func:`sigma_from_grams` needs."""
    heads, dh = module.num_heads, module.head_dim
    wq, wk = (w.detach().float().reshape(heads, dh, -1) for w in _qk_weights(module))
    return wq @ wq.transpose(1, 2), wk @ wk.transpose(1, 2)


def sigma_from_grams(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[H]``: the spectral norm of ``W_Q^h W_K^h^T`` per head (NaN for a non-finite head),
    from the Grams of :func:`qk_grams`.

    Exact and cheap: with ``A = W_Q^h W_Q^h^T`` and ``B = W_K^h W_K^h^T``, sigma^2 is the
    largest eigenvalue of ``A^(1/2) B A^(1/2)``, computed as that of ``L B L^T`` with
    ``L = diag(sqrt(a)) U^T`` from ``A = U diag(a) U^T`` (a similar matrix).
    """
    import torch

    a, b = a.float(), b.float()
    finite = (torch.isfinite(a) & torch.isfinite(b)).flatten(1).all(1)
    # a non-finite matrix would make the decomposition fail: decompose zeros, report NaN
    a = torch.where(finite[:, None, None], a, 0.0)
    b = torch.where(finite[:, None, None], b, 0.0)
    ev, u = torch.linalg.eigh(a)
    half = ev.clamp_min(0).sqrt()[:, :, None] * u.transpose(1, 2)
    c = half @ b @ half.transpose(1, 2)
    top = torch.linalg.eigvalsh((c + c.transpose(1, 2)) / 2)[:, -1]
    return torch.where(finite, top.clamp_min(0).sqrt(), math.nan)


def qk_sigma(module: nn.MultiheadAttention) -> torch.Tensor:
    """``[H]``: the spectral norm of ``W_Q^h W_K^h^T`` per head, on the module's device."""
    return sigma_from_grams(*qk_grams(module))


def _qk_sigma_record(a: torch.Tensor, b: torch.Tensor) -> dict[str, Any]:
    return {"qk_sigma": sigma_from_grams(a, b)}


class AttentionProbe(Probe):
    """The attention entropy per head of one ``nn.MultiheadAttention`` (probe kind
    ``attention``), recomputed for a sample of queries on sampled training steps, and at the
    end of the step ``qk_sigma`` from its weights (decomposed in the sender thread)."""

    def __init__(self, name: str, module: nn.MultiheadAttention) -> None:
        super().__init__()
        self.name = name
        self.label = f"attention {name!r}"
        self.module = module
        self.acc = AttentionAccumulator()

    def infos(self, order: int) -> list[ProbeInfo]:
        kind, module = ProbeKind.attention, type(self.module).__name__[:128]
        width = self.module.embed_dim
        return [ProbeInfo(name=self.name, kind=kind, module=module, order=order, width=width)]

    def install(self, hooks: Hooks) -> None:
        hooks.forward(self.module, self, self._on_call, with_kwargs=True)

    def _on_call(self, module: nn.MultiheadAttention, args: Any, kwargs: Any, out: Any) -> None:
        self.acc.add_mha(module, args, kwargs)

    def flush(self, pack: StepPack, step: int) -> None:
        acc, self.acc = self.acc, AttentionAccumulator()
        if not acc.n:
            return
        stats = pack.record(self.name, ProbeKind.attention.value, step)
        acc.pack(stats, pack)
        # the weights as they are at the end of the step
        pack.defer(stats, list(qk_grams(self.module)), _qk_sigma_record)

    def reset(self) -> None:
        self.acc = AttentionAccumulator()
