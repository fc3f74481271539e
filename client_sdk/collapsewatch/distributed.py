"""Data-parallel training: the statistics of every rank merged into rank 0's records.

By default (``watch(..., ranks="zero")``) only rank 0 watches: the other ranks get a monitor that
does nothing, and a run is judged on rank 0's batches. With ``ranks="merge"`` every rank
watches and, at the end of each sampled step, the records of all ranks are added up into rank
0's, which alone sends them:

- One ``all_reduce`` (a sum, on the backend's device) per sampled step, none on other steps.
  The buffer holds a header and the statistics: sums add; statistics that merge by maximum
  (``schemas.stats.MERGE``) travel in one slot per rank and are maxed after the sum; ``last``
  ones (sizes, spectra) are rank 0's. Spectra are merged as matrices before any
  decomposition: a layer's covariance and mean (``StepPack.defer(..., moments=...)``) travel
  as the float64 moments ``n (C + m m^T)`` and ``n m``, and rank 0 decomposes the merged
  covariance after the host copy, as for one rank. The loss is a count-weighted mean and a max.
- Parameters are the same on every rank (DDP) and are rank 0's; scalars and evaluation loggers
  are rank 0's; a class record in the coordinates of one rank (a vocabulary's most frequent
  labels, a lagged basis) is rank 0's (``StepPack.rank_local``).
- Every rank must record the same things in the same shapes, or sums would mix unrelated
  numbers and a collective of unequal sizes would hang. The header carries a hash of the
  records' layout and its length; all ranks decide from the same reduced header, so they all
  merge, or all keep rank 0's batches for that step (said once). The buffer's capacity is the
  last agreed length: a step that records more takes a second collective, once.
- Sampling must be the same on every rank: the interval is the one rank 0's adaptive sampler
  chose, sent in the header and applied by all ranks from the next sampled step, and the
  time-based extra samples are off (:class:`LockstepSampler`).

The header is read on the host, so a merged step waits for the collective: one device sync per
sampled step, on sampled steps only.

Sharded parameters (FSDP's ``fully_shard`` DTensors) are read as this rank's shard, never
gathered: a collective on rank 0 alone would hang (:func:`local_tensor`).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from collapsewatch.pipeline.sampling import Sampler
from collapsewatch.schemas import ProbeKind
from collapsewatch.schemas.stats import merge_kind

if TYPE_CHECKING:
    import torch

    from collapsewatch.pipeline.packing import StepPack

Ranks = Literal["zero", "merge"]
RANKS: tuple[Ranks, ...] = ("zero", "merge")

#: Kinds whose records add up across ranks; the others are rank 0's.
MERGED_KINDS = frozenset(
    {
        ProbeKind.activation,
        ProbeKind.classes,
        ProbeKind.tokens,
        ProbeKind.attention,
        ProbeKind.codes,
        ProbeKind.posterior,
        ProbeKind.routing,
        ProbeKind.loss,
    }
)
#: The loss record (mean and max since the previous sampled step, and their count).
_LOSS: dict[str, Literal["weighted", "max", "sum"]] = {
    "mean": "weighted",
    "max": "max",
    "count": "sum",
}
#: Header numbers: the layout's length and hash in 16-bit chunks, each with its square (all
#: ranks agree iff ``world * sum(x^2) == sum(x)^2``, exact in float64), then rank 0's interval.
_CHUNKS = 5
_HEADER = 2 * _CHUNKS + 1

LogOnce = Callable[[str, str], None]


def check_ranks(ranks: str) -> Ranks:
    if ranks not in RANKS:
        raise ValueError(f"collapsewatch: ranks must be 'zero' or 'merge', got {ranks!r}")
    return ranks  # type: ignore[return-value]


class LockstepSampler(Sampler):
    """A sampler every rank follows alike: the interval is the one :class:`RankMerge` agreed
    (rank 0's choice at its previous sampled step), and no step is sampled for time alone."""

    def __init__(self, every: int | None) -> None:
        super().__init__(every)
        self.agreed = self.every
        self.proposal = self.every  # what this rank's own sampler would choose

    def sampled(self, step: int) -> bool:
        return step % self.every == 0

    def observe(self, step: int, sampled: bool, wall: float, cost: float) -> None:
        super().observe(step, sampled, wall, cost)
        self.proposal = self.every
        self.every = self.agreed


@dataclass
class _Part:
    """One piece of the buffer: what it is, where its values come from and go."""

    how: str  # "sum", "max", "weighted", "moments"
    record: dict[str, Any]
    key: str
    size: int
    value: Any  # a host number, a tensor, or (cov, mean, count key) for moments
    index: int = -1  # the pack's tensor index (-1: a host number)
    extra: int = -1  # moments: the mean's tensor index


class RankMerge:
    """Merges a sampled step's pack across the ranks of the default process group."""

    def __init__(self, sampler: LockstepSampler, log_once: LogOnce) -> None:
        self.sampler = sampler
        self._log_once = log_once
        self._capacity = 0
        self.merged_steps = 0

    def merge(self, pack: StepPack, step: int) -> None:
        """Add the other ranks' statistics into ``pack`` (on rank 0); one collective."""
        import torch

        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()):
            return
        world, rank = dist.get_world_size(), dist.get_rank()
        if world == 1:
            return
        parts = _parts(pack)
        device = _device(dist.get_backend(), pack)
        data = _values(parts, world, rank, device)
        signature = "|".join(f"{p.how}:{p.record['probe']}:{p.key}:{p.size}" for p in parts)
        length = int(data.numel())
        proposal = self.sampler.proposal if rank == 0 else 0
        header = _header(length, zlib.crc32(signature.encode()), proposal)
        buffer = torch.zeros(_HEADER + self._capacity, dtype=torch.float64, device=device)
        buffer[:_HEADER] = header.to(device)
        if length <= self._capacity:
            buffer[_HEADER : _HEADER + length] = data
        dist.all_reduce(buffer)
        reduced = buffer[:_HEADER].tolist()  # the one sync: every rank decides alike
        self.sampler.agreed = max(1, round(reduced[-1]))
        self.sampler.every = self.sampler.agreed
        if not _agree(reduced, world):
            self._log_once(
                "ranks:layout",
                f"collapsewatch: the ranks recorded different statistics at step {step} "
                "(a layer called on some ranks only?): such steps keep rank 0's batches only",
            )
            return
        if length > self._capacity:  # every rank knows: the lengths agree
            self._capacity = length
            merged = data.clone()
            dist.all_reduce(merged)
        else:
            merged = buffer[_HEADER : _HEADER + length]
        self.merged_steps += 1
        if rank == 0:
            _apply(pack, parts, merged, world)


