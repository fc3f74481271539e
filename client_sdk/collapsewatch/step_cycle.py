"""The step cycle: which step a run is at, whether it is sampled, and what a step's end does.

A step is sampled or not (:mod:`collapsewatch.pipeline.sampling`). When a sampled step begins,
every probe installs its hooks; when it ends, they are removed, every probe files its records
into one pack, the pack is copied to the host once and handed to the background sender. An
unsampled step runs the model with no collapsewatch hook on it: only the optimizer's step hook
(which counts steps) and the criterion's (the loss of every step) remain.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from collapsewatch.alerts_feedback import AlertFeedback
from collapsewatch.compiled import EagerWhileSampled
from collapsewatch.distributed import RankMerge
from collapsewatch.logger_names import LoggerNames
from collapsewatch.mirror import Mirror
from collapsewatch.pipeline.packing import StepPack
from collapsewatch.pipeline.sampling import Sampler
from collapsewatch.pipeline.sender import Sender
from collapsewatch.probes.base import Guard, Hooks, Probe
from collapsewatch.probes.functions import FunctionProbe
from collapsewatch.probes.loss import LossProbe
from collapsewatch.probes.step_end import STUCK_MESSAGE
from collapsewatch.run_document import RunDocument


class StepCycle:
    """The steps of one watched run, from the first to the last; made by the monitor, which
    calls :meth:`end` from the optimizer's step hook (or ``monitor.step()``)."""

    def __init__(
        self,
        *,
        probes: list[Probe],
        guard: Guard,
        step_hooks: Hooks,
        sampler: Sampler,
        merge: RankMerge | None,
        eager: EagerWhileSampled,
        functions: FunctionProbe,
        loss: LossProbe,
        loggers: LoggerNames,
        document: RunDocument,
        alerts: AlertFeedback,
        transport: Sender | None,
        mirror: Mirror | None,
        fail: Callable[[str, BaseException], None],
        log_once: Callable[[str, str], None],
        step: int,
        skip_until: int,
    ) -> None:
        self._probes, self._guard, self._step_hooks = probes, guard, step_hooks
        self._sampler, self._merge, self._eager = sampler, merge, eager
        self._functions, self._loss, self._loggers = functions, loss, loggers
        self._document, self._alerts = document, alerts
        self._transport, self._mirror = transport, mirror
        self._fail, self._log_once = fail, log_once
        self.step = step
        #: A resumed run's steps the server has: not sampled again.
        self.skip_until = skip_until
        self.sampled = False
        self.sampled_steps = 0
        self.records = 0
        self.last_sampled = -1
        self._last_step_end: float | None = None

    def begin(self) -> None:
        """Decide whether the current step is sampled; if so, let every probe hook in."""
        self.sampled = self.step > self.skip_until and self._sampler.sampled(self.step)
        self._loss.sampled = self.sampled
        if self.sampled:
            self._eager.enter()
            for probe in self._probes:
                if not probe.disabled:
                    self._guard.run(probe, probe.install, self._step_hooks)

    def end(self) -> None:
        """The current step is over: file its records, let the sampler see what it cost,
        begin the next one and deliver the alerts that started firing."""
        try:
            now = time.perf_counter()
            wall = 0.0 if self._last_step_end is None else now - self._last_step_end
            sampled = self.sampled
            if sampled:
                self.leave()
                self.flush(self._probes, self.step, merge=True)
                self.sampled_steps += 1
                self.last_sampled = self.step
                if self.sampled_steps == 1:  # the first forward's function calls are known
                    self._document.measure_coverage()
            elif any(p.pending for p in self._loggers.evaluations()):
                self.flush(self._loggers.evaluations(), self.step)  # an evaluation at this step
            cost = self._guard.take() + (time.perf_counter() - now if sampled else 0.0)
            every = self._sampler.every
            if self._last_step_end is not None:
                self._sampler.observe(self.step, sampled, wall, cost)
            if self._sampler.every != every:
                self._document.refresh()  # the run document says how the run is sampled
            self.step += 1
            self.begin()
            self._alerts.deliver()  # between two steps: a callback may stop or checkpoint
            self._last_step_end = time.perf_counter()
        except Exception as exc:
            self._fail("the end of a step", exc)

    def flush(self, probes: Sequence[Probe], step: int, merge: bool = False) -> None:
        """File the records of ``probes`` into one pack, copy it to the host, hand it over;
        with ``merge`` (a sampled step) and ``ranks="merge"``, add the other ranks' first."""
        pack = StepPack(merging=merge and self._merge is not None)
        for probe in probes:
            self._guard.run(probe, probe.flush, pack, step)
        if merge and self._merge is not None:
            self._merge.merge(pack, step)
        count = len(pack)  # before copy(), which hands the records over
        load = pack.load
        if count and self._transport is not None:
            self.records += count
            build = pack.copy()
            if self._mirror is not None:
                mirror = self._mirror
                self._transport.submit(lambda: mirror.observe(build()), count, load)
            else:
                self._transport.submit(build, count, load)

    def on_stuck(self, forwards: int) -> None:
        """Many forward passes and no step end: drop the step, say once what to add."""
        self._log_once("stuck", STUCK_MESSAGE.format(n=forwards))
        self.sampled = self._loss.sampled = False
        self.leave()
        for probe in self._probes:
            probe.reset()

    def leave(self) -> None:
        """Take the step's hooks out (the step is over, dropped, or the monitor stops)."""
        self._functions.leave()
        self._step_hooks.remove()
        self._eager.leave()
