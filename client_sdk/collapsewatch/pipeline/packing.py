"""One sampled step's statistics, copied from the device to the host at once.

Probes file tensors here instead of calling ``.item()`` per statistic: each ``.item()`` is a
device sync, while one ``cat`` and one non-blocking copy per device cost the training thread
next to nothing. What is left (list conversion, rounding, eigendecompositions and other
deferred work) runs in the sender thread.
"""

from __future__ import annotations

import array
import base64
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from collapsewatch.pipeline.footprint import load as records_load

if TYPE_CHECKING:
    import torch

Record = dict[str, Any]


class StepPack:
    """Records under construction; tensor values are filled in after the host copy.

    Two kinds of values: ``put`` schedules a tensor to become a number or a vector of the
    record; ``defer`` schedules host work on tensors (an eigendecomposition, say), done after
    the copy, in the sender thread, so the training thread never waits for it.
    """

    def __init__(self, merging: bool = False) -> None:
        #: ranks merge this pack (:mod:`collapsewatch.distributed`): deferred work must take
        #: matrices that add up across ranks (``moments``), not raw rows
        self.merging = merging
        self._records: list[Record] = []
        self._tensors: list[torch.Tensor] = []
        # for each tensor: the stats dict it belongs to, its key (None: an input of deferred
        # work), and whether it is a scalar
        self._slots: list[tuple[dict[str, Any], str | None, bool]] = []
        self._deferred: list[tuple[dict[str, Any], list[int], Deferred]] = []
        self._owned: set[int] = set()  # indices of host tensors handed over, not copied
        #: for merging ranks (:mod:`collapsewatch.distributed`): the stats key that counts the
        #: rows behind a deferred (covariance, mean) pair, by the id of the stats dict
        self.moments: dict[int, str] = {}
        #: ids of the stats dicts of records that describe this rank only (never merged)
        self.local: set[int] = set()

    def __len__(self) -> int:
        return len(self._records)

    @property
    def load(self) -> float:
        """The records' weight against a batch's record limit (``footprint.load``)."""
        return records_load(self._records)

    def record(self, probe: str, kind: str, step: int) -> dict[str, Any]:
        """Start a record (a ``StatRecord`` as a dict) and return its ``stats`` to fill."""
        stats: dict[str, Any] = {}
        self._records.append({"probe": probe, "kind": kind, "step": step, "stats": stats})
        return stats

    def put(self, stats: dict[str, Any], key: str, value: torch.Tensor) -> None:
        """Schedule ``stats[key] = value`` for after the host copy (a float or a list)."""
        self._tensors.append(value)
        self._slots.append((stats, key, value.dim() == 0))

    def defer(
        self,
        stats: dict[str, Any],
        inputs: list[torch.Tensor],
        work: Deferred,
        *,
        moments: str | None = None,
        owned: bool = False,
    ) -> None:
        """After the host copy, in the sender thread: ``stats.update(work(*host_inputs))``.

        ``work`` gets the inputs as CPU tensors of their own dtype, in their shapes,
        and returns statistics as tensors (filed like :meth:`put` values) or numbers.
        ``moments``: the inputs are a covariance and the mean of the rows counted by
        ``stats[moments]``, so records of several ranks merge as matrices before ``work``.
        ``owned``: the inputs are CPU tensors nothing else holds or changes (copies the probe
        made): they are handed to ``work`` as they are, not copied again.
        """
        if moments is not None:
            self.moments[id(stats)] = moments
        indices = []
        for tensor in inputs:
            if owned and tensor.device.type == "cpu":
                self._owned.add(len(self._tensors))
            indices.append(len(self._tensors))
            self._tensors.append(tensor)
            self._slots.append((stats, None, False))
        self._deferred.append((stats, indices, work))

    def rank_local(self, stats: dict[str, Any]) -> None:
        """Mark a record as describing this rank only: merging ranks leaves it as it is."""
        self.local.add(id(stats))

    def entries(self) -> list[tuple[Record, list[tuple[int, str | None]], list[int]]]:
        """Each record with its scheduled tensors ``(index, key)`` and the indices of its
        deferred inputs, in filing order (for :mod:`collapsewatch.distributed`)."""
        put: dict[int, list[tuple[int, str | None]]] = {}
        for i, (stats, key, _) in enumerate(self._slots):
            if key is not None:
                put.setdefault(id(stats), []).append((i, key))
        deferred: dict[int, list[int]] = {}
        for stats, indices, _ in self._deferred:
            deferred.setdefault(id(stats), []).extend(indices)
        return [
            (r, put.get(id(r["stats"]), []), deferred.get(id(r["stats"]), []))
            for r in self._records
        ]

    def tensor(self, index: int) -> torch.Tensor:
        return self._tensors[index]

    def replace(self, index: int, value: torch.Tensor) -> None:
        """Swap a scheduled tensor for another of the same number of values (a merged one)."""
        self._tensors[index] = value.reshape(self._tensors[index].shape)

    def records(self) -> list[Record]:
        """Copy to the host and build the records now (see :meth:`copy`)."""
        return self.copy()()

    def copy(self) -> Callable[[], list[Record]]:
        """Copy every scheduled tensor to the host now, one copy per device and dtype; return
        a function that builds the records from the copies.

        The training thread only pays for the copy, which does not wait for the device: from a
        GPU it goes into pinned memory behind an event that the returned function (list
        conversion, rounding, deferred work) waits for, in the sender thread. Tensors are
        copied in their own dtype (a float32 covariance as float32, an int64 count as int64):
        converting while concatenating took 20 ms of a small model's sampled step on CPU, and
        the sender thread converts anyway.
        """
        import torch

        by_kind: dict[tuple[torch.device, torch.dtype], list[int]] = {}
        host: list[torch.Tensor | None] = [None] * len(self._tensors)
        for i, tensor in enumerate(self._tensors):
            if i in self._owned:
                host[i] = tensor
            else:
                by_kind.setdefault((tensor.device, tensor.dtype), []).append(i)
        waits: list[Any] = []
        for indices in by_kind.values():
            parts = [self._tensors[i].detach().reshape(-1) for i in indices]
            flat = torch.cat(parts) if len(parts) > 1 else parts[0].clone()
            flat_host, wait = _to_host(flat)
            if wait is not None:
                waits.append(wait)
            offset = 0
            for i, part in zip(indices, parts, strict=True):
                host[i] = flat_host[offset : offset + part.numel()].view(self._tensors[i].shape)
                offset += part.numel()
        slots, deferred, records = self._slots, self._deferred, self._records
        self._records, self._tensors, self._slots, self._deferred = [], [], [], []
        self._owned = set()
        self.moments, self.local = {}, set()

        def build() -> list[Record]:
            for wait in waits:
                wait.synchronize()
            values: list[tuple[dict[str, Any], str, torch.Tensor]] = []
            for (stats, key, _), value in zip(slots, host, strict=True):
                if key is not None and value is not None:
                    values.append((stats, key, value))
            for stats, indices, work in deferred:
                for key, value in work(*[host[i] for i in indices]).items():
                    if isinstance(value, torch.Tensor):
                        values.append((stats, key, value))
                    else:
                        stats[key] = value
            _file(values)
            return records

        return build


