"""Statistics of what a model generates and of its validation loss (the ``diversity``
family of docs/indicators.md: output diversity, model collapse, perplexity), for ``log_tokens`` and
``log_eval``. Evaluation loggers: every call is reduced (see :mod:`collapsewatch.probes.explicit`).

``log_tokens`` reduces generated token ids on their device to the statistics of
:class:`collapsewatch.schemas.TextStat`: unigram counts, n-gram totals, HyperLogLog sketches
of the distinct bigrams and trigrams, and the seq-rep-4 repetition of each sequence. N-grams
are hashed to 64 bits on the device (int64 arithmetic, which wraps); a sketch is 4096 small
registers whatever the number of samples, and sketches of several calls, steps or ranks merge
by element-wise maximum.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from collapsewatch.schemas.stats import merge_kind

if TYPE_CHECKING:
    import torch

    from collapsewatch.pipeline.packing import StepPack

#: Unigram counts are kept per token id modulo this (exact for vocabularies up to its size).
UNIGRAM_BUCKETS = 65536
#: HyperLogLog precision: 2**12 = 4096 registers, a standard error of 1.04 / 64 = 1.6%.
HLL_BITS = 12
HLL_REGISTERS = 1 << HLL_BITS
#: Bits of the hash left for the rank once the register index is taken.
_RANK_BITS = 64 - HLL_BITS
#: seq-rep-n (Welleck et al., "Neural text generation with unlikelihood training") with n = 4.
REP_N = 4

# splitmix64's finaliser (Steele, Lea and Flood), constants as signed int64 (both are > 2**63).
_M1 = 0xBF58476D1CE4E5B9 - (1 << 64)
_M2 = 0x94D049BB133111EB - (1 << 64)
#: Added to a token id before its first mix, so that id 0 does not hash to 0.
_SEED = 0x9E3779B97F4A7C15 - (1 << 64)
_INT64_MAX = (1 << 63) - 1


def _scalar(value: Any, what: str) -> torch.Tensor:
    """A number or a one-element tensor as a float64 scalar tensor on its device (no sync)."""
    import torch

    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            shape = tuple(value.shape)
            raise ValueError(f"{what} must be one number, got a tensor of shape {shape}")
        return value.detach().reshape(()).double()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number or a one-element tensor, not {type(value)}")
    return torch.tensor(float(value), dtype=torch.float64)


class EvalAccumulator:
    """Summed validation NLL and token count of one evaluation (``EvalStat``)."""

    __slots__ = ("nll_sum", "tokens")

    def __init__(self) -> None:
        self.nll_sum: torch.Tensor | None = None
        self.tokens: torch.Tensor | None = None

    def add(self, nll_sum: Any, token_count: Any) -> None:
        nll, count = _scalar(nll_sum, "nll_sum"), _scalar(token_count, "token_count")
        if self.nll_sum is None or self.tokens is None:
            self.nll_sum, self.tokens = nll, count
        else:
            self.nll_sum = self.nll_sum + nll.to(self.nll_sum.device)
            self.tokens = self.tokens + count.to(self.tokens.device)

    def pack(self, stats: dict[str, Any], pack: StepPack) -> None:
        assert self.nll_sum is not None and self.tokens is not None
        pack.put(stats, "nll_sum", self.nll_sum)
        pack.put(stats, "tokens", self.tokens)


# ------------------------------------------------------------------------ generated text


def _shr(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's ``>>`` is arithmetic: it copies the sign bit)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def mix64(x: torch.Tensor) -> torch.Tensor:
    """splitmix64's finaliser on int64: a bijection of the 64 bits in which every input bit
    flips each output bit with probability ~1/2 (products wrap modulo 2**64)."""
    x = (x ^ _shr(x, 30)) * _M1
    x = (x ^ _shr(x, 27)) * _M2
    return x ^ _shr(x, 31)


def _bit_length(x: torch.Tensor) -> torch.Tensor:
    """Bits needed for each non-negative int64 (0 for 0), exactly, by binary search: no float
    conversion (a float64 ``log2`` of 2**k - 1 rounds up to k near 2**52; MPS has no float64)."""
    import torch

    n = torch.zeros_like(x)
    for s in (32, 16, 8, 4, 2, 1):
        big = x >= (1 << s)
        x = torch.where(big, x >> s, x)
        n = n + big * s
    return n + (x > 0)


def ngram_hashes(ids: torch.Tensor, valid: torch.Tensor, n_max: int) -> list[torch.Tensor]:
    """64-bit hashes of the n-grams of each row for n = 1..n_max, ``[S, L - n + 1]`` each; a
    hash chains the mix of the previous (n-1)-gram's hash with the next id. Entries whose
    n-gram touches padding are garbage: mask them with ``valid`` shifted alike."""
    hashes = [mix64(ids * valid + _SEED)]
    for n in range(2, n_max + 1):
        hashes.append(mix64(hashes[-1][:, :-1] ^ ids[:, n - 1 :]))
    return hashes


def ngram_valid(valid: torch.Tensor, n_max: int) -> list[torch.Tensor]:
    """For n = 1..n_max, ``[S, L - n + 1]``: whether the n-gram starting there has no padding."""
    masks = [valid]
    for n in range(2, n_max + 1):
        masks.append(masks[-1][:, :-1] & valid[:, n - 1 :])
    return masks


def hll_registers(hashes: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """HyperLogLog registers (int64, ``[4096]``) of the valid hashes: the register is the low
    12 bits, its value the position of the first 1 in the other 52 bits, from the top (1..53)."""
    import torch

    index = (hashes & (HLL_REGISTERS - 1)).reshape(-1)
    rest = _shr(hashes, HLL_BITS)
    rank = (_RANK_BITS + 1 - _bit_length(rest)) * valid  # padding: 0, which changes nothing
    registers = torch.zeros(HLL_REGISTERS, dtype=torch.int64, device=hashes.device)
    return registers.scatter_reduce_(0, index, rank.reshape(-1), "amax", include_self=True)


def repetition(hashes: torch.Tensor, valid: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Per row, 1 - distinct n-grams / n-grams (seq-rep-n) of the valid hashes, exactly up to
    64-bit hash collisions; 0 for rows without an n-gram. Rows are sorted on the device."""
    import torch

    count = valid.sum(1)
    ordered = torch.where(valid, hashes, _INT64_MAX).sort(dim=1).values
    # padding sorts last, so a row's first ``count`` entries are its n-grams: count the changes
    position = torch.arange(1, max(ordered.shape[1], 1), device=hashes.device)
    changes = (ordered[:, 1:] != ordered[:, :-1]) & (position[None, :] < count[:, None])
    distinct = changes.sum(1) + (count > 0)
    return torch.where(count > 0, 1 - distinct.to(dtype) / count.clamp(min=1).to(dtype), 0.0)


