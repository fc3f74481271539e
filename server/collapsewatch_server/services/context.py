"""What every use case of one server process shares."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from collapsewatch_server.config import Settings
from collapsewatch_server.db import Database
from collapsewatch_server.in_flight import InFlight
from collapsewatch_server.metrics import Metrics
from collapsewatch_server.services.parsed_batches import ParsedBatches
from collapsewatch_server.services.queue_depth import QueueDepth
from collapsewatch_server.webhooks.grouping import GroupPolicy


def _nobody() -> None:
    """No deliverer (or processor) in this process (the CLI, a test): other processes poll."""


@dataclass(frozen=True)
class ServiceContext:
    """The database, the settings the use cases read, and the doorbells of this process's
    webhook deliverer and ingest processor: a service that committed deliveries to the outbox
    (a batch to the ingest queue) rings it, so they are sent (processed) at once instead of at
    the next poll; and the batches accepted here, parsed, that the processor takes."""

    db: Database
    settings: Settings
    wake_deliverer: Callable[[], None] = _nobody
    wake_processor: Callable[[], None] = _nobody
    #: This process's counters (``GET /metrics``); one per app, shared by its services.
    metrics: Metrics = field(default_factory=Metrics)
    #: Batches accepted here, parsed, for the processor of this process (shared by the
    #: contexts of one process; a context of its own keeps its own).
    parsed: ParsedBatches = field(default_factory=ParsedBatches)
    #: Ingest requests being accepted in this process, which its processor gives way to
    #: (shared like ``parsed``).
    in_flight: InFlight = field(default_factory=InFlight)
    #: The ingest queue's depth as this process last read it (shared like ``parsed``).
    queue_depth: QueueDepth = field(default_factory=QueueDepth)

    @property
    def stalled_after(self) -> timedelta:
        """A running run silent this long is stalled."""
        return timedelta(seconds=self.settings.stalled_after_s)

    @property
    def group_policy(self) -> GroupPolicy:
        """How alert events are grouped into notifications."""
        return GroupPolicy(
            by=tuple(self.settings.notify_group_by),
            wait=timedelta(seconds=self.settings.notify_group_wait_s),
            interval=timedelta(seconds=self.settings.notify_group_interval_s),
        )

    def run_url(self, run_id: str, step: int | None = None) -> str:
        """The dashboard page of a run, at ``step`` when given (links in alerts and webhooks)."""
        base = f"{self.settings.base_url}/runs/{run_id}"
        return base + (f"?step={step}" if step is not None else "")