def _parts(pack: StepPack) -> list[_Part]:
    """The pieces of the pack that merge, in an order every rank shares."""
    parts: list[_Part] = []
    entries = sorted(pack.entries(), key=lambda e: (e[0]["kind"], e[0]["probe"], e[0]["step"]))
    for record, put, deferred in entries:
        stats = record["stats"]
        if record["kind"] not in MERGED_KINDS or id(stats) in pack.local:
            continue
        loss = record["kind"] == ProbeKind.loss
        for key in sorted(stats):
            value = stats[key]
            how = _LOSS.get(key, "sum") if loss else merge_kind(key)
            if isinstance(value, int | float) and not isinstance(value, bool) and how != "last":
                parts.append(_Part(how, record, key, 1, float(value)))
        for index, key in sorted(put, key=lambda p: str(p[1])):
            assert key is not None
            how = _LOSS.get(key, "sum") if loss else merge_kind(key)
            if how != "last":
                tensor = pack.tensor(index)
                parts.append(_Part(how, record, key, tensor.numel(), tensor, index))
        weight = pack.moments.get(id(stats))
        if weight is not None and len(deferred) == 2 and weight in stats:
            cov, mean = pack.tensor(deferred[0]), pack.tensor(deferred[1])
            size = cov.numel() + mean.numel()
            value = (cov, mean, float(stats[weight]))
            parts.append(_Part("moments", record, weight, size, value, deferred[0], deferred[1]))
    return parts