def _float_dtype(device: torch.device) -> torch.dtype:
    import torch

    # float64 keeps counts exact past 2**24; MPS has no float64
    return torch.float32 if device.type == "mps" else torch.float64


def as_token_ids(token_ids: Any) -> torch.Tensor:
    """``[samples, length]`` int64 ids on their device, negative for padding, from a 2-D
    integer tensor (whose negative ids are padding) or a list of sequences of any lengths
    (lists of ints or 1-D integer tensors), padded at the end. Raises ``TypeError`` or
    ``ValueError`` on anything else."""
    import torch

    if isinstance(token_ids, torch.Tensor):
        _check_integer(token_ids, "token_ids")
        if token_ids.dim() != 2:
            raise ValueError(
                "token_ids must be [samples, length] (one sequence: ids[None]) or a list of "
                f"sequences, got a tensor of shape {tuple(token_ids.shape)}"
            )
        return token_ids.detach().to(torch.int64)
    if isinstance(token_ids, str | bytes) or not isinstance(token_ids, Sequence):
        raise TypeError(
            "token_ids must be a [samples, length] integer tensor or a list of sequences, "
            f"not {type(token_ids).__name__}"
        )
    if len(token_ids) == 0:
        raise ValueError("token_ids holds no sequence")
    rows: list[torch.Tensor] = []
    device: torch.device | None = None
    for i, seq in enumerate(token_ids):
        if isinstance(seq, torch.Tensor):
            _check_integer(seq, f"token_ids[{i}]")
            if seq.dim() != 1:
                raise ValueError(f"token_ids[{i}] must be 1-D, got shape {tuple(seq.shape)}")
            if device is not None and seq.device != device:
                raise ValueError(f"token_ids[{i}] is on {seq.device}, the others on {device}")
            device = seq.device
            rows.append(seq.detach().to(torch.int64))
        elif isinstance(seq, Sequence) and not isinstance(seq, str | bytes):
            if not all(isinstance(t, int) and not isinstance(t, bool) for t in seq):
                raise TypeError(f"token_ids[{i}] must hold ints only")
            rows.append(torch.tensor(list(seq), dtype=torch.int64))
        else:
            raise TypeError(
                f"token_ids[{i}] must be a list of ints or a 1-D integer tensor, "
                f"not {type(seq).__name__}"
            )
    if device is not None:
        rows = [r.to(device) for r in rows]
    return torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=-1)


