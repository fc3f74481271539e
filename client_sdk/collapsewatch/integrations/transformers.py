"""Hugging Face ``Trainer``: ``Trainer(..., callbacks=[CollapsewatchCallback()])`` and nothing else.

When training begins the callback watches the model with the optimizer the Trainer built
(accelerate's ``AcceleratedOptimizer``: the torch optimizer inside it counts the steps, so
gradient accumulation counts as the Trainer counts):

- the loss is the model's own (``outputs.loss``, computed in its forward), read by a forward
  hook on every training forward;
- labels for neural collapse are the targets the model's loss function passes to
  ``F.cross_entropy`` (shifted, padding skipped), read on sampled steps; the classifier is the
  LM head (``get_output_embeddings()``) for token-level neural collapse, or the layer feeding
  the loss in a classification model;
- the model's own blocks (the classes in ``_no_split_modules``, e.g. ``LlamaDecoderLayer``) get
  token statistics, and attention computed with ``F.scaled_dot_product_attention`` is read
  per layer;
- the run id is written to ``<output_dir>/collapsewatch-run.json``; a Trainer resumed from a
  checkpoint (``trainer.train(resume_from_checkpoint=...)``, ``global_step > 0``) continues
  that run from its restored step;
- ``stop_on="critical"`` sets ``control.should_training_stop``; ``checkpoint_on=...`` sets
  ``control.should_save`` (the Trainer saves a checkpoint at the end of that step). With several
  processes the decision is shared with one small all-reduce per step, only when asked.
"""

from __future__ import annotations

import json
import logging
import os
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

import collapsewatch
from collapsewatch.alerts_feedback import When
from collapsewatch.integrations.common import AlertActions, RunSettings
from collapsewatch.probes.base import StepHook
from collapsewatch.schemas import RunAlert

logger = logging.getLogger("collapsewatch")

#: Where the run id is kept, in the Trainer's output directory.
RUN_FILE = "collapsewatch-run.json"


class CollapsewatchCallback(TrainerCallback):
    """Watches a Hugging Face Trainer run; see the module docstring.

    Args:
        project, run, every: as in :func:`collapsewatch.watch`.
        stop_on, checkpoint_on: when an alert stops training or saves a checkpoint:
            ``"critical"`` (or ``"warning"``, ``"info"``: that severity and above), a function
            ``alert -> bool``, or None.
        run_id, resume: continue a given run (a resumed Trainer finds it on its own).
        on_alert: also called with each new alert, between two steps.
        **options: any other keyword option of :func:`collapsewatch.watch` (``classifier`` and
            ``blocks`` replace what the callback finds).
    """

    def __init__(
        self,
        project: str | None = None,
        run: str | None = None,
        every: int | None = None,
        stop_on: When = None,
        checkpoint_on: When = None,
        *,
        run_id: str | None = None,
        resume: bool = False,
        on_alert: Callable[[RunAlert], object] | None = None,
        **options: Any,
    ) -> None:
        self.settings = RunSettings(project, run, every, run_id, resume, options)
        self.actions = AlertActions(stop_on, checkpoint_on, on_alert)
        self.monitor: collapsewatch.Monitor | None = None
        self._loss_hook: Any = None
        self._model: Callable[[], nn.Module | None] = lambda: None

    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: nn.Module | None = None,
        optimizer: Any = None,
        **kwargs: Any,
    ) -> None:
        if self.monitor is not None or model is None:
            return
        settings = self.settings
        if settings.run_id is None and state.global_step > 0:  # resumed from a checkpoint
            settings.run_id = _stored_run_id(args.output_dir)
            settings.resume = settings.run_id is not None
        self.monitor = settings.watch(
            model,
            optimizer,
            start_step=state.global_step,
            on_alert=self.actions,
            found={"classifier": _lm_head(model), "blocks": _blocks(model)},
        )
        if self.monitor.enabled and self.run_id is not None:
            self._model = weakref.ref(model)
            self._loss_hook = model.register_forward_hook(StepHook(self._read_loss))
            if state.is_world_process_zero:
                _store_run_id(args.output_dir, self.run_id)

    @property
    def run_id(self) -> str | None:
        """The run's id: given, found in the output directory, or made when training began."""
        return self.settings.run_id

    def _read_loss(self, module: nn.Module, args: Any, output: Any) -> None:
        """The model's forward computed its loss (labels were given): record it, for training
        passes only."""
        monitor = self.monitor
        loss = getattr(output, "loss", None)
        if monitor is None or not isinstance(loss, torch.Tensor) or module is not self._model():
            return  # (a shallow copy of the model shares its hooks)
        if module.training and torch.is_grad_enabled():
            monitor.step(loss=loss.detach())

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        if not self.actions.acting:
            return control
        save, stop = _shared(
            args, self.actions.checkpoint is not None, self.actions.stop is not None
        )
        if save:
            self.actions.take_checkpoint()
            control.should_save = True
        if stop:
            self.actions.take_stop()
            control.should_training_stop = True
        return control

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.run_id is not None and state.is_world_process_zero:
            _store_run_id(args.output_dir, self.run_id)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self._loss_hook is not None:
            self._loss_hook.remove()
            self._loss_hook = None
        if self.monitor is not None:
            self.monitor.finish()
            self.monitor = None


def _lm_head(model: nn.Module) -> nn.Module | None:
    """The LM head, when the model has one with a ``[vocab, hidden]`` weight."""
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    weight = getattr(head, "weight", None)
    return head if isinstance(weight, torch.Tensor) and weight.dim() == 2 else None


def _blocks(model: nn.Module) -> list[nn.Module]:
    """The model's own transformer blocks: the classes it declares as never split."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    return [m for m in model.modules() if type(m).__name__ in names]


def _shared(args: TrainingArguments, *flags: bool) -> list[bool]:
    """Rank 0 learns the alerts; every process must stop (or save) alike."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return list(flags)
    device = args.device if dist.get_backend() != "gloo" else torch.device("cpu")
    votes = torch.tensor([float(f) for f in flags], device=device)
    dist.all_reduce(votes, op=dist.ReduceOp.MAX)
    return [bool(v) for v in votes.tolist()]


def _store_run_id(output_dir: str | None, run_id: str) -> None:
    if not output_dir:
        return
    try:
        os.makedirs(output_dir, exist_ok=True)
        (Path(output_dir) / RUN_FILE).write_text(json.dumps({"run_id": run_id}))
    except OSError as exc:
        logger.warning("collapsewatch: could not keep the run id in %s: %r", output_dir, exc)


def _stored_run_id(output_dir: str | None) -> str | None:
    try:
        data = json.loads((Path(output_dir or ".") / RUN_FILE).read_text())
    except (OSError, ValueError):
        return None
    run_id = data.get("run_id") if isinstance(data, dict) else None
    return str(run_id) if run_id else None
