"""The training loss: every step's value, kept on its device, reduced on sampled steps.

The loss is the one statistic read on every step (its mean between two sampled steps is what a
loss curve shows), so the criterion's hook is attached for the monitor's whole life.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from collapsewatch.probes.base import GuardedHook, Hooks, Probe
from collapsewatch.schemas import ProbeInfo, ProbeKind

if TYPE_CHECKING:
    import torch

    from collapsewatch.pipeline.packing import StepPack

#: The probe every loss is recorded under.
LOSS_PROBE = "loss"

SHARED_CRITERION = (
    "collapsewatch: this %s is already the criterion of another watched run; this run does not "
    "hook it (each would count the other's losses): give each model its own loss module, or "
    "pass monitor.step(loss=...)"
)

logger = logging.getLogger("collapsewatch")


class LossAccumulator:
    """The loss between sampled steps, kept on device: reduced to mean, max and count there.

    Each step only appends the detached loss (about 0.5 us, against 4 us for updating running
    sum and max tensors); the sampled step reduces them with one ``stack``. Numbers passed by
    the user stay on the host and join as kernel arguments, so nothing is copied either way.
    """

    __slots__ = ("_count", "_max", "_numbers", "_sum", "_tensors")

    #: Past this many pending losses (a loop that never steps), fold them into sum and max.
    FOLD = 4096

    def __init__(self) -> None:
        self._tensors: list[torch.Tensor] = []
        self._numbers: list[float] = []
        self._sum: torch.Tensor | None = None
        self._max: torch.Tensor | None = None
        self._count = 0

    def add(self, value: torch.Tensor | float) -> None:
        """Add one loss value: a tensor (its mean if not a scalar) or a Python number."""
        import torch

        if not isinstance(value, torch.Tensor):
            self._numbers.append(float(value))
            return
        v = value.detach()
        if v.dim() != 0:
            v = v.float().mean()
        self._tensors.append(v)
        if len(self._tensors) >= self.FOLD:
            self._fold()

    def _fold(self) -> None:
        import torch

        device = self._tensors[0].device
        stacked = torch.stack([t.to(device, non_blocking=True) for t in self._tensors]).float()
        total, peak = stacked.sum(), stacked.max()
        if self._sum is not None and self._max is not None:
            total, peak = total + self._sum.to(device), torch.maximum(peak, self._max.to(device))
        self._sum, self._max = total, peak
        self._count += len(self._tensors)
        self._tensors = []

    def take(self) -> tuple[torch.Tensor, torch.Tensor, int] | None:
        """``(mean, max, count)`` since the last take, or None if nothing was added; resets."""
        import torch

        if self._tensors:
            self._fold()
        numbers, count = self._numbers, self._count + len(self._numbers)
        total, peak = self._sum, self._max
        self._numbers, self._sum, self._max, self._count = [], None, None, 0
        if count == 0:
            return None
        if total is None or peak is None:
            total, peak = torch.tensor(0.0), torch.tensor(-math.inf)
        if numbers:
            # Python scalars go into the kernels as arguments: no host-to-device copy
            total = total + math.fsum(numbers)
            peak = peak + math.nan if any(map(math.isnan, numbers)) else peak.clamp(max(numbers))
        return total / count, peak, count


class LossProbe(Probe):
    """Loss values from the criterion's forward hook or ``monitor.step(loss=...)``, probe
    ``loss``; on each sampled step one record of their mean, max and count since the last.

    ``on_criterion(args)`` hears the criterion's inputs on sampled steps (the classifier probe
    reads its labels there).
    """

    label = "the loss"
    stop_on_error = False  # one odd value (a tuple from a custom loss) must not stop the curve

    def __init__(self, criterion: Any, on_criterion: Callable[[Any], None] | None) -> None:
        super().__init__()
        self.criterion = criterion if hasattr(criterion, "register_forward_hook") else None
        self.on_criterion = on_criterion
        self.sampled = False  # set by the monitor: the criterion's inputs matter on sampled steps
        self.announced = criterion is not None
        self.manual = False  # losses come from monitor.step(loss=...)
        self.acc = LossAccumulator()
        self._last_step = -1  # the final record must not repeat a sampled step's

    def infos(self, order: int) -> list[ProbeInfo]:
        if not self.announced:
            return []
        module = type(self.criterion).__name__ if self.criterion is not None else ""
        return [ProbeInfo(name=LOSS_PROBE, kind=ProbeKind.loss, module=module[:128], order=order)]

    def attach(self, hooks: Hooks) -> None:
        if self.criterion is None:
            return
        if any(
            isinstance(hook, GuardedHook) and isinstance(hook.probe, LossProbe)
            for hook in self.criterion._forward_hooks.values()
        ):
            # Another monitor's loss (a GAN's generator and discriminator sharing one
            # criterion): its values would be counted by both runs, so this one stays off it.
            logger.warning(SHARED_CRITERION, type(self.criterion).__name__)
            self.criterion = None
            return
        hooks.forward(self.criterion, self, self._on_loss, training_only=False, grad_only=True)

    def _on_loss(self, module: Any, args: Any, output: Any) -> None:
        self.acc.add(output)
        if self.sampled and self.on_criterion is not None:
            self.on_criterion(args)

    def add(self, value: torch.Tensor | float, manual: bool = True) -> bool:
        """A loss passed by hand (``manual``) or seen being backpropagated (only while none is
        passed by hand); True when the probe was announced just now."""
        if manual and not self.manual:
            self.manual = True
            self.acc = LossAccumulator()  # the user's losses replace those seen in backward
        elif not manual and (self.manual or self.criterion is not None):
            return False
        self.acc.add(value)
        fresh, self.announced = not self.announced, True
        return fresh

    def flush(self, pack: StepPack, step: int) -> None:
        taken = self.acc.take()
        if taken is None:
            return
        step = max(step, self._last_step + 1)
        self._last_step = step
        stats = pack.record(LOSS_PROBE, ProbeKind.loss.value, step)
        mean, peak, stats["count"] = taken
        pack.put(stats, "mean", mean)
        pack.put(stats, "max", peak)
