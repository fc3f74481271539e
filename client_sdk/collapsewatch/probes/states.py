"""Statistics of recurrent or state-space states by sequence position (the ``state`` family of
docs/indicators.md: state collapse past the training length), for ``log_state``. An evaluation
logger: every call is reduced (see :mod:`collapsewatch.probes.explicit`).

States are filed into log2 position buckets: bucket b holds positions 2^b <= t < 2^(b+1),
bucket 0 also t = 0, so 32 buckets cover every position below 2^32. Per bucket the SDK sends
the number of states, the sum of their norms and the largest absolute coordinate; counts and
sums add up over calls, steps and ranks, the maxima merge by maximum.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from collapsewatch.pipeline.packing import StepPack

#: Log2 position buckets; positions from 2^32 on cannot be filed.
BUCKETS = 32


def bucket_of(position: int) -> int:
    """The log2 bucket of a position: ``floor(log2(t))``, and 0 for ``t = 0``."""
    return max(position.bit_length() - 1, 0)


def _buckets(positions: Any, count: int, device: torch.device) -> torch.Tensor:
    """The bucket of each of the ``count`` positions as an int64 index on ``device``.

    Positions given as a list (or a CPU tensor) are checked. A tensor on an accelerator is not
    (that would need a host sync): its positions outside ``0 .. 2^32 - 1`` go to an extra
    slot ``BUCKETS`` that is dropped, so they are left out.
    """
    import torch

    if isinstance(positions, torch.Tensor):
        if positions.dim() != 1 or positions.is_floating_point() or positions.is_complex():
            raise TypeError(
                "positions must be a 1-D integer tensor or a list of ints, got a "
                f"{positions.dtype} tensor of shape {tuple(positions.shape)}"
            )
        if positions.dtype == torch.bool:
            raise TypeError("positions must be integers, not booleans")
        if positions.numel() != count:
            raise ValueError(f"{positions.numel()} positions for {count} states per sequence")
        t = positions.detach().to(device=device, dtype=torch.int64)
        if positions.device.type == "cpu" and count:
            low, high = int(positions.min()), int(positions.max())  # on the host: no sync
            _check_range(low, high)
    elif isinstance(positions, Sequence) and not isinstance(positions, str | bytes):
        values = list(positions)
        if len(values) != count:
            raise ValueError(f"{len(values)} positions for {count} states per sequence")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise TypeError("positions must be ints (a list, a range or a 1-D integer tensor)")
        if values:
            _check_range(min(values), max(values))
        return torch.tensor([bucket_of(v) for v in values], dtype=torch.int64, device=device)
    else:
        raise TypeError(f"positions must be a list of ints or a 1-D tensor, not {type(positions)}")
    # floor(log2 t) in integers: how many of 2, 4, ..., 2^31 are <= t (exact, any device)
    powers = torch.tensor([1 << b for b in range(1, BUCKETS)], dtype=torch.int64, device=device)
    index = (t[:, None] >= powers).sum(1)
    invalid = (t < 0) | (t >= 1 << BUCKETS)
    return torch.where(invalid, torch.full_like(index, BUCKETS), index)


def _check_range(low: int, high: int) -> None:
    if low < 0:
        raise ValueError(f"positions must be non-negative, got {low}")
    if high >= 1 << BUCKETS:
        raise ValueError(f"positions must be below 2^{BUCKETS}, got {high}")


class StateAccumulator:
    """States of one logger name at one step, by log2 position bucket (``StateStat``)."""

    __slots__ = ("count", "max_abs", "norm_sum", "train_length")

    def __init__(self) -> None:
        self.count: torch.Tensor | None = None
        self.norm_sum: torch.Tensor | None = None
        self.max_abs: torch.Tensor | None = None
        self.train_length: int | None = None

    def add(self, hidden: Any, positions: Any, train_length: int | None = None) -> None:
        """Add ``hidden`` ``[batch, P, dim]`` (or ``[P, dim]``), the states at the P
        ``positions`` of each sequence. ``train_length``: the sequence length the model was
        trained on (a positive int). Call under ``no_grad``."""
        import torch

        if not isinstance(hidden, torch.Tensor):
            raise TypeError(f"hidden must be a tensor [batch, P, dim], not {type(hidden)}")
        if hidden.dim() not in (2, 3):
            raise ValueError(
                f"hidden must be [batch, P, dim] or [P, dim], got shape {tuple(hidden.shape)}"
            )
        if hidden.dtype == torch.bool or hidden.is_complex():
            raise TypeError(f"hidden must hold real numbers, got {hidden.dtype}")
        h = hidden.detach() if hidden.dim() == 3 else hidden.detach()[None]
        batch, count, dim = h.shape
        if batch == 0 or count == 0 or dim == 0:
            raise ValueError(f"hidden is empty: shape {tuple(hidden.shape)}")
        if train_length is not None and (
            isinstance(train_length, bool) or not isinstance(train_length, int) or train_length < 1
        ):
            raise ValueError(f"train_length must be a positive int, got {train_length!r}")
        if None not in (train_length, self.train_length) and train_length != self.train_length:
            raise ValueError(
                f"train_length {train_length} differs from {self.train_length} given earlier "
                "at this step"
            )
        index = _buckets(positions, count, h.device)

        x = h.float()
        norms = torch.linalg.vector_norm(x, dim=2).sum(0)  # [P], summed over the batch
        peaks = x.abs().amax(2).amax(0)  # [P]
        slots = BUCKETS + 1  # the last slot takes unfiled positions and is dropped
        counts = torch.zeros(slots, dtype=torch.int64, device=x.device)
        counts.index_add_(0, index, torch.full((count,), batch, dtype=torch.int64, device=x.device))
        sums = torch.zeros(slots, device=x.device).index_add_(0, index, norms)
        maxima = torch.zeros(slots, device=x.device).scatter_reduce_(0, index, peaks, "amax")
        counts, sums, maxima = counts[:BUCKETS], sums[:BUCKETS], maxima[:BUCKETS]

        if self.count is None or self.norm_sum is None or self.max_abs is None:
            self.count, self.norm_sum, self.max_abs = counts, sums, maxima
        else:
            self.count = self.count + counts.to(self.count.device)
            self.norm_sum = self.norm_sum + sums.to(self.norm_sum.device)
            self.max_abs = torch.maximum(self.max_abs, maxima.to(self.max_abs.device))
        if train_length is not None:
            self.train_length = train_length

    def pack(self, stats: dict[str, Any], pack: StepPack) -> None:
        """File ``StateStat`` values into a record."""
        assert self.count is not None and self.norm_sum is not None and self.max_abs is not None
        pack.put(stats, "count", self.count)
        pack.put(stats, "norm_sum", self.norm_sum)
        pack.put(stats, "max_abs", self.max_abs)
        if self.train_length is not None:
            stats["train_length"] = float(self.train_length)
