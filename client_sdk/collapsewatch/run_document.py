"""The run document: what the server is told about a run besides its records.

Its identity, config, the probes known so far (watched layers, and those found after the start:
a classifier, a logger name, a scalar), what the hooks cover and how the run is sampled. The
sender reads :attr:`RunDocument.current` with every batch; each change makes a new dict, never
mutated, because the sender thread may be serialising the previous one.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from collapsewatch import runinfo
from collapsewatch.coverage import Coverage, coverage, describe, say
from collapsewatch.pipeline.sampling import Sampler
from collapsewatch.probes.base import Probe
from collapsewatch.schemas import ProbeInfo


class RunDocument:
    """The current run document of one run, rebuilt whenever what it says changes."""

    def __init__(
        self,
        *,
        run_id: uuid.UUID,
        project: str,
        name: str,
        config: dict[str, Any],
        started_at: datetime,
        probes: Sequence[Probe],
        sampler: Sampler,
        tags: list[str] | None = None,
    ) -> None:
        self.run_id, self.project, self.name = run_id, project, name
        self.config = config
        self.started_at = started_at
        self._probes = probes  # the monitor's list: probes added later are seen
        self._sampler = sampler
        self.tags = tags  # sent only when set: older servers keep taking the batches
        self.infos: list[ProbeInfo] = []
        for probe in probes:
            self.infos += probe.infos(len(self.infos))
        #: Every probe name in the document: a logger may not take one of them.
        self.names = {info.name for info in self.infos}
        self.coverage: Coverage = {}
        self.current: dict[str, Any] = {}
        self.refresh()

    def announce(self, info: ProbeInfo) -> None:
        """A probe found after the start (a classifier, a logger name, a scalar)."""
        self.infos.append(info.model_copy(update={"order": len(self.infos)}))
        self.names.add(info.name)
        self.refresh()

    def measure_coverage(self) -> None:
        """After the first sampled step, when the first forward's function calls are known:
        what the hooks cover, said once to the user and kept in the document."""
        self.coverage = coverage(self._probes, self.infos)
        say(describe(self.name, self.coverage))
        self.refresh()

    def refresh(self) -> None:
        if self.coverage:  # once known, kept up to date (a logger used for the first time)
            self.coverage = coverage(self._probes, self.infos)
        self.current = runinfo.build(
            run_id=self.run_id,
            project=self.project,
            name=self.name,
            config=self.config,
            started_at=self.started_at,
            probes=self.infos,
            coverage=self.coverage,
            sampling_every=self._sampler.every,
            tags=self.tags,
        )