def _values(parts: list[_Part], world: int, rank: int, device: torch.device) -> torch.Tensor:
    """This rank's contribution, flat float64 on ``device``."""
    import torch

    pieces: list[torch.Tensor] = []
    counts = {id(p.record): p.value for p in parts if p.key == "count" and p.index < 0}
    for p in parts:
        if p.how == "moments":
            cov, mean, n = p.value
            c, m = cov.to(device, torch.float64), mean.to(device, torch.float64)
            pieces += [(n * (c + m[:, None] * m[None, :])).reshape(-1), n * m]
            continue
        value = p.value if p.index >= 0 else torch.tensor(p.value)
        flat = value.to(device, torch.float64).reshape(-1)
        if p.how == "weighted":  # the loss mean, weighted by its count
            flat = flat * counts.get(id(p.record), 0.0)
        if p.how == "max":
            slots = torch.zeros(world * flat.numel(), dtype=torch.float64, device=device)
            slots[rank * flat.numel() : (rank + 1) * flat.numel()] = flat
            flat = slots
        pieces.append(flat)
    if not pieces:
        return torch.zeros(0, dtype=torch.float64, device=device)
    return torch.cat(pieces)


def _apply(pack: StepPack, parts: list[_Part], merged: torch.Tensor, world: int) -> None:
    """Put the merged values into rank 0's pack, still on the device (one host copy later)."""
    at = 0
    sizes = [p.size * world if p.how == "max" else p.size for p in parts]
    totals: dict[tuple[int, str], torch.Tensor] = {}  # merged host numbers: the weights
    for p, size in zip(parts, sizes, strict=True):
        if p.index < 0 and p.how == "sum":
            totals[(id(p.record), p.key)] = merged[at]
        at += size
    at = 0
    for p, size in zip(parts, sizes, strict=True):
        value = merged[at : at + size]
        at += size
        if p.how == "moments":
            mean = p.value[1]
            k = mean.numel()
            total = totals[(id(p.record), p.key)].clamp_min(1)
            mu = value[k * k :] / total
            second = value[: k * k].reshape(k, k) / total
            pack.replace(p.index, second - mu[:, None] * mu[None, :])
            pack.replace(p.extra, mu)
            continue
        if p.how == "max":
            value = value.reshape(world, -1).amax(0)
        elif p.how == "weighted":
            value = value / totals[(id(p.record), "count")].clamp_min(1)
        if p.index >= 0:
            pack.replace(p.index, value)
        else:
            pack.put(p.record["stats"], p.key, value.reshape(()))


def _header(length: int, signature: int, proposal: int) -> torch.Tensor:
    import torch

    chunks = [(length >> 32) & 0xFFFF, (length >> 16) & 0xFFFF, length & 0xFFFF]
    chunks += [(signature >> 16) & 0xFFFF, signature & 0xFFFF]
    values = [float(v) for c in chunks for v in (c, c * c)] + [float(proposal)]
    return torch.tensor(values, dtype=torch.float64)


def _agree(reduced: list[float], world: int) -> bool:
    """Whether every rank sent the same chunks (equality in Cauchy-Schwarz)."""
    for i in range(_CHUNKS):
        total, squares = reduced[2 * i], reduced[2 * i + 1]
        if world * squares != total * total:
            return False
    return True


def _device(backend: str, pack: StepPack) -> torch.device:
    """Where the buffer lives: the host for gloo, else the device of the statistics."""
    import torch

    if backend == "gloo":
        return torch.device("cpu")
    for _, put, deferred in pack.entries():
        for index in [i for i, _ in put] + deferred:
            return pack.tensor(index).device
    return torch.device("cuda", torch.cuda.current_device())


def local_tensor(param: torch.Tensor) -> torch.Tensor:
    """A parameter as this rank holds it: its local shard if it is a sharded DTensor (reading
    the whole would gather it, a collective that rank 0 alone would start and wait on)."""
    to_local = getattr(param, "to_local", None)
    return to_local() if callable(to_local) and type(param).__name__ == "DTensor" else param


def is_sharded(param: Any) -> bool:
    """Whether a parameter is sharded across ranks (FSDP's DTensor or FlatParameter)."""
    return type(param).__name__ in ("DTensor", "FlatParameter") or bool(
        getattr(param, "_is_sharded", False)
    )


def sharded(params: list[tuple[str, torch.Tensor]]) -> bool:
    """Whether some parameters are sharded across ranks (FSDP)."""
    return any(is_sharded(p) for _, p in params)


SHARDED_NOTE = (
    "collapsewatch: the parameters are sharded across ranks (FSDP): weight, gradient and update "
    "norms, sparsity and NaN counts are those of this rank's shard, not of whole tensors, and "
    "neural collapse is off if the classifier's weight is sharded when the loss reads it; layer "
    "outputs, the loss and the other statistics are whole"
)
