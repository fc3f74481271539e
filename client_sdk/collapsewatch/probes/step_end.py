"""A loop whose steps never end: many forward passes in one sampled step and no step end.

Steps end at ``optimizer.step()`` (through the optimizer given to ``watch()``) or at
``monitor.step()``. A loop with neither (manual SGD, or ``watch(model)`` before a framework
builds its optimizer) stays in its first sampled step forever: every forward pass is reduced,
and what a step keeps (the outputs that tell which layer feeds a ReLU, attention samples)
grows without bound. After ``MAX_FORWARDS`` training forward passes of the model in one
sampled step, the monitor is told (``on_stuck``): it drops the step, removes its hooks, and
says once what to add; it samples again once a step ends.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from collapsewatch.probes.base import Hooks, Probe

if TYPE_CHECKING:
    from torch import nn

    from collapsewatch.pipeline.packing import StepPack

#: Training forward passes of the model in one sampled step that mean the step never ends
#: (gradient accumulation over this many micro-batches would be unusual).
MAX_FORWARDS = 256

STUCK_MESSAGE = (
    "collapsewatch: {n} forward passes and no training step ended: pass the optimizer to "
    "watch(model, optimizer=...) or call monitor.step() after each step (or use the Lightning "
    "or Hugging Face callback); collapsewatch skips this step and samples again once a step ends"
)


class StepEndWatch(Probe):
    """Counts the model's training forward passes in a sampled step (see the module
    docstring)."""

    label = "the step counter"

    def __init__(self, model: nn.Module, on_stuck: Callable[[int], None]) -> None:
        super().__init__()
        self._model = weakref.ref(model)
        self._on_stuck = on_stuck
        self.forwards = 0

    def install(self, hooks: Hooks) -> None:
        model = self._model()
        if model is not None:
            # grad_only: an evaluation inside the step is no training forward
            hooks.forward_pre(model, self, self._count, grad_only=True)

    def _count(self, module: Any, args: Any) -> None:
        self.forwards += 1
        if self.forwards == MAX_FORWARDS:
            self._on_stuck(self.forwards)

    def flush(self, pack: StepPack, step: int) -> None:
        self.forwards = 0

    def reset(self) -> None:
        self.forwards = 0
