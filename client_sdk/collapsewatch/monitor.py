"""The monitor: the coordinator of one run's probes, and the SDK's public API.

The monitor builds the probes (:mod:`collapsewatch.probes`; their lifecycle:
:mod:`collapsewatch.probes.base`), the run document (:mod:`collapsewatch.run_document`) and the
step cycle that samples, flushes and sends (:mod:`collapsewatch.step_cycle`); it takes the
explicit loggers' calls and ends the run. Nothing raises into the training loop.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from collapsewatch import config as cfg
from collapsewatch import open_runs, runinfo
from collapsewatch.alerts_feedback import AlertFeedback
from collapsewatch.compiled import EagerWhileSampled
from collapsewatch.distributed import (
    SHARDED_NOTE,
    LockstepSampler,
    RankMerge,
    check_ranks,
    sharded,
)
from collapsewatch.logger_names import LoggerNames
from collapsewatch.mirror import make_mirror
from collapsewatch.optimizers import step_optimizer
from collapsewatch.pipeline.sampling import Sampler
from collapsewatch.pipeline.sender import COUNTERS, Sender
from collapsewatch.pipeline.spool import Spool
from collapsewatch.probes.activations import LayerOutputs
from collapsewatch.probes.attention import AttentionProbe
from collapsewatch.probes.base import MAX_NAME, Guard, Hooks, Probe, StepHook
from collapsewatch.probes.classifier import ClassProbe
from collapsewatch.probes.discovery import find_probes, trainable_parameters
from collapsewatch.probes.explicit import MakeAccumulator, fresh
from collapsewatch.probes.functions import FunctionProbe
from collapsewatch.probes.inputs import DataRank, InputProbe
from collapsewatch.probes.loss import LossProbe
from collapsewatch.probes.parameters import ParameterProbe
from collapsewatch.probes.scalars import MAX_PENDING_SCALARS, ScalarProbe
from collapsewatch.probes.step_end import StepEndWatch
from collapsewatch.resume import RESUMED_KEY, parse_run_id, resume
from collapsewatch.run_document import RunDocument
from collapsewatch.schemas import ProbeKind, RunAlert
from collapsewatch.step_cycle import StepCycle

if TYPE_CHECKING:
    import torch
    from torch import nn
    from typing_extensions import Unpack

logger = logging.getLogger("collapsewatch")
_K = ProbeKind


class Monitor(AbstractContextManager["Monitor"]):
    """Watches one training run; made by :func:`collapsewatch.watch`, which documents the
    options.

    Besides the hooks, explicit loggers record what hooks cannot see: ``log_attention``,
    ``log_codes``, ``log_posterior``, ``log_routing`` in the training loop (reduced on sampled
    steps only: see :attr:`sampled`), ``log_tokens``, ``log_eval``, ``log_samples``,
    ``log_state`` in evaluations (every call), and ``log_scalar`` for anything else.

    A disabled monitor (``enabled=False``, ``COLLAPSEWATCH_DISABLED=1``, or a data-parallel
    rank other than 0 unless ``ranks="merge"``) installs nothing and all its methods do
    nothing, so training code needs no ``if rank == 0``. Also a context manager: leaving the
    block finishes the run, as ``crashed`` if an exception is propagating.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        criterion: Any = None,
        **options: Unpack[cfg.WatchOptions],
    ) -> None:
        every = options.get("every")
        enabled = options.get("enabled", True)
        merge = check_ranks(options.get("ranks") or "zero") == "merge"
        nonzero = cfg.is_nonzero_rank()
        self._active = enabled and not cfg.disabled_by_env() and (merge or not nonzero)
        run_id = parse_run_id(options.get("run_id"))
        if options.get("resume") and run_id is None:
            raise ValueError("collapsewatch: resume=True needs the run_id of the run to resume")
        self._run_id = run_id or uuid.uuid4()
        self._steps: StepCycle | None = None  # made below for an active monitor
        self._finished = not self._active
        self._broken = False  # set by an SDK error: stop observing, send nothing more
        lockstep = LockstepSampler(every) if merge else None  # every rank samples alike
        self._sampler = lockstep or Sampler(every)
        self._merge = RankMerge(lockstep, self._log_once) if lockstep else None
        self._eager = EagerWhileSampled()  # sampled steps of a compiled model run eagerly
        self._alerts = AlertFeedback(options.get("on_alert"))
        self._transport: Sender | None = None
        self._logged: set[str] = set()
        self._project = options.get("project") or cfg.DEFAULT_PROJECT
        self._run_name = options.get("run") or ""
        if not self._active:
            return
        settings = cfg.resolve(
            project=options.get("project"),
            run=options.get("run"),
            server=options.get("server"),
            token=options.get("token"),
            spool_dir=options.get("spool_dir"),
        )
        self._project, self._run_name = settings.project, settings.run_name
        self._optimizer = optimizer = step_optimizer(optimizer)  # a wrapper's inner one, or refused
        self._mirror = make_mirror(options.get("mirror"))
        self._guard = Guard(self._log_once)
        self._step_hooks = Hooks(self._guard)  # removed when a sampled step ends
        self._life_hooks = Hooks(self._guard)  # removed when the monitor stops

        # ------------------------------------------------------------------- the probes
        outputs, data = LayerOutputs(), DataRank()
        # the input first: its rank is measured before the layers' records read it
        self._probes: list[Probe] = [InputProbe(model, data)]
        self._probes += find_probes(model, options.get("blocks") or (), outputs, data)
        params, modules = trainable_parameters(model)
        self._params = ParameterProbe(
            params, model, optimizer, modules, step=lambda: self._cycle.step
        )
        self._classes = ClassProbe(model, options.get("classifier"), step=lambda: self._cycle.step)
        self._loss = LossProbe(criterion, self._on_criterion)
        functional = self._loss.criterion is None  # the loss, if any, is a function call
        self._functions = FunctionProbe(
            model,
            {id(m): path[-MAX_NAME:] for path, m in model.named_modules()},
            outputs,
            optimizer=optimizer,
            skip={id(p.module) for p in self._probes if isinstance(p, AttentionProbe)},
            criterion=self._on_criterion if functional else None,
            loss=self._on_backward if functional else None,
        )
        self._scalars = ScalarProbe()
        self._probes += [self._params, self._loss, self._classes, self._functions, self._scalars]
        self._probes.append(StepEndWatch(model, lambda forwards: self._cycle.on_stuck(forwards)))
        if sharded(params):
            self._log_once("sharded", SHARDED_NOTE)

        config = runinfo.run_config(options.get("config"), optimizer, criterion, every)
        step, skip_until = 0, -1
        if options.get("resume") and not nonzero:
            where = resume(
                self._run_id, settings, options.get("http_client"), options.get("start_step")
            )
            step, skip_until = where.first_step, where.stored_until
            config[RESUMED_KEY] = where.resumed_at
        elif options.get("start_step") is not None:
            step = max(0, int(options.get("start_step") or 0))
        self._document = RunDocument(
            run_id=self._run_id,
            project=self._project,
            name=self._run_name,
            config=config,
            started_at=datetime.now(UTC),
            probes=self._probes,
            sampler=self._sampler,
            tags=cfg.check_tags(options.get("tags")),  # refused in watch(), not at the server
        )
        self._classes.on_found = self._functions.on_found = self._document.announce
        self._loggers = LoggerNames(self._probes, self._document, self._guard, self._log_once)
        if not nonzero:  # with ranks="merge", rank 0 sends the merged records
            document = self._document
            self._transport = Sender(
                server=settings.server,
                token=settings.token,
                spool=Spool(settings.spool_root / str(self._run_id)),
                run=lambda: document.current,
                client=options.get("http_client"),
                on_firing=self._alerts.update,
            )
        self._steps = StepCycle(
            probes=self._probes,
            guard=self._guard,
            step_hooks=self._step_hooks,
            sampler=self._sampler,
            merge=self._merge,
            eager=self._eager,
            functions=self._functions,
            loss=self._loss,
            loggers=self._loggers,
            document=self._document,
            alerts=self._alerts,
            transport=self._transport,
            mirror=self._mirror,
            fail=self._fail,
            log_once=self._log_once,
            step=step,
            skip_until=skip_until,
        )
        for probe in self._probes:
            probe.attach(self._life_hooks)
        if optimizer is not None:
            hook = StepHook(self._on_post_step)
            self._life_hooks.add_handle(optimizer.register_step_post_hook(hook))
        open_runs.add(self)
        self._steps.begin()

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
    def sampled(self) -> bool:
        """Whether the current step is sampled: the in-loop loggers (``log_attention``,
        ``log_codes``, ``log_posterior``, ``log_routing``) reduce only then, so compute what
        you pass them only when this is True."""
        return self._steps is not None and self._steps.sampled

    @property
    def stats(self) -> dict[str, int]:
        """Counters: current step and interval, sampled steps, records made, and where they
        are (``stored`` + ``spooled`` + ``rejected`` + ``dropped`` + ``pending`` = ``records``;
        nothing is pending after :meth:`finish`), then batches sent and spooled, and failed
        requests."""
        t, steps = self._transport, self._steps
        return {
            "step": steps.step if steps else 0,
            "every": self._sampler.every,
            "sampled_steps": steps.sampled_steps if steps else 0,
            "records": steps.records if steps else 0,
            **(t.counters() if t else dict.fromkeys(COUNTERS, 0)),
        }

    def firing(self) -> list[RunAlert]:
        """The alerts firing on this run, as the server's latest answer listed them (the
        sender learns them with each batch it delivers; nothing polls). ``watch(...,
        on_alert=fn)`` calls ``fn(alert)`` between two steps when an alert starts firing."""
        return self._alerts.firing()

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
        if loss is not None:
            self._guard.run(self._loss, self._add_loss, loss)
        if labels is not None and self._cycle.sampled:
            self._guard.run(self._classes, self._classes.on_labels, labels)
        if self._optimizer is None:
            self._cycle.end()

    def log_scalar(self, name: str, value: torch.Tensor | float) -> None:
        """Record one number at the current step (probe ``name``, kind ``scalar``).

        A tensor stays on its device until the next sampled step's host copy: no sync.
        """
        if not self._active:
            return
        self._guard.run(self._scalars, self._add_scalar, name, value)

    def finish(self, timeout: float = 10.0) -> None:
        """Send what is left and mark the run finished; what cannot be sent in ``timeout``
        seconds is spooled to disk. Removes the hooks. Safe to call more than once."""
        self._finish("finished", timeout)

    def remove(self) -> None:
        """Remove every hook; the run stays open until :meth:`finish` (or process exit)."""
        if not self._active:
            return
        self._active = self._cycle.sampled = False
        self._cycle.leave()
        self._life_hooks.remove()

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        # __enter__ (returning the monitor) comes from AbstractContextManager
        self._finish("crashed" if exc_type is not None else "finished", 10.0)

    def __repr__(self) -> str:
        state = "enabled" if self._active else "disabled"
        return f"<Monitor {self._project}/{self._run_name} {self._run_id} {state}>"

    # ------------------------------------------------------------------- explicit loggers

    def log_attention(self, name: str, probs: torch.Tensor) -> None:
        """Attention probabilities of a custom attention layer, ``[batch, heads, queries,
        keys]`` (rows summing to 1; masked keys exactly 0, as softmax gives after ``-inf``).

        Gives the normalised entropy per head (probe kind ``attention``), reduced for up to 4
        sequences x 64 queries of the call; a key counts as visible to a query when some head
        gives it a probability > 0. ``nn.MultiheadAttention`` layers are watched without this
        call, fused kernels included. Reduced on sampled steps only.
        """
        if self.sampled:
            from collapsewatch.probes.attention import AttentionAccumulator

            self._log(name, _K.attention, fresh(AttentionAccumulator), lambda a: a.add_probs(probs))

    def log_codes(self, name: str, indices: torch.Tensor, num_codes: int) -> None:
        """The code indices a vector quantiser chose (any shape, integers in ``0..num_codes-1``;
        others, e.g. ``-1`` padding, are counted apart): codebook utilisation, dead codes and
        perplexity (probe kind ``codes``). Reduced on sampled steps only."""
        if self.sampled:
            from collapsewatch.probes.latents import CodeAccumulator

            self._log(name, _K.codes, fresh(CodeAccumulator), lambda a: a.add(indices, num_codes))

    def log_posterior(self, name: str, mu: torch.Tensor, logvar: torch.Tensor) -> None:
        """A diagonal Gaussian posterior ``N(mu, exp(logvar))``, ``[batch, latent...]`` (every
        dimension after the first is a latent dimension): KL per dimension, active units and
        total KL (probe kind ``posterior``). Reduced on sampled steps only."""
        if self.sampled:
            from collapsewatch.probes.latents import PosteriorAccumulator

            self._log(name, _K.posterior, fresh(PosteriorAccumulator), lambda a: a.add(mu, logvar))

    def log_routing(
        self, name: str, router_logits: torch.Tensor, k: int = 1, *, capacity: int | None = None
    ) -> None:
        """A mixture-of-experts router's logits, ``[tokens, experts]`` (leading dims are
        flattened into tokens); each token goes to its ``k`` largest logits, as the model
        routes it. ``capacity``: the most choices an expert takes in one call (one routed
        batch), to count dropped ones. Every call of a step must have the same number of
        experts and ``k``, and give a capacity on all or none. Gives load entropy, imbalance,
        dead experts, the auxiliary loss, the z-loss and, with a capacity, the dropped
        fraction (probe kind ``routing``). Reduced on sampled steps only."""
        if self.sampled:
            from collapsewatch.probes.routing import RoutingAccumulator

            self._log(
                name,
                _K.routing,
                fresh(RoutingAccumulator),
                lambda a: a.add(router_logits, k, capacity),
            )

    def log_tokens(
        self,
        name: str,
        token_ids: torch.Tensor | Sequence[Sequence[int]],
        generation: int | None = None,
    ) -> None:
        """Generated token ids, ``[samples, length]`` (negative ids are padding: set your pad
        id to -1) or a list of sequences of any lengths: distinct-n, repetition and unigram
        entropy (probe kind ``text``); n-grams touching padding are left out. ``generation``
        numbers the rounds of a self-consuming loop (a model trained on its own samples)."""
        from collapsewatch.probes.text import TextAccumulator

        self._log(name, _K.text, fresh(TextAccumulator), lambda a: a.add(token_ids, generation))

    def log_eval(
        self, name: str, nll_sum: torch.Tensor | float, token_count: torch.Tensor | int
    ) -> None:
        """Validation loss on fixed real data: the summed negative log-likelihood (nats) and
        the number of tokens (or samples) it sums over. Calls at one step add up, so call it
        per validation batch: the record holds the set's perplexity (probe kind ``eval``)."""
        from collapsewatch.probes.text import EvalAccumulator

        self._log(name, _K.eval, fresh(EvalAccumulator), lambda a: a.add(nll_sum, token_count))

    def log_samples(
        self, name: str, samples: torch.Tensor, reference: torch.Tensor | None = None
    ) -> None:
        """Generated samples ``[n, ...]`` (each flattened to a vector) and, once or every time,
        real samples of the same shape: the diversity ratio (mean pairwise distance of the
        generated over the real ones) and the effective rank of the generated ones (probe kind
        ``samples``). Without ``reference``, the reduced statistics of the real samples of
        the last step that had some are used (the user's tensors are never kept)."""
        from collapsewatch.probes.samples import SampleAccumulator

        self._log(name, _K.samples, SampleAccumulator, lambda a: a.add(samples, reference))

    def log_state(
        self,
        name: str,
        hidden: torch.Tensor,
        positions: torch.Tensor | Sequence[int],
        *,
        train_length: int | None = None,
    ) -> None:
        """Recurrent or state-space states ``[batch, len(positions), dim]`` (or without the
        batch dim) at sequence ``positions``, typically log-spaced and past the training
        length: the state norm at the longest positions against the norm at ``train_length``
        (probe kind ``state``)."""
        from collapsewatch.probes.states import StateAccumulator

        self._log(
            name,
            _K.state,
            fresh(StateAccumulator),
            lambda a: a.add(hidden, positions, train_length),
        )

    # -------------------------------------------------------------------------- internals

    @property
    def _cycle(self) -> StepCycle:
        """The step cycle; only an active monitor (every caller checked) has one."""
        assert self._steps is not None
        return self._steps

    def _on_post_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self._active:
            self._cycle.end()

    def _log(
        self,
        name: str,
        kind: ProbeKind,
        make: MakeAccumulator,
        reduce: Callable[[Any], object],
    ) -> None:
        if self._active and self._loggers.add(name, kind, make, reduce, self._cycle.step):
            self._cycle.flush(self._loggers.evaluations(), self._cycle.step)

    def _on_criterion(self, args: Any) -> None:
        self._guard.run(self._classes, self._classes.on_criterion, args)

    def _on_backward(self, loss: torch.Tensor) -> None:
        self._add_loss(loss, manual=False)

    def _add_loss(self, loss: torch.Tensor | float, manual: bool = True) -> None:
        if self._loss.add(loss, manual=manual):  # the first loss seen: announce the probe
            self._document.announce(self._loss.infos(0)[0])

    def _add_scalar(self, name: str, value: torch.Tensor | float) -> None:
        cycle = self._cycle
        self._scalars.add(name, cycle.step, value)
        if name not in self._document.names:
            self._document.announce(ScalarProbe.info(name, 0))
        if self._scalars.pending >= MAX_PENDING_SCALARS:
            cycle.flush([self._scalars], cycle.step)

    def _finish(self, status: str, timeout: float) -> None:
        if self._finished:
            return
        self._finished = True
        observing = self._active  # not after remove(): then nothing more is read
        self.remove()
        open_runs.discard(self)
        if self._transport is None:
            return
        if not self._broken:
            try:
                # A sampled step cut short has partial statistics: dropped. The loss since the
                # last sampled step, evaluations and scalars go at the last completed step, and
                # the parameters as they end, unless that step was sampled already.
                for probe in self._probes:
                    probe.reset()
                cycle = self._cycle
                last = max(cycle.step - 1, 0)
                snapshot = observing and last != cycle.last_sampled
                if last > cycle.skip_until:  # a resumed run's server has that step already
                    cycle.flush(
                        [p for p in self._probes if p is not self._params or snapshot], last
                    )
            except Exception as exc:
                self._fail("finish", exc)
        self._transport.close(status, timeout)

    def _fail(self, where: str, exc: BaseException) -> None:
        """An error in step logic: log it once and stop observing altogether."""
        self._active = False
        self._broken = True
        self._cycle.sampled = False
        self._cycle.leave()
        self._life_hooks.remove()
        message = f"collapsewatch: error in {where}: {exc!r}; collapsewatch stopped observing"
        self._log_once(where, message, exc)

    def _log_once(self, key: str, message: str, exc: BaseException | None = None) -> None:
        if key not in self._logged:
            self._logged.add(key)
            logger.warning(message, exc_info=exc)