def _check_integer(t: torch.Tensor, what: str) -> None:
    import torch

    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise TypeError(f"{what} must hold integer token ids, got dtype {t.dtype}")


def _generation(value: Any) -> float | None:
    """A plain number (numpy's too); a tensor would cost a host sync, so it is refused."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"generation must be a plain number such as 3, not {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"generation must be finite, not {value!r}")
    return float(value)


#: The statistics of a call, merged over calls as ``schemas.stats.MERGE`` says.
_STATS = ("tokens", "unigrams", "ngrams_2", "ngrams_3", "rep_sum", "rep_seqs", "hll_2", "hll_3")


class TextAccumulator:
    """Diversity statistics of generated token ids over the calls of one step (``TextStat``).

    Every statistic is a sum over the calls except the sketches (element-wise maximum) and
    ``generation`` (the newest call's). The state is a few small tensors on the ids' device:
    65536 unigram counts and two sketches of 4096 registers.
    """

    __slots__ = (
        "generation",
        "hll_2",
        "hll_3",
        "ngrams_2",
        "ngrams_3",
        "rep_seqs",
        "rep_sum",
        "sequences",
        "tokens",
        "unigrams",
    )

    def __init__(self) -> None:
        self.sequences = 0
        self.generation: float | None = None
        self.tokens: torch.Tensor | None = None
        self.unigrams: torch.Tensor | None = None
        self.ngrams_2: torch.Tensor | None = None
        self.ngrams_3: torch.Tensor | None = None
        self.hll_2: torch.Tensor | None = None
        self.hll_3: torch.Tensor | None = None
        self.rep_sum: torch.Tensor | None = None
        self.rep_seqs: torch.Tensor | None = None

    def add(self, token_ids: Any, generation: Any = None) -> None:
        """Reduce one batch of generated sequences (see :func:`as_token_ids`); n-grams that
        touch padding are left out. ``generation``: the self-consuming round, a plain number."""
        import torch

        gen = _generation(generation)
        ids = as_token_ids(token_ids)
        dtype = _float_dtype(ids.device)
        valid = ids >= 0
        masks = ngram_valid(valid, REP_N)
        hashes = ngram_hashes(ids, valid, REP_N)

        unigrams = torch.zeros(UNIGRAM_BUCKETS, dtype=dtype, device=ids.device)
        bucket = (ids & (UNIGRAM_BUCKETS - 1)) * valid  # padding goes to 0 with weight 0
        unigrams.index_add_(0, bucket.reshape(-1), valid.reshape(-1).to(dtype))
        rep = repetition(hashes[REP_N - 1], masks[REP_N - 1], dtype)
        computed = {
            "tokens": valid.sum().to(dtype),
            "unigrams": unigrams,
            "ngrams_2": masks[1].sum().to(dtype),
            "ngrams_3": masks[2].sum().to(dtype),
            "rep_sum": rep.sum(),
            "rep_seqs": (masks[REP_N - 1].sum(1) > 0).sum().to(dtype),
        }
        computed["hll_2"] = hll_registers(hashes[1], masks[1])
        computed["hll_3"] = hll_registers(hashes[2], masks[2])

        # everything is computed: only now does the state change, each statistic merged as
        # the wire schema says (sums add, sketches take the element-wise maximum)
        first = self.tokens is None
        for key, value in computed.items():
            old = getattr(self, key)
            if first:
                setattr(self, key, value)
            elif merge_kind(key) == "max":
                setattr(self, key, torch.maximum(old, value.to(old.device)))
            else:
                setattr(self, key, old + value.to(old.device, old.dtype))
        self.sequences += ids.shape[0]
        if gen is not None:
            self.generation = gen

    def pack(self, stats: dict[str, Any], pack: StepPack) -> None:
        assert self.tokens is not None
        stats["sequences"] = float(self.sequences)
        for key in _STATS:
            pack.put(stats, key, getattr(self, key))
        if self.generation is not None:
            stats["generation"] = self.generation
