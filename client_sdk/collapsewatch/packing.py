"""One sampled step's statistics, copied from the device to the host at once.

Hooks file tensors here instead of calling ``.item()`` per statistic: each ``.item()`` is a
device sync, while one ``cat`` and one copy per device cost a single sync per sampled step.
"""

from __future__ import annotations

import array
import base64
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

Record = dict[str, Any]


class StepPack:
    """Records under construction; tensor values are filled in by :meth:`records`."""

    def __init__(self) -> None:
        self._records: list[Record] = []
        self._tensors: list[torch.Tensor] = []
        # for each tensor: the stats dict it belongs to, its key, and whether it is a scalar
        self._slots: list[tuple[dict[str, Any], str, bool]] = []

    def __len__(self) -> int:
        return len(self._records)

    def record(self, probe: str, kind: str, step: int) -> dict[str, Any]:
        """Start a record (a ``StatRecord`` as a dict) and return its ``stats`` to fill."""
        stats: dict[str, Any] = {}
        self._records.append({"probe": probe, "kind": kind, "step": step, "stats": stats})
        return stats

    def put(self, stats: dict[str, Any], key: str, value: torch.Tensor) -> None:
        """Schedule ``stats[key] = value`` for after the host copy (a float or a list)."""
        self._tensors.append(value)
        self._slots.append((stats, key, value.dim() == 0))

    def records(self) -> list[Record]:
        """Copy to the host and build the records now (see :meth:`copy`)."""
        return self.copy()()

    def copy(self) -> Callable[[], list[Record]]:
        """Copy every scheduled tensor to the host now, one copy per device; return a function
        that builds the records from the copies.

        The training thread only pays for the copy: the returned function (list conversion,
        rounding, splitting) runs in the sender thread.
        """
        import torch

        by_device: dict[torch.device, list[int]] = {}
        for i, tensor in enumerate(self._tensors):
            by_device.setdefault(tensor.device, []).append(i)
        copies: list[tuple[torch.Tensor, list[tuple[dict[str, Any], str, bool, int]]]] = []
        for device, indices in by_device.items():
            parts = [self._tensors[i].detach().reshape(-1) for i in indices]
            # float64 keeps counts exact past 2**24; MPS has no float64
            dtype = torch.float32 if device.type == "mps" else torch.float64
            flat = torch.empty(sum(p.numel() for p in parts), dtype=dtype, device=device)
            torch.cat(parts, out=flat)
            slots = [(*self._slots[i], p.numel()) for i, p in zip(indices, parts, strict=True)]
            copies.append((flat.cpu(), slots))
        records = self._records
        self._records, self._tensors, self._slots = [], [], []

        def build() -> list[Record]:
            for flat, slots in copies:
                # vectors travel packed; scalars and short vectors as (rounded) JSON numbers
                short: list[tuple[dict[str, Any], str, bool, int, int]] = []
                offset = 0
                for stats, key, scalar, size in slots:
                    if scalar or size < PACK_MIN:
                        short.append((stats, key, scalar, offset, size))
                    else:
                        stats[key] = packed(flat[offset : offset + size])
                    offset += size
                if short:
                    values = shortest(torch.cat([flat[o : o + n] for *_, o, n in short])).tolist()
                    at = 0
                    for stats, key, scalar, _, size in short:
                        stats[key] = values[at] if scalar else values[at : at + size]
                        at += size
            return records

        return build


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
