"""PyTorch Lightning: ``Trainer(callbacks=[CollapsewatchCallback()])`` and nothing else.

The callback watches the ``LightningModule`` with the optimizer the trainer built (the first,
if several), when training starts:

- steps are the trainer's optimizer steps (``global_step``: gradient accumulation included),
  counted by the optimizer's step hook; Lightning's ``optimizer.step(closure)`` is read after
  the closure's forward and backward, so the statistics are of their own step;
- the loss is the one the training step returns (read in ``on_before_backward``, scaled back
  from Lightning's division by ``accumulate_grad_batches``);
- labels, for neural collapse, come from the loss function's integer targets
  (``F.cross_entropy``), else from the batch (``labels=``: a function ``batch -> labels``, by
  default :func:`collapsewatch.integrations.common.default_labels`);
- the run id is kept in the trainer's checkpoints (the callback's ``state_dict``), so
  ``trainer.fit(model, ckpt_path=...)`` resumes into the same run, from the restored
  ``global_step``;
- ``stop_on="critical"`` sets ``trainer.should_stop`` when such an alert fires;
  ``checkpoint_on=...`` saves ``<checkpoint_dir>/collapsewatch-step<N>.ckpt`` first. Across
  several processes both decisions are shared (``reduce_boolean_decision``, one small
  collective per batch, only when ``stop_on`` or ``checkpoint_on`` is set).

Other ``watch()`` options (``classifier``, ``blocks``, ``ranks``, ``mirror``, ``server``, ``token``,
``config``...) pass through ``**options``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import torch

try:  # the unified package first, then the standalone one
    import lightning.pytorch as pl
except ImportError:  # pragma: no cover - depends on what is installed
    import pytorch_lightning as pl  # type: ignore[no-redef]

import collapsewatch
from collapsewatch.alerts_feedback import When
from collapsewatch.integrations.common import AlertActions, RunSettings, default_labels
from collapsewatch.schemas import RunAlert

logger = logging.getLogger("collapsewatch")

#: The callback's key in a Lightning checkpoint's ``callbacks`` section.
STATE_KEY = "CollapsewatchCallback"


class CollapsewatchCallback(pl.Callback):
    """Watches a Lightning run; see the module docstring.

    Args:
        project, run, every: as in :func:`collapsewatch.watch`.
        stop_on: when an alert stops training: ``"critical"`` (or ``"warning"``, ``"info"``:
            that severity and above), a function ``alert -> bool``, or None.
        checkpoint_on: when an alert saves a checkpoint first (same forms).
        checkpoint_dir: where; default ``<trainer.default_root_dir>/collapsewatch``.
        run_id, resume: continue a given run (also found in a checkpoint being resumed).
        labels: ``batch -> integer labels`` (or None) for custom batches.
        on_alert: also called with each new alert, between two steps.
        **options: any other keyword option of :func:`collapsewatch.watch`.
    """

    def __init__(
        self,
        project: str | None = None,
        run: str | None = None,
        every: int | None = None,
        stop_on: When = None,
        checkpoint_on: When = None,
        *,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        run_id: str | None = None,
        resume: bool = False,
        labels: Callable[[Any], Any] | None = None,
        on_alert: Callable[[RunAlert], object] | None = None,
        **options: Any,
    ) -> None:
        super().__init__()
        self.settings = RunSettings(project, run, every, run_id, resume, options)
        self.actions = AlertActions(stop_on, checkpoint_on, on_alert)
        self.checkpoint_dir = checkpoint_dir
        self.labels = labels or default_labels
        self.monitor: collapsewatch.Monitor | None = None
        self._batch: Any = None

    @property
    def state_key(self) -> str:
        return STATE_KEY

    # ------------------------------------------------------------------ the run's life

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.monitor is not None:
            return  # fit() called again on the same trainer: the run goes on
        optimizer = trainer.optimizers[0] if trainer.optimizers else None
        if optimizer is None:
            logger.warning("collapsewatch: the trainer has no optimizer; nothing is watched")
            return
        self.monitor = self.settings.watch(
            pl_module, optimizer, start_step=trainer.global_step, on_alert=self.actions
        )

    @property
    def run_id(self) -> str | None:
        """The run's id: given, found in a checkpoint, or made when training started."""
        return self.settings.run_id

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._finish()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if self.monitor is not None:
            self.monitor.__exit__(type(exception), exception, exception.__traceback__)
            self.monitor = None

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._finish()

    def _finish(self) -> None:
        if self.monitor is not None:
            self.monitor.finish()
            self.monitor = None

    # --------------------------------------------------------------------- each batch

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._batch = batch

    def on_before_backward(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor
    ) -> None:
        monitor = self.monitor
        if monitor is None or not monitor.enabled:
            return
        if pl_module.automatic_optimization and trainer.accumulate_grad_batches > 1:
            loss = loss * trainer.accumulate_grad_batches  # Lightning divided it
        labels = self.labels(self._batch) if monitor.sampled else None
        monitor.step(loss=loss.detach(), labels=labels)

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self._batch = None
        if not self.actions.acting:
            return
        checkpoint = self._decide(trainer, self.actions.checkpoint is not None)
        if checkpoint:
            self.actions.take_checkpoint()
            trainer.save_checkpoint(self._checkpoint_path(trainer))
        if self._decide(trainer, self.actions.stop is not None):
            self.actions.take_stop()
            trainer.should_stop = True

    @staticmethod
    def _decide(trainer: pl.Trainer, local: bool) -> bool:
        """Rank 0 learns the alerts; every process must act alike (a checkpoint is saved by
        all, a stop is taken by all)."""
        if trainer.world_size <= 1:
            return local
        return bool(trainer.strategy.reduce_boolean_decision(local, all=False))

    def _checkpoint_path(self, trainer: pl.Trainer) -> str:
        folder = self.checkpoint_dir or os.path.join(trainer.default_root_dir, "collapsewatch")
        return os.path.join(os.fspath(folder), f"collapsewatch-step{trainer.global_step}.ckpt")

    # -------------------------------------------------------------- resume from checkpoints

    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id} if self.run_id else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("run_id") and self.monitor is None:
            self.settings.run_id, self.settings.resume = str(state_dict["run_id"]), True
