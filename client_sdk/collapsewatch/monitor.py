"""The monitor: hooks on a model and optimizer that turn sampled steps into stat records.

Hot-path rule: on an unsampled step every hook reads one bool and returns. On a sampled step
statistics stay on the device until the step ends, then one host copy per device moves them
and the records go to the background sender. Nothing raises into the training loop.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx

from collapsewatch import config as cfg
from collapsewatch import registry, runinfo
from collapsewatch.classifier import ClassWatcher
from collapsewatch.logger_methods import LoggerMethods
from collapsewatch.loggers import Loggers
from collapsewatch.observers import Observers
from collapsewatch.packing import StepPack
from collapsewatch.pipeline.sender import COUNTERS, Records, Sender
from collapsewatch.pipeline.spool import Spool
from collapsewatch.probes import (
    RAW_SPECTRUM_EVERY,
    ActivationAccumulator,
    LossAccumulator,
    ParameterNorms,
    as_rows,
    input_dim,
    spectra,
)
from collapsewatch.sampling import Sampler
from collapsewatch.schemas import ProbeInfo, ProbeKind

if TYPE_CHECKING:
    from collections.abc import Iterable
    from types import TracebackType

    import torch
    from torch import nn

logger = logging.getLogger("collapsewatch")

#: Tensor scalars wait for the next sampled step's host copy; past this many, copy them now.
MAX_PENDING_SCALARS = 1024


class _Layer:
    __slots__ = ("acc", "disabled", "in_dim", "name", "spatial_dims")

    def __init__(self, name: str, spatial_dims: int, in_dim: int | None = None) -> None:
        self.name = name
        self.spatial_dims = spatial_dims
        self.in_dim = in_dim  # bounds the rank of the output (ActivationStat.in_dim)
        self.acc = ActivationAccumulator()
        self.disabled = False


class Monitor(LoggerMethods):
    """Watches one training run; made by :func:`collapsewatch.watch`, which documents arguments.

    Besides the hooks, explicit loggers record what hooks cannot see: ``log_attention``,
    ``log_codes``, ``log_posterior``, ``log_routing`` in the training loop, ``log_tokens``,
    ``log_eval``, ``log_samples``, ``log_state`` in evaluations (:mod:`collapsewatch.loggers`),
    and ``log_scalar`` for anything else.

    A disabled monitor (``enabled=False``, ``COLLAPSEWATCH_DISABLED=1``, or a data-parallel
    rank other than 0) installs nothing and all its methods do nothing, so training code
    needs no ``if rank == 0``. Also a context manager: leaving the block finishes the run,
    as ``crashed`` if an exception is propagating.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        criterion: Any = None,
        *,
        project: str | None = None,
        run: str | None = None,
        server: str | None = None,
        token: str | None = None,
        every: int | None = None,
        config: dict[str, Any] | None = None,
        http_client: httpx.Client | None = None,
        spool_dir: str | os.PathLike[str] | None = None,
        enabled: bool = True,
        classifier: nn.Module | None = None,
        blocks: Iterable[nn.Module] | None = None,
    ) -> None:
        self._active = enabled and not cfg.disabled_by_env() and not cfg.is_nonzero_rank()
        self._run_id = uuid.uuid4()
        self._step = 0
        self._sampled_steps = 0
        self._records = 0
        self._handles: list[Any] = []
        self._finished = not self._active
        self._broken = False  # set by an SDK error: stop observing, send nothing more
        self._classes: ClassWatcher | None = None
        if not self._active:
            self._project = project or cfg.DEFAULT_PROJECT
            self._run_name = run or ""
            self._sampler = Sampler(every)
            self._transport: Sender | None = None
            return
        settings = cfg.resolve(
            project=project, run=run, server=server, token=token, spool_dir=spool_dir
        )
        self._project, self._run_name = settings.project, settings.run_name
        self._sampler = Sampler(every)
        self._optimizer = optimizer
        self._sampling = True  # step 0 is sampled
        self._overhead = 0.0  # SDK seconds inside hooks on the current sampled step
        self._encode_mark = 0.0
        self._last_step_end: float | None = None
        self._loss = LossAccumulator()
        self._grad_enabled = sys.modules["torch"].is_grad_enabled  # torch is in: we got a model
        self._loss_step = -1  # step of the last loss record: the final one must not repeat it
        self._pending_scalars: list[tuple[str, int, torch.Tensor]] = []
        self._pack: StepPack | None = None
        self._logged: set[str] = set()

        layers, params, self._probes = runinfo.discover(model)
        self._params = ParameterNorms(params, model)
        self._probes += self._params.sparsity.probes(len(self._probes))
        self._layers = [_Layer(x.name, x.spatial_dims, input_dim(x.module)) for x in layers]
        self._observers = Observers(
            model, blocks, sampling=lambda: self._sampling, log_once=self._log_once
        )  # Tanh/Sigmoid saturation and transformer blocks' tokens
        self._probes += self._observers.infos(len(self._probes))
        self._probe_names = {p.name for p in self._probes}
        self._loggers = Loggers(
            sampling=lambda: self._sampling,
            step=lambda: self._step,
            add_probe=self._add_logger_probe,
            log_once=self._log_once,
        )
        self._config = runinfo.run_config(config, optimizer, criterion, every)
        self._started_at = datetime.now(UTC)
        if criterion is not None:
            self._add_probe("loss", ProbeKind.loss, type(criterion).__name__)
        self._refresh_run()
        self._transport = Sender(
            server=settings.server,
            token=settings.token,
            spool=Spool(settings.spool_root / str(self._run_id)),
            run=lambda: self._run_doc,
            client=http_client,
        )

        for layer, found in zip(self._layers, layers, strict=True):
            self._handles.append(found.module.register_forward_hook(self._forward_hook(layer)))
        self._handles += self._observers.install()
        if criterion is not None and hasattr(criterion, "register_forward_hook"):
            self._handles.append(criterion.register_forward_hook(self._on_loss))
        if optimizer is not None:
            self._handles.append(optimizer.register_step_pre_hook(self._on_pre_step))
            self._handles.append(optimizer.register_step_post_hook(self._on_post_step))
        if classifier is not None or criterion is not None:
            self._classes = ClassWatcher(
                model,
                classifier,
                sampling=lambda: self._sampling,
                step=lambda: self._step,
                on_probe=self._add_class_probe,
                log_once=self._log_once,
            )
        registry.add(self)

    # ------------------------------------------------------------------------ public API

    @property
    def run_id(self) -> uuid.UUID:
        """The run's id, made on the client so offline runs can be uploaded later."""
        return self._run_id

    @property
    def run_name(self) -> str:
        return self._run_name

    @property
    def project(self) -> str:
        return self._project

    @property
    def enabled(self) -> bool:
        """False for a null monitor, or once the monitor has finished or been removed."""
        return self._active

    @property
    def stats(self) -> dict[str, int]:
        """Counters: current step and interval, sampled steps, records made, and where they
        are (``stored`` + ``spooled`` + ``rejected`` + ``dropped`` + ``pending`` = ``records``;
        nothing is pending after :meth:`finish`), then batches sent and spooled, and failed
        requests."""
        t = self._transport
        return {
            "step": self._step,
            "every": self._sampler.every,
            "sampled_steps": self._sampled_steps,
            "records": self._records,
            **(t.counters() if t else dict.fromkeys(COUNTERS, 0)),
        }

    def step(self, loss: torch.Tensor | float | None = None, labels: Any = None) -> None:
        """End a training step, for loops without an optimizer given to ``watch()``.

        ``loss`` (a tensor, kept on its device, or a number) joins the loss statistics.
        Do not pass ``loss`` when ``watch()`` got a criterion module: its hook records it.
        ``labels`` (integer class labels, one per row of the classifier's input) pair with the
        features the classifier saw on this step, for the neural-collapse statistics; with an
        optimizer, pass them before ``optimizer.step()``. With an optimizer, steps are counted
        by its step hook and this only records ``loss`` and ``labels``.
        """
        if not self._active:
            return
        try:
            if loss is not None:
                self._add_loss(loss)
            if labels is not None and self._classes is not None:
                self._classes.on_labels(labels)
            if self._optimizer is None:
                if self._sampling:
                    self._pack = self._params.before_step(self._step, keep_weights=False)
                self._end_step()
        except Exception as exc:
            self._fail("step", exc)

    def log_scalar(self, name: str, value: torch.Tensor | float) -> None:
        """Record one number at the current step (probe ``name``, kind ``scalar``).

        A tensor stays on its device until the next sampled step's host copy: no sync.
        """
        if not self._active:
            return
        try:
            if name not in self._probe_names:
                if not 0 < len(name) <= runinfo.MAX_NAME:
                    raise ValueError(f"scalar name must have 1 to {runinfo.MAX_NAME} characters")
                self._add_probe(name, ProbeKind.scalar, "")
                self._refresh_run()
            if isinstance(value, int | float):
                record = {
                    "probe": name,
                    "kind": "scalar",
                    "step": self._step,
                    "stats": {"value": float(value)},
                }
                self._submit([record])
                return
            tensor = value.detach().float()
            tensor = (tensor.mean() if tensor.numel() != 1 else tensor).reshape(())
            self._pending_scalars.append((name, self._step, tensor))
            if len(self._pending_scalars) >= MAX_PENDING_SCALARS:
                pack = StepPack()
                self._pack_scalars(pack)
                self._submit_pack(pack)
        except Exception as exc:
            self._fail("log_scalar", exc, disable=False)

    def finish(self, timeout: float = 10.0) -> None:
        """Send what is left and mark the run finished; what cannot be sent in ``timeout``
        seconds is spooled to disk. Removes the hooks. Safe to call more than once."""
        self._finish("finished", timeout)

    def remove(self) -> None:
        """Remove every hook; the run stays open until :meth:`finish` (or process exit)."""
        self._active = False
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if self._classes is not None:
            self._classes.remove()

    def __enter__(self) -> Monitor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._finish("crashed" if exc_type is not None else "finished", 10.0)

    def __repr__(self) -> str:
        state = "enabled" if self._active else "disabled"
        return f"<Monitor {self._project}/{self._run_name} {self._run_id} {state}>"

    # --------------------------------------------------------------------------- hooks

    def _forward_hook(self, layer: _Layer) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if not self._sampling or layer.disabled or not module.training:
                return
            t0 = time.perf_counter()
            try:
                import torch

                if not isinstance(output, torch.Tensor):
                    raise TypeError(f"output is a {type(output).__name__}, not a tensor")
                with torch.no_grad():
                    layer.acc.add(as_rows(output, layer.spatial_dims))
            except Exception as exc:
                layer.disabled = True
                layer.acc = ActivationAccumulator()
                self._log_once(
                    f"layer:{layer.name}",
                    "collapsewatch: stopped observing layer "
                    f"{layer.name!r} after an error: {exc!r}",
                    exc,
                )
            self._overhead += time.perf_counter() - t0

        return hook

    def _on_loss(self, module: Any, args: Any, output: Any) -> None:
        # Training losses are computed with grad enabled; validation usually is not, and its
        # loss must not be mixed into the training loss.
        if not self._active or not self._grad_enabled():
            return
        try:
            self._loss.add(output)
        except Exception as exc:
            self._fail("loss", exc, disable=False)
        if self._classes is not None:
            self._classes.on_criterion(args)  # never raises

    def _on_pre_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if not (self._active and self._sampling):
            return
        t0 = time.perf_counter()
        try:
            self._pack = self._params.before_step(self._step, keep_weights=True)
        except Exception as exc:
            self._fail("optimizer pre-step", exc)
        self._overhead += time.perf_counter() - t0

    def _on_post_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if not self._active:
            return
        try:
            self._end_step()
        except Exception as exc:
            self._fail("optimizer step", exc)

    # ------------------------------------------------------------------------- internals

    def _add_probe(self, name: str, kind: ProbeKind, module: str) -> None:
        self._probes.append(
            ProbeInfo(name=name, kind=kind, module=module[:128], order=len(self._probes))
        )
        self._probe_names.add(name)

    def _add_logger_probe(self, name: str, kind: ProbeKind) -> None:
        if name in self._probe_names:
            # the server keeps one probe per name: the logger's records would land under it
            raise ValueError(f"{name!r} is the name of a watched layer or probe; log under another")
        self._add_probe(name, kind, "")
        self._refresh_run()

    def _add_class_probe(self, name: str, module: nn.Module) -> None:
        self._probes.append(runinfo.class_probe(name, module, order=len(self._probes)))
        self._refresh_run()

    def _refresh_run(self) -> None:
        # a new dict, never mutated: the sender thread may be serialising the previous one
        self._run_doc = runinfo.build(
            run_id=self._run_id,
            project=self._project,
            name=self._run_name,
            config=self._config,
            started_at=self._started_at,
            probes=self._probes,
        )

    def _add_loss(self, loss: torch.Tensor | float) -> None:
        if "loss" not in self._probe_names:
            self._add_probe("loss", ProbeKind.loss, "")
            self._refresh_run()
        self._loss.add(loss)

    def _end_step(self) -> None:
        now = time.perf_counter()
        wall = 0.0 if self._last_step_end is None else now - self._last_step_end
        sampled = self._sampling
        if sampled:
            self._flush_step()
            encoded = self._transport.encode_seconds if self._transport else 0.0
            overhead = self._overhead + time.perf_counter() - now + encoded - self._encode_mark
            self._encode_mark, self._overhead = encoded, 0.0
            self._sampled_steps += 1
        else:
            overhead = 0.0
            if self._loggers.pending:
                self._flush_evaluations()  # an evaluation at this step: send it now
        if self._last_step_end is not None:
            self._sampler.observe(sampled, wall, overhead)
        self._step += 1
        self._sampling = self._active and self._sampler.sampled(self._step)
        self._last_step_end = time.perf_counter()

    def _flush_step(self, loss_step: int | None = None) -> None:
        """Finalise the sampled step's statistics, copy them to the host once, and send them."""
        import torch

        step = self._step
        pack, self._pack = self._pack or StepPack(), None
        with torch.no_grad():
            self._params.after_step(pack)
            layers = [layer for layer in self._layers if not layer.acc.empty]
            raw = self._sampled_steps % RAW_SPECTRUM_EVERY == 0
            eigs = spectra([layer.acc for layer in layers], raw)
            for layer, eig in zip(layers, eigs, strict=True):
                acc, layer.acc = layer.acc, ActivationAccumulator()
                acc.pack(pack.record(layer.name, "activation", step), pack, eig, layer.in_dim)
            self._overhead += self._observers.flush(pack, step)
            self._overhead += self._loggers.flush(pack)
            loss = self._loss.take()
            if loss is not None:
                loss_step = step if loss_step is None else max(loss_step, self._loss_step + 1)
                self._loss_step = loss_step
                stats = pack.record("loss", "loss", loss_step)
                mean, peak, stats["count"] = loss
                pack.put(stats, "mean", mean)
                pack.put(stats, "max", peak)
            self._pack_scalars(pack)
            if self._classes is not None:
                self._classes.flush(pack)
                self._overhead += self._classes.overhead  # reduced in the criterion hook
                self._classes.overhead = 0.0
        self._submit_pack(pack)

    def _pack_scalars(self, pack: StepPack) -> None:
        for name, step, tensor in self._pending_scalars:
            pack.put(pack.record(name, "scalar", step), "value", tensor)
        self._pending_scalars = []

    def _submit_pack(self, pack: StepPack) -> None:
        # the host copy happens here; the sender thread turns it into records
        count = len(pack)  # before copy(), which hands the records over
        self._submit(pack.copy(), count)

    def _submit(self, records: Records, count: int | None = None) -> None:
        count = len(records) if isinstance(records, list) else (count or 0)
        if count and self._transport is not None:
            self._records += count
            self._transport.submit(records, count)

    def _finish(self, status: str, timeout: float) -> None:
        if self._finished:
            return
        self._finished = True
        self.remove()
        registry.discard(self)
        if self._transport is None:
            return
        if not self._broken:
            try:
                # the loss since the last sampled step, at the last completed step; a sampled
                # step cut short has partial statistics, which are dropped
                self._pack = None
                self._params.reset()
                for layer in self._layers:
                    layer.acc = ActivationAccumulator()
                self._observers.reset()
                self._loggers.reset()
                if self._classes is not None:
                    self._classes.reset()
                self._flush_step(loss_step=max(self._step - 1, 0))
            except Exception as exc:
                self._fail("finish", exc)
        self._transport.close(status, timeout)

    def _fail(self, where: str, exc: BaseException, disable: bool = True) -> None:
        """Log an SDK error once; after an error in step logic, stop observing altogether."""
        if disable:
            self._active = self._sampling = False
            self._broken = True
        suffix = "; collapsewatch stopped observing this run" if disable else ""
        self._log_once(where, f"collapsewatch: error in {where}: {exc!r}{suffix}", exc)

    def _log_once(self, key: str, message: str, exc: BaseException) -> None:
        if key not in self._logged:
            self._logged.add(key)
            logger.warning(message, exc_info=exc)