Deferred = Callable[..., dict[str, Any]]


def _to_host(flat: torch.Tensor) -> tuple[torch.Tensor, Any]:
    """``flat`` on the CPU, and on CUDA the event to wait for before reading it."""
    import torch

    if flat.device.type != "cuda":
        return flat.cpu(), None
    out = torch.empty(flat.shape, dtype=flat.dtype, pin_memory=True)
    out.copy_(flat, non_blocking=True)
    event = torch.cuda.Event()
    event.record()
    return out, event


def _file(values: list[tuple[dict[str, Any], str, torch.Tensor]]) -> None:
    """Put host tensors into their records: vectors packed, scalars and short vectors as
    (rounded) JSON numbers, all the short ones converted in one go."""
    import torch

    short: list[tuple[dict[str, Any], str, torch.Tensor]] = []
    for stats, key, value in values:
        if value.dim() == 0 or value.numel() < PACK_MIN:
            short.append((stats, key, value))
        else:
            stats[key] = packed(value.reshape(-1))
    if not short:
        return
    flat = shortest(torch.cat([v.reshape(-1).double() for *_, v in short])).tolist()
    at = 0
    for stats, key, value in short:
        if value.dim() == 0:
            stats[key] = flat[at]
        else:
            stats[key] = flat[at : at + value.numel()]
        at += value.numel()


#: Vectors at least this long are sent packed (``schemas.Packed``).
PACK_MIN = 33


def packed(values: torch.Tensor) -> dict[str, str]:
    """A host vector as ``{"f32": base64 of little-endian float32}`` (see ``schemas.Packed``)."""
    import torch

    f32 = values.to(torch.float32).contiguous()
    try:
        data = f32.numpy().astype("<f4", copy=False).tobytes()
    except RuntimeError:  # torch without numpy
        arr = array.array("f", f32.tolist())
        if sys.byteorder == "big":
            arr.byteswap()
        data = arr.tobytes()
    return {"f32": base64.b64encode(data).decode("ascii")}


def shortest(values: torch.Tensor) -> torch.Tensor:
    """``values`` rounded to 9 significant digits, as float64.

    Nine digits round-trip every float32 (what the server stores), and the doubles nearest to
    such decimals print short: JSON gets about 40% smaller and faster to write than with the
    17 digits a float32 widened to float64 prints with. (Below about 1e-14 and above 1e30 the
    powers of ten are inexact and some values still print long; none loses precision.)
    """
    import torch

    x = values.double()
    magnitude = x.abs()
    digits = 8 - torch.floor(torch.log10(magnitude))
    # powers of ten are exact as doubles only when non-negative: divide for large values
    up = torch.pow(10.0, digits.clamp(min=0))
    down = torch.pow(10.0, (-digits).clamp(min=0))
    rounded = torch.where(digits >= 0, torch.round(x * up) / up, torch.round(x / down) * down)
    return torch.where(torch.isfinite(x) & (magnitude > 0), rounded, x)
