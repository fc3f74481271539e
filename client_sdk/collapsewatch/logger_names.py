"""The explicit loggers' probes, one per name (``log_attention``, ``log_codes``, ...,
``log_state``): made on a name's first call, announced in the run document, refused (logged
once) for a name that cannot be one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from collapsewatch.probes.base import Guard, Probe
from collapsewatch.probes.explicit import MAX_PENDING, LoggerProbe, MakeAccumulator
from collapsewatch.run_document import RunDocument
from collapsewatch.schemas import ProbeKind


class LoggerNames:
    """The logger probe of each name a training script logs under."""

    def __init__(
        self,
        probes: list[Probe],
        document: RunDocument,
        guard: Guard,
        log_once: Callable[[str, str], None],
    ) -> None:
        self._probes = probes  # the monitor's: a new logger's probe joins every flush
        self._document, self._guard, self._log_once = document, guard, log_once
        self._by_name: dict[str, LoggerProbe] = {}

    def evaluations(self) -> list[LoggerProbe]:
        """The loggers called in evaluations (every call counts, sampled step or not)."""
        return [p for p in self._by_name.values() if not p.in_loop]

    def add(
        self,
        name: str,
        kind: ProbeKind,
        make: MakeAccumulator,
        reduce: Callable[[Any], object],
        step: int,
    ) -> bool:
        """Reduce one call into the probe of ``name`` at ``step``; True when the evaluations
        hold so many pending records that they should be flushed now."""
        probe = self._by_name.get(name)
        if probe is None or probe.kind != kind:
            probe = self._new(name, kind, make)
            if probe is None:
                return False
        self._guard.run(probe, probe.add, step, reduce)
        return (
            not probe.in_loop
            and probe.pending > 0
            and sum(p.pending for p in self.evaluations()) >= MAX_PENDING
        )

    def _new(self, name: str, kind: ProbeKind, make: MakeAccumulator) -> LoggerProbe | None:
        """The probe of a new logger name, or None (logged once) for a name that cannot be."""
        problem = None
        known = self._by_name.get(name)
        if not isinstance(name, str) or not 0 < len(name) <= 256:
            problem = "a logger name must be a string of 1 to 256 characters"
        elif known is not None:
            problem = f"{name!r} is already used by the {known.kind.value} logger"
        elif name in self._document.names:
            # the server keeps one probe per name: the logger's records would land under it
            problem = f"{name!r} is the name of a watched layer or probe; log under another"
        if problem is not None:
            self._log_once(
                f"logger:{name}", f"collapsewatch: {kind.value} logger {name!r}: {problem}"
            )
            return None
        probe = self._by_name[name] = LoggerProbe(name, kind, make)
        self._probes.append(probe)
        self._document.announce(probe.infos(0)[0])
        return probe
