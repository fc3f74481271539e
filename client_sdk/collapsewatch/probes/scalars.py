"""``monitor.log_scalar(name, value)``: one number per call, probe kind ``scalar``.

Values wait in the probe, numbers on the host and tensors on their device, and are filed with
the next sampled step's records (each at the step it was logged at): a tracker's hundred
scalars a step cost one pack per sampled step, not a hundred sends, and a tensor is never
synchronised to read it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from collapsewatch.probes.base import MAX_NAME, Probe
from collapsewatch.schemas import ProbeInfo, ProbeKind

if TYPE_CHECKING:
    import torch

    from collapsewatch.pipeline.packing import StepPack

#: Values waiting for a sampled step; past this many they are filed at once.
MAX_PENDING_SCALARS = 1024


class ScalarProbe(Probe):
    """The scalars logged since the last flush, for every name."""

    label = "log_scalar"
    stop_on_error = False

    def __init__(self) -> None:
        super().__init__()
        self._numbers: list[tuple[str, int, float]] = []
        self._tensors: list[tuple[str, int, torch.Tensor]] = []

    def add(self, name: str, step: int, value: torch.Tensor | float) -> None:
        """Keep one value: a number, or a tensor (its mean when it has several elements)."""
        if not 0 < len(name) <= MAX_NAME:
            raise ValueError(f"scalar name must have 1 to {MAX_NAME} characters")
        if isinstance(value, int | float):
            self._numbers.append((name, step, float(value)))
            return
        tensor = value.detach().float()
        tensor = (tensor.mean() if tensor.numel() != 1 else tensor).reshape(())
        self._tensors.append((name, step, tensor))

    @property
    def pending(self) -> int:
        return len(self._numbers) + len(self._tensors)

    @staticmethod
    def info(name: str, order: int) -> ProbeInfo:
        return ProbeInfo(name=name, kind=ProbeKind.scalar, order=order)

    def flush(self, pack: StepPack, step: int) -> None:
        numbers, self._numbers = self._numbers, []
        tensors, self._tensors = self._tensors, []
        for name, logged_at, number in numbers:
            pack.record(name, ProbeKind.scalar.value, logged_at)["value"] = number
        for name, logged_at, tensor in tensors:
            stats: dict[str, Any] = pack.record(name, ProbeKind.scalar.value, logged_at)
            pack.put(stats, "value", tensor)
