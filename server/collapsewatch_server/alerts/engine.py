"""The alert state machine: one rule on one series (a run's indicator on one probe), point by point.

Pure: no database, no clock. :func:`evaluate` takes a rule, where one (rule, run, probe) stands
and a new point, and returns where it stands now and what to announce; the ingest service
persists both (through :mod:`.evaluation`, which applies a project's rules to a batch).

Semantics (Grafana-like):

Points
    The warm-up: for a threshold rule (above, below, outside), the points of a series are
    judged from its first point that does not breach or from ``warmup_steps``, whichever comes
    first; earlier points are ignored. Healthy runs often start on the wrong side (an untrained
    generator's samples look alike, a VAE's KL is 0 at initialisation): those are never judged
    until they first look healthy, while a run that starts healthy is judged at once, however
    early it collapses. For a relative rule (drop, rise) the points before ``warmup_steps`` are
    ignored, and do not enter the peak, trough or baseline. A point whose step is not after the
    last judged step (a replay, an old spool synced late) is ignored too: a series is judged in
    step order, once.

Breach
    ``above``: v > threshold. ``below``: v < threshold. ``outside``: v < low or v > high
    (each the one breach test, :func:`~collapsewatch_web.api_schemas.alerts.breaches`).
    ``drop``: v < ref - |ref| * percent/100. ``rise``: v > ref + |ref| * percent/100 (for a
    positive ref that is ref * (1 -/+ percent/100); with |ref| a negative reference still
    drops downwards). ``ref`` is the running peak (drop) or trough (rise) of the points judged
    before this one, or with ``reference=baseline`` the mean of the first ``baseline_points``
    finite points after warm-up. A point is compared with the points before it, never with
    itself, so the first point never breaches a peak and the points forming the baseline never
    breach it.
    A NaN or infinite value is a breach for every condition, even before a reference exists: a
    statistic that diverged is alarming. It does not enter the peak, trough or baseline.

States: normal -> pending -> firing -> resolved
    A breach in normal or resolved starts a breach: the state becomes pending, or firing at
    once when the rule has no pending period. Pending becomes firing when the consecutive
    breaching points reach ``pending_points``, or when the breach has lasted ``pending_steps``
    steps since its first breaching point (with neither set, or with ``pending_points=1`` or
    ``pending_steps=0``, the first breach fires). A point that does not breach ends a pending
    breach silently (back to normal, no event).
    Firing becomes resolved, with one ``resolved`` event, on a point that does not breach and
    is past ``recovery`` when set (above/rise: v < recovery; below/drop: v > recovery). Between
    the threshold and the recovery value the alert keeps firing (hysteresis). Resolved stays
    resolved (shown as such) until the next breach.
    While firing, a point arriving ``repeat_interval_s`` or more after the last notification
    emits a reminder (a ``firing`` event with ``reminder=True``). Reminders ride on points: a
    run that stops sending gets no reminders (it gets a ``nodata`` event, raised elsewhere).

Events carry the value, the threshold that was crossed (the threshold, the band edge, the
computed relative limit, or for ``resolved`` the recovery value when set), the step, the
rule's severity and a message such as "dead_fraction on fc2 is 0.77, above 0.5 for 3 points".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from datetime import datetime
from typing import Any

from collapsewatch_web.api_schemas.alerts import (
    AlertState,
    Condition,
    EventStatus,
    Reference,
    Severity,
    bad_side,
    breaches,
)


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """What evaluation needs of a rule; a repository builds it from a row, the back-test from a
    rule schema (every field is a rule field of that name), tests by hand."""

    name: str
    indicator: str
    condition: Condition
    #: The probe and run globs (:func:`~collapsewatch_web.api_schemas.alerts.glob_matches`):
    #: which series the rule watches. :func:`evaluate` is handed one series and ignores them.
    probe: str = "*"
    run: str | None = None
    threshold: float | None = None
    low: float | None = None
    high: float | None = None
    percent: float | None = None
    reference: Reference = Reference.peak
    baseline_points: int = 5
    pending_points: int | None = None
    pending_steps: int | None = None
    recovery: float | None = None
    warmup_steps: int = 0
    severity: Severity = Severity.warning
    repeat_interval_s: float | None = None


def spec_from(rule: Mapping[str, Any]) -> RuleSpec:
    """The spec of a rule given by its fields (a rule schema's, or a stored rule's as schema
    fields): every RuleSpec field is a rule field of that name."""
    values = {f.name: rule[f.name] for f in fields(RuleSpec)}
    return RuleSpec(
        **{
            **values,
            "condition": Condition(values["condition"]),
            "reference": Reference(values["reference"]),
            "severity": Severity(values["severity"]),
        }
    )


@dataclass(frozen=True, slots=True)
class SeriesState:
    """Where one (rule, run, probe) stands; mirrors the ``alert_states`` row."""

    state: AlertState = AlertState.normal
    breach_count: int = 0
    breach_start_step: int | None = None
    last_step: int | None = None
    last_value: float | None = None
    peak: float | None = None
    trough: float | None = None
    baseline_sum: float = 0.0
    baseline_count: int = 0
    since: datetime | None = None
    last_notified_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Transition:
    """Something to announce: a firing (or reminder) or a resolved event."""

    status: EventStatus
    severity: Severity
    step: int
    value: float
    threshold: float | None
    message: str
    reminder: bool = False


def evaluate(
    rule: RuleSpec,
    state: SeriesState,
    step: int,
    value: float,
    now: datetime,
    probe: str = "",
    final: bool = False,
) -> tuple[SeriesState, list[Transition]]:
    """Judge one point; returns the new state and the transitions to announce (0 or 1).

    ``now`` stamps state changes and paces reminders; ``probe`` only names the series in
    messages. ``final``: the series' last point of a run that has ended; a threshold rule's
    series still in its warm-up there has breached at every point of the run (it never looked
    healthy) and fires at once, so a run shorter than the warm-up, or collapsed from its first
    step, is judged by its end state.
    """
    if state.last_step is not None and step <= state.last_step:
        return state, []
    limit = _relative_limit(rule, state)
    breach, crossed = _breach(rule, value, limit)
    relative = rule.condition in (Condition.drop, Condition.rise)
    never_healthy = False
    if step < rule.warmup_steps and state.last_step is None and (breach or relative):
        if not (final and breach and not relative):
            return state, []  # still warming up: a healthy point ends it (threshold rules)
        never_healthy = True

    new = _noted(rule, state, step, value)
    say = _Messages(rule, probe, value, limit)

    if breach:
        ongoing = state.state in (AlertState.pending, AlertState.firing)
        count = state.breach_count + 1 if ongoing else 1
        start = state.breach_start_step if ongoing and state.breach_start_step is not None else step
        new = replace(new, breach_count=count, breach_start_step=start)
        if state.state == AlertState.firing:
            return _remind(rule, new, step, value, crossed, now, say(count, step - start))
        if never_healthy or _pending_over(rule, count, step - start):
            fired = replace(new, state=AlertState.firing, since=now, last_notified_at=now)
            event = Transition(
                EventStatus.firing, rule.severity, step, value, crossed, say(count, step - start)
            )
            return fired, [event]
        since = state.since if state.state == AlertState.pending else now
        return replace(new, state=AlertState.pending, since=since), []

    if state.state == AlertState.pending:
        return replace(
            new, state=AlertState.normal, breach_count=0, breach_start_step=None, since=now
        ), []
    if state.state == AlertState.firing:
        if _recovered(rule, value):
            resolved = replace(
                new, state=AlertState.resolved, breach_count=0, breach_start_step=None, since=now
            )
            threshold = rule.recovery if rule.recovery is not None else _edge(rule, value, limit)
            event = Transition(
                EventStatus.resolved, rule.severity, step, value, threshold, say.resolved()
            )
            return resolved, [event]
        # between threshold and recovery: still firing, so still reminded
        lasted = step - (state.breach_start_step if state.breach_start_step is not None else step)
        return _remind(
            rule, new, step, value, _edge(rule, value, limit), now, say(new.breach_count, lasted)
        )
    return new, []


# --------------------------------------------------------------------------------- helpers


def _baseline(rule: RuleSpec, state: SeriesState) -> float | None:
    if state.baseline_count < rule.baseline_points:
        return None
    return state.baseline_sum / state.baseline_count


def _reference(rule: RuleSpec, state: SeriesState) -> float | None:
    if rule.reference == Reference.baseline:
        return _baseline(rule, state)
    return state.peak if rule.condition == Condition.drop else state.trough


def _relative_limit(rule: RuleSpec, state: SeriesState) -> float | None:
    """The value a drop must go under (a rise over), from the points before this one."""
    if rule.condition not in (Condition.drop, Condition.rise) or rule.percent is None:
        return None
    ref = _reference(rule, state)
    if ref is None:
        return None
    margin = abs(ref) * rule.percent / 100.0
    return ref - margin if rule.condition == Condition.drop else ref + margin


def _noted(rule: RuleSpec, state: SeriesState, step: int, value: float) -> SeriesState:
    """``state`` with this point as its last, and in its peak, trough and baseline (finite
    points only); one copy of the state (most points of a run change nothing else)."""
    if not math.isfinite(value):
        return replace(state, last_step=step, last_value=value)
    baseline = state.baseline_count < rule.baseline_points
    return replace(
        state,
        last_step=step,
        last_value=value,
        peak=value if state.peak is None else max(state.peak, value),
        trough=value if state.trough is None else min(state.trough, value),
        baseline_sum=state.baseline_sum + value if baseline else state.baseline_sum,
        baseline_count=state.baseline_count + 1 if baseline else state.baseline_count,
    )


def _breach(rule: RuleSpec, value: float, limit: float | None) -> tuple[bool, float | None]:
    """Whether ``value`` breaches, and the threshold it crossed."""
    c = rule.condition
    if not math.isfinite(value):
        return True, _edge(rule, value, limit)
    if c in (Condition.above, Condition.below):
        breach = rule.threshold is not None and breaches(value, rule.threshold, bad_side(c))
        return breach, rule.threshold
    if c == Condition.outside:
        if rule.low is not None and breaches(value, rule.low, "below"):
            return True, rule.low
        if rule.high is not None and breaches(value, rule.high, "above"):
            return True, rule.high
        return False, _edge(rule, value, limit)
    if limit is None:
        return False, None
    return breaches(value, limit, bad_side(c)), limit


def _edge(rule: RuleSpec, value: float, limit: float | None) -> float | None:
    """The threshold a value is judged against (the nearer band edge for ``outside``)."""
    c = rule.condition
    if c in (Condition.above, Condition.below):
        return rule.threshold
    if c == Condition.outside:
        if rule.low is None or rule.high is None or not math.isfinite(value):
            return None
        return rule.low if value < (rule.low + rule.high) / 2 else rule.high
    return limit


def _recovered(rule: RuleSpec, value: float) -> bool:
    """Past the recovery value (called on a non-breaching, hence finite, value)."""
    if rule.recovery is None or rule.condition == Condition.outside:
        return True
    return value < rule.recovery if bad_side(rule.condition) == "above" else value > rule.recovery


def _pending_over(rule: RuleSpec, count: int, lasted_steps: int) -> bool:
    if rule.pending_points is not None:
        return count >= rule.pending_points
    if rule.pending_steps is not None:
        return lasted_steps >= rule.pending_steps
    return True


def _remind(
    rule: RuleSpec,
    state: SeriesState,
    step: int,
    value: float,
    threshold: float | None,
    now: datetime,
    message: str,
) -> tuple[SeriesState, list[Transition]]:
    """Still firing: a reminder when the repeat interval has passed since the last notice."""
    last = state.last_notified_at
    if last is None:  # a firing state always has one; repair rather than spam
        return replace(state, last_notified_at=now), []
    if rule.repeat_interval_s is None or (now - last).total_seconds() < rule.repeat_interval_s:
        return state, []
    event = Transition(
        EventStatus.firing,
        rule.severity,
        step,
        value,
        threshold,
        f"still firing: {message}",
        reminder=True,
    )
    return replace(state, last_notified_at=now), [event]


def fmt(value: float | None) -> str:
    """A number as people read it in an alert: 3 significant digits, ``nan``/``inf`` as such."""
    if value is None:
        return "?"
    return f"{value:.3g}"


@dataclass(frozen=True, slots=True)
class _Messages:
    """Builds the human messages of one point's events."""

    rule: RuleSpec
    probe: str
    value: float
    limit: float | None

    @property
    def subject(self) -> str:
        where = f" on {self.probe}" if self.probe else ""
        return f"{self.rule.indicator}{where} is {fmt(self.value)}"

    def __call__(self, count: int, lasted_steps: int) -> str:
        r = self.rule
        if r.pending_steps is not None and lasted_steps > 0:
            duration = f"for {lasted_steps} steps"
        else:
            duration = f"for {count} point{'s' if count != 1 else ''}"
        if not math.isfinite(self.value):
            return f"{self.subject}, not a finite number {duration}"
        return f"{self.subject}, {self._condition()} {duration}"

    @property
    def band(self) -> str:
        """An ``outside`` rule's band, as its firing and resolved messages name it."""
        return f"[{fmt(self.rule.low)}, {fmt(self.rule.high)}]"

    def _condition(self) -> str:
        r = self.rule
        c = r.condition
        if c == Condition.outside:
            return f"outside {self.band}"
        side = bad_side(c)
        if c in (Condition.above, Condition.below):
            return f"{side} {fmt(r.threshold)}"
        ref_name = (
            "baseline"
            if r.reference == Reference.baseline
            else ("peak" if c == Condition.drop else "trough")
        )
        word = "under" if side == "below" else "over"
        return f"{side} {fmt(self.limit)} ({r.percent:g}% {word} its {ref_name})"

    def resolved(self) -> str:
        r = self.rule
        c = r.condition
        if c == Condition.outside:
            return f"{self.subject}, back inside {self.band}"
        mark = (
            r.recovery
            if r.recovery is not None
            else (r.threshold if c in (Condition.above, Condition.below) else self.limit)
        )
        healthy = "below" if bad_side(c) == "above" else "above"
        return f"{self.subject}, back {healthy} {fmt(mark)}"
