"""What both framework callbacks share: acting on alerts, labels in batches, and starting the
run from what they were given."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import collapsewatch
from collapsewatch.alerts_feedback import When, matcher
from collapsewatch.schemas import RunAlert

if TYPE_CHECKING:
    from torch import nn

logger = logging.getLogger("collapsewatch")

#: Keys of a batch (a dict) that hold the class labels, looked at in this order.
LABEL_KEYS = ("labels", "label", "targets", "target", "y")


class AlertActions:
    """The ``on_alert`` of a callback's monitor: records which new alerts ask the framework to
    stop or to save a checkpoint; the callback acts at its next hook, between two steps."""

    def __init__(
        self,
        stop_on: When,
        checkpoint_on: When,
        on_alert: Callable[[RunAlert], object] | None = None,
    ) -> None:
        self._stop, self._checkpoint = matcher(stop_on), matcher(checkpoint_on)
        self._user = on_alert
        #: Whether any alert can ask for an action: only then does a callback look (and, across
        #: processes, share the decision with a collective) at each step.
        self.acting = stop_on is not None or checkpoint_on is not None
        self.stop: RunAlert | None = None  # the alert that asks to stop, until acted upon
        self.checkpoint: RunAlert | None = None

    def __call__(self, alert: RunAlert) -> None:
        if self._user is not None:
            self._user(alert)
        if self.stop is None and self._stop(alert):
            self.stop = alert
        if self.checkpoint is None and self._checkpoint(alert):
            self.checkpoint = alert

    def take_stop(self) -> RunAlert | None:
        alert, self.stop = self.stop, None
        if alert is not None:
            logger.warning("collapsewatch: stopping training: %s", describe(alert))
        return alert

    def take_checkpoint(self) -> RunAlert | None:
        alert, self.checkpoint = self.checkpoint, None
        if alert is not None:
            logger.warning("collapsewatch: saving a checkpoint: %s", describe(alert))
        return alert


def describe(alert: RunAlert) -> str:
    value = "" if alert.value is None else f" = {alert.value:.4g}"
    at = "" if alert.step is None else f" at step {alert.step}"
    return f"{alert.severity} alert {alert.rule!r}: {alert.indicator} of {alert.probe}{value}{at}"


def default_labels(batch: Any) -> Any:
    """Integer class labels in a batch, if it holds some where batches usually do: a dict's
    ``labels`` (``label``, ``targets``, ``target``, ``y``), or the second item of an
    ``(inputs, labels, ...)`` tuple or list. None otherwise."""
    import torch

    candidate = None
    if isinstance(batch, dict):
        candidate = next((batch[k] for k in LABEL_KEYS if k in batch), None)
    elif isinstance(batch, tuple | list) and len(batch) >= 2:
        candidate = batch[1]
    if isinstance(candidate, torch.Tensor) and not (
        candidate.is_floating_point() or candidate.is_complex() or candidate.dtype == torch.bool
    ):
        return candidate
    return None


@dataclass
class RunSettings:
    """What a callback was given for its run; :meth:`watch` starts the monitor."""

    project: str | None
    run: str | None
    every: int | None
    run_id: str | None
    resume: bool
    options: dict[str, Any]

    def watch(
        self,
        model: nn.Module,
        optimizer: Any,
        *,
        start_step: int,
        on_alert: Callable[[RunAlert], object],
        found: dict[str, Any] | None = None,
    ) -> collapsewatch.Monitor:
        """Watch ``model``; ``found``: options the callback found in the model (the user's
        ``**options`` win). Remembers the run id, for checkpoints."""
        monitor = collapsewatch.watch(
            model,
            optimizer,
            **{
                **(found or {}),
                **self.options,
                "project": self.project,
                "run": self.run,
                "every": self.every,
                "run_id": self.run_id,
                "resume": self.resume,
                "start_step": start_step,
                "on_alert": on_alert,
            },
        )
        self.run_id = str(monitor.run_id)
        return monitor
