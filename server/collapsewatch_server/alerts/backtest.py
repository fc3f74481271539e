"""Rule back-test: replay a rule over a stored run's points with the pure state machine.

Every indicator is stored per point, so a rule can be judged on the past exactly as it would
have been live: same engine, same order (step order, per probe), from a fresh state. Only
reminders differ: they are paced by the wall clock at arrival, which a replay does not have,
so none are produced.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Protocol

from collapsewatch_server.alerts.engine import RuleSpec, SeriesState, evaluate, spec_from
from collapsewatch_web.api_schemas.alerts import RuleCreate, glob_matches
from collapsewatch_web.api_schemas.backtest import BacktestEvent

#: The replay's clock: fixed, so no repeat interval ever elapses (no reminders).
_REPLAY_NOW = datetime(2000, 1, 1, tzinfo=UTC)


class SeriesLike(Protocol):
    """One probe's points in step order (the points repository's ``ProbePoints``)."""

    @property
    def probe(self) -> str: ...
    @property
    def steps(self) -> Sequence[int]: ...
    @property
    def values(self) -> Sequence[float]: ...


def spec_of(rule: RuleCreate) -> RuleSpec:
    """What the engine needs of a rule schema."""
    return spec_from(dict(rule))


def watched(rule: RuleCreate, series: Iterable[SeriesLike]) -> list[SeriesLike]:
    """The series whose probe the rule's probe glob matches."""
    return [s for s in series if glob_matches(s.probe, rule.probe)]


def replay(rule: RuleCreate, series: Iterable[SeriesLike]) -> tuple[list[BacktestEvent], int]:
    """The events the rule would have raised over these series (already the watched ones),
    in step order, and how many points it judged."""
    spec = spec_of(rule)
    events: list[BacktestEvent] = []
    judged = 0
    for s in series:
        state = SeriesState()
        for step, value in zip(s.steps, s.values, strict=True):
            judged += 1
            state, transitions = evaluate(spec, state, step, value, _REPLAY_NOW, s.probe)
            events.extend(
                BacktestEvent(
                    probe=s.probe,
                    status="firing" if t.status.value == "firing" else "resolved",
                    severity=t.severity,
                    step=t.step,
                    value=t.value if math.isfinite(t.value) else None,
                    threshold=t.threshold,
                    message=t.message,
                )
                for t in transitions
            )
    events.sort(key=lambda e: (e.step, e.probe))
    return events, judged
