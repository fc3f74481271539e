"""Which notification an alert event joins, and the order events are told in.

Events are grouped the way Alertmanager groups alerts: those sharing a *group key* (their
status, and by default their run and indicator family) within a group wait go out as one
notification per receiver; a later event of a key already sent waits for the group interval.
A firing and a resolution never share a notification.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from collapsewatch_server.indicators.catalogue import CATALOGUE
from collapsewatch_web.api_schemas.alerts import AlertEventPublic, EventStatus, Severity

#: What an event of no indicator (a silent run) counts as, for grouping by family.
NODATA_FAMILY = "nodata"
SEVERITY_RANK = {Severity.critical: 0, Severity.warning: 1, Severity.info: 2}


@dataclass(frozen=True)
class GroupPolicy:
    """How events are grouped (``Settings.notify_*``)."""

    by: tuple[str, ...] = ("run", "family")
    wait: timedelta = timedelta(seconds=10)
    interval: timedelta = timedelta(seconds=60)

    def first_due(self, now: datetime, last_sealed: datetime | None) -> datetime:
        """When a new group of a key is sent: after the group wait, and not sooner than the
        group interval after the key's previous notification."""
        due = now + self.wait
        return due if last_sealed is None else max(due, last_sealed + self.interval)


def family_of(indicator: str | None) -> str:
    """The collapse family of an indicator (an unknown one is its own family)."""
    if indicator is None:
        return NODATA_FAMILY
    found = CATALOGUE.get(indicator)
    return found.family if found is not None else indicator


def group_key(
    by: Sequence[str],
    *,
    status: str,
    run_id: str,
    indicator: str | None,
    rule: str | None,
    probe: str | None,
    severity: str,
) -> str:
    """The key of an event's group: its status plus each ``by`` label, as ``a=b|c=d``."""
    labels = {
        "run": run_id,
        "family": family_of(indicator),
        "rule": rule or "",
        "probe": probe or "",
        "severity": severity,
    }
    return "|".join([f"status={status}", *(f"{name}={labels[name]}" for name in by)])


def labels_of(key: str) -> dict[str, str]:
    """The labels of a group key (inverse of :func:`group_key`)."""
    return dict(part.split("=", 1) for part in key.split("|") if "=" in part)


def worst_first(events: Sequence[AlertEventPublic]) -> list[AlertEventPublic]:
    """Most severe first; among equals the earliest step, then by probe (layer order is the
    probes' names here: the run's order is not at hand)."""
    return sorted(
        events,
        key=lambda e: (
            SEVERITY_RANK[e.severity],
            e.step if e.step is not None else 0,
            e.probe or "",
            e.rule_name or "",
        ),
    )


def group_status(events: Sequence[AlertEventPublic]) -> EventStatus:
    """The status the events of a group share (the key includes it)."""
    return events[0].status if events else EventStatus.firing
