"""The alert state machine on its own: no database, an injected clock."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from collapsewatch_server.alerts.engine import RuleSpec, SeriesState, Transition, evaluate
from collapsewatch_web.api_schemas.alerts import (
    AlertState,
    Condition,
    EventStatus,
    Reference,
    Severity,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)
NAN = math.nan


def above(threshold: float = 0.5, **kw: object) -> RuleSpec:
    return RuleSpec(
        name="r", indicator="dead_fraction", condition=Condition.above, threshold=threshold, **kw
    )  # type: ignore[arg-type]


def rule(condition: Condition, **kw: object) -> RuleSpec:
    return RuleSpec(name="r", indicator="x", condition=condition, **kw)  # type: ignore[arg-type]


def run(
    spec: RuleSpec,
    values: Iterable[float],
    *,
    state: SeriesState | None = None,
    start: int = 0,
    every: int = 1,
    seconds: float = 1.0,
) -> tuple[SeriesState, list[Transition], list[AlertState]]:
    """Feed values at steps start, start+every, ...; the clock advances ``seconds`` a point."""
    state = state or SeriesState()
    events: list[Transition] = []
    states: list[AlertState] = []
    for i, v in enumerate(values):
        step = start + i * every
        state, out = evaluate(spec, state, step, v, T0 + timedelta(seconds=i * seconds), "fc2")
        events += out
        states.append(state.state)
    return state, events, states


def statuses(events: list[Transition]) -> list[tuple[str, int]]:
    return [(e.status.value + ("*" if e.reminder else ""), e.step) for e in events]


# ------------------------------------------------------------------------- thresholds


@pytest.mark.parametrize(
    ("spec", "breaching", "healthy"),
    [
        (above(0.5), 0.51, 0.5),
        (rule(Condition.below, threshold=0.1), 0.09, 0.1),
        (rule(Condition.outside, low=0.2, high=0.8), 0.1, 0.2),
        (rule(Condition.outside, low=0.2, high=0.8), 0.9, 0.8),
    ],
)
def test_breach_is_strict_and_fires_at_once_without_pending(
    spec: RuleSpec, breaching: float, healthy: float
) -> None:
    _, events, states = run(spec, [healthy, healthy])
    assert events == [] and states == [AlertState.normal] * 2
    _, events, states = run(spec, [healthy, breaching])
    assert statuses(events) == [("firing", 1)]
    assert states == [AlertState.normal, AlertState.firing]


def test_fewer_breaching_points_than_pending_fire_nothing() -> None:
    spec = above(0.5, pending_points=3)
    state, events, states = run(spec, [0.1, 0.7, 0.8, 0.2, 0.9, 0.9, 0.3])
    assert events == []
    assert states == [
        AlertState.normal,
        AlertState.pending,
        AlertState.pending,
        AlertState.normal,  # the breach ended before 3 points: silently
        AlertState.pending,
        AlertState.pending,
        AlertState.normal,
    ]
    assert state.breach_count == 0 and state.breach_start_step is None


def test_pending_points_reached_fires_exactly_once_with_a_readable_message() -> None:
    _, events, states = run(above(0.5, pending_points=3), [0.1, 0.6, 0.7, 0.77, 0.8, 0.9])
    assert states[-3:] == [AlertState.firing] * 3
    assert len(events) == 1
    (e,) = events
    assert (e.status, e.step, e.value, e.threshold, e.severity, e.reminder) == (
        EventStatus.firing,
        3,
        0.77,
        0.5,
        Severity.warning,
        False,
    )
    assert e.message == "dead_fraction on fc2 is 0.77, above 0.5 for 3 points"


def test_pending_points_one_fires_at_first_breach() -> None:
    _, events, _ = run(above(0.5, pending_points=1), [0.9])
    assert statuses(events) == [("firing", 0)]


def test_pending_steps_counts_steps_since_the_first_breaching_point() -> None:
    spec = above(0.5, pending_steps=20)
    # every 10 steps: breach at 10, 20 (lasted 10), 30 (lasted 20 -> fires)
    _, events, states = run(spec, [0.1, 0.9, 0.9, 0.9, 0.9], every=10)
    assert states == [
        AlertState.normal,
        AlertState.pending,
        AlertState.pending,
        AlertState.firing,
        AlertState.firing,
    ]
    assert statuses(events) == [("firing", 30)]
    assert events[0].message.endswith("for 20 steps")
    # sparse sampling: one point that lands past the period after the first still waits for it
    _, events, _ = run(spec, [0.9, 0.9], every=25)
    assert statuses(events) == [("firing", 25)]


def test_pending_steps_zero_fires_at_first_breach() -> None:
    _, events, _ = run(above(0.5, pending_steps=0), [0.9])
    assert statuses(events) == [("firing", 0)]


def test_pending_state_keeps_its_since_while_pending() -> None:
    spec = above(0.5, pending_points=5)
    state, _, _ = run(spec, [0.9, 0.9, 0.9], seconds=10)
    assert state.state == AlertState.pending and state.since == T0
    assert state.breach_count == 3 and state.breach_start_step == 0


# --------------------------------------------------------------------------- recovery


def test_recovered_series_gets_exactly_one_resolved_event() -> None:
    spec = above(0.5, pending_points=2)
    state, events, states = run(spec, [0.9, 0.9, 0.9, 0.3, 0.2, 0.1])
    assert statuses(events) == [("firing", 1), ("resolved", 3)]
    assert states[3:] == [AlertState.resolved] * 3  # resolved stays until the next breach
    resolved = events[1]
    assert resolved.value == 0.3 and resolved.threshold == 0.5
    assert resolved.message == "dead_fraction on fc2 is 0.3, back below 0.5"
    assert state.breach_count == 0 and state.since == T0 + timedelta(seconds=3)


def test_resolved_then_a_new_breach_goes_through_pending_again() -> None:
    spec = above(0.5, pending_points=2)
    _, events, states = run(spec, [0.9, 0.9, 0.1, 0.9, 0.1, 0.9, 0.9])
    assert statuses(events) == [("firing", 1), ("resolved", 2), ("firing", 6)]
    assert states[3] == AlertState.pending and states[4] == AlertState.normal


def test_hysteresis_keeps_firing_between_threshold_and_recovery() -> None:
    spec = above(0.5, recovery=0.3)
    # fires at 0.6; 0.45 and 0.3 are below the threshold but not past the recovery (strict)
    _, events, states = run(spec, [0.6, 0.45, 0.3, 0.55, 0.29, 0.4])
    assert statuses(events) == [("firing", 0), ("resolved", 4)]
    assert states == [AlertState.firing] * 4 + [AlertState.resolved, AlertState.resolved]
    assert events[1].threshold == 0.3
    assert events[1].message == "dead_fraction on fc2 is 0.29, back below 0.3"


def test_hysteresis_below() -> None:
    spec = rule(Condition.below, threshold=0.1, recovery=0.2)
    _, events, _ = run(spec, [0.05, 0.15, 0.2, 0.21])
    assert statuses(events) == [("firing", 0), ("resolved", 3)]


def test_outside_resolves_back_inside_the_band() -> None:
    spec = rule(Condition.outside, low=0.2, high=0.8)
    _, events, _ = run(spec, [0.5, 0.95, 0.7])
    assert statuses(events) == [("firing", 1), ("resolved", 2)]
    assert events[0].threshold == 0.8 and events[1].threshold == 0.8
    assert events[0].message == "x on fc2 is 0.95, outside [0.2, 0.8] for 1 point"
    assert events[1].message == "x on fc2 is 0.7, back inside [0.2, 0.8]"
    _, events, _ = run(spec, [0.1])
    assert events[0].threshold == 0.2


# -------------------------------------------------------------------- relative conditions


def test_drop_from_peak_follows_the_running_peak() -> None:
    spec = rule(Condition.drop, percent=50)
    # peak 10 -> limit 5: 6 holds, 4 breaches; the first point never breaches
    state, events, _ = run(spec, [8, 10, 6, 4])
    assert statuses(events) == [("firing", 3)]
    assert events[0].threshold == 5.0
    assert events[0].message == "x on fc2 is 4, below 5 (50% under its peak) for 1 point"
    assert (state.peak, state.trough) == (10, 4)


def test_drop_from_peak_resolves_above_the_limit_or_the_recovery() -> None:
    _, events, _ = run(rule(Condition.drop, percent=50), [10, 4, 5])
    assert statuses(events) == [("firing", 1), ("resolved", 2)]
    spec = rule(Condition.drop, percent=50, recovery=8)
    _, events, states = run(spec, [10, 4, 6, 8, 9])
    assert statuses(events) == [("firing", 1), ("resolved", 4)]
    assert states[2:4] == [AlertState.firing] * 2


def test_drop_from_baseline_waits_for_the_baseline() -> None:
    spec = rule(Condition.drop, percent=20, reference=Reference.baseline, baseline_points=3)
    # baseline = mean(10, 8, 12) = 10 -> limit 8; 1 during the baseline cannot breach it
    _, events, _ = run(spec, [10, 8, 12, 9, 7.9])
    assert statuses(events) == [("firing", 4)]
    assert events[0].threshold == pytest.approx(8.0)
    assert "20% under its baseline" in events[0].message
    _, events, _ = run(spec, [10, 1, 1])
    assert events == []  # those points form the baseline; none is judged against it


def test_baseline_is_frozen_after_its_points() -> None:
    spec = rule(Condition.drop, percent=50, reference=Reference.baseline, baseline_points=2)
    state, events, _ = run(spec, [10, 10, 100, 100, 6])
    assert events == []  # a later peak does not move the baseline (10): 6 > 5
    assert (state.baseline_sum, state.baseline_count) == (20, 2)


def test_rise_from_trough_and_from_baseline() -> None:
    _, events, _ = run(rule(Condition.rise, percent=100), [4, 2, 3.9, 4.1])
    assert statuses(events) == [("firing", 3)]
    assert events[0].threshold == 4.0
    assert "100% over its trough" in events[0].message
    spec = rule(Condition.rise, percent=10, reference=Reference.baseline, baseline_points=2)
    _, events, _ = run(spec, [1.0, 1.0, 1.09, 1.11, 1.0])
    assert statuses(events) == [("firing", 3), ("resolved", 4)]


def test_negative_reference_uses_its_magnitude() -> None:
    # peak -10: a 50% drop goes below -15, not above -5
    _, events, _ = run(rule(Condition.drop, percent=50), [-10, -12, -14.9, -15.1])
    assert statuses(events) == [("firing", 3)]
    assert events[0].threshold == -15.0
    # trough -10: a 50% rise goes above -5
    _, events, _ = run(rule(Condition.rise, percent=50), [-10, -6, -4.9])
    assert statuses(events) == [("firing", 2)]


def test_zero_reference() -> None:
    _, events, _ = run(rule(Condition.drop, percent=10), [0.0, 0.0, -0.001])
    assert statuses(events) == [("firing", 2)]


# ---------------------------------------------------------------------- warm-up, NaN, order


def test_a_run_that_starts_on_the_wrong_side_is_judged_after_its_warmup() -> None:
    spec = above(0.5, warmup_steps=10)
    state, events, _ = run(spec, [0.9] * 10)
    assert events == [] and state == SeriesState(), "breaching warm-up points are ignored"
    _, events, _ = run(spec, [0.9] * 11)
    assert statuses(events) == [("firing", 10)]


def test_the_first_healthy_point_ends_the_warmup() -> None:
    """An untrained model that looks collapsed is not judged until it first looks healthy;
    one that starts healthy is judged at once, however early it collapses."""
    spec = above(0.5, warmup_steps=100, pending_points=2)
    _, events, states = run(spec, [0.9, 0.9, 0.2, 0.9, 0.9], every=10)
    assert states[:2] == [AlertState.normal, AlertState.normal]
    assert statuses(events) == [("firing", 40)], "judged from step 20, well before step 100"
    _, events, _ = run(spec, [0.2, 0.9, 0.9, 0.9], every=5)
    assert statuses(events) == [("firing", 10)]
    nan_first, events, _ = run(spec, [NAN, NAN], every=5)
    assert events == [] and nan_first == SeriesState(), "a diverged warm-up point is no arming"


def test_a_run_that_ends_before_its_warmup_is_judged_by_its_end_state() -> None:
    """Collapsed from its first step to its end, shorter than the warm-up: the run's last
    point fires at once; a healthy end, or a series that looked healthy before, does not."""
    spec = above(0.5, warmup_steps=1000, pending_points=2)
    state, events, _ = run(spec, [0.9] * 30, every=20)
    assert events == [] and state == SeriesState()
    state, events = evaluate(spec, state, 600, 0.9, T0, "fc2", final=True)
    assert statuses(events) == [("firing", 600)] and state.state == AlertState.firing
    healthy, events = evaluate(spec, SeriesState(), 600, 0.2, T0, "fc2", final=True)
    assert events == [] and healthy.state == AlertState.normal
    state, _, _ = run(spec, [0.2, 0.9], every=20)  # judged since step 0: pending as usual
    _, events = evaluate(spec, state, 600, 0.9, T0, "fc2", final=True)
    assert statuses(events) == [("firing", 600)]
    relative = rule(Condition.drop, percent=50, warmup_steps=1000)
    state, events = evaluate(relative, SeriesState(), 600, 0.1, T0, "fc2", final=True)
    assert events == [] and state == SeriesState(), "a drop needs a peak: the warm-up holds"


def test_warmup_points_do_not_enter_peak_or_baseline() -> None:
    spec = rule(Condition.drop, percent=50, warmup_steps=2)
    state, events, _ = run(spec, [100, 100, 10, 6, 4])  # peak 100 was warm-up: limit 5
    assert state.peak == 10
    assert statuses(events) == [("firing", 4)]
    spec = rule(
        Condition.drop, percent=50, reference=Reference.baseline, baseline_points=1, warmup_steps=1
    )
    state, events, _ = run(spec, [100, 10, 6])
    assert state.baseline_sum == 10 and events == []


@pytest.mark.parametrize(
    "spec",
    [
        above(0.5),
        rule(Condition.below, threshold=0.1),
        rule(Condition.outside, low=0.2, high=0.8),
        rule(Condition.drop, percent=50),
        rule(Condition.rise, percent=50, reference=Reference.baseline),
    ],
)
@pytest.mark.parametrize("bad", [NAN, math.inf, -math.inf])
def test_non_finite_value_breaches_every_condition(spec: RuleSpec, bad: float) -> None:
    state, events, _ = run(spec, [bad])  # even before a reference exists
    assert statuses(events) == [("firing", 0)]
    assert "not a finite number" in events[0].message
    assert (state.peak, state.trough, state.baseline_count) == (None, None, 0)


def test_nan_keeps_firing_and_does_not_resolve() -> None:
    spec = above(0.5, pending_points=2)
    _, events, states = run(spec, [0.9, NAN, NAN, 0.1])
    assert statuses(events) == [("firing", 1), ("resolved", 3)]
    assert states[1:3] == [AlertState.firing] * 2


def test_nan_does_not_poison_the_peak() -> None:
    state, events, _ = run(rule(Condition.drop, percent=50, pending_points=2), [10, NAN, 6])
    assert state.peak == 10 and events == []


def test_old_or_repeated_steps_are_ignored() -> None:
    spec = above(0.5, pending_points=2)
    state, _, _ = run(spec, [0.9], start=5)
    same, events = evaluate(spec, state, 5, 0.9, T0, "fc2")
    assert same == state and events == []
    same, events = evaluate(spec, state, 3, 0.9, T0, "fc2")
    assert same == state and events == []
    after, events = evaluate(spec, state, 6, 0.9, T0, "fc2")
    assert after.state == AlertState.firing and len(events) == 1


# ---------------------------------------------------------------------------- reminders


def test_reminders_follow_the_repeat_interval_on_the_injected_clock() -> None:
    spec = above(0.5, repeat_interval_s=60, severity=Severity.critical)
    # one point every 25 s: fires at t=0, reminds at t=75 (>= 60 since 0), t=150, ...
    state, events, _ = run(spec, [0.9] * 8, seconds=25)
    assert statuses(events) == [("firing", 0), ("firing*", 3), ("firing*", 6)]
    assert all(e.severity == Severity.critical for e in events)
    assert events[1].message == "still firing: dead_fraction on fc2 is 0.9, above 0.5 for 4 points"
    assert state.last_notified_at == T0 + timedelta(seconds=150)


def test_reminder_exactly_at_the_interval() -> None:
    spec = above(0.5, repeat_interval_s=60)
    _, events, _ = run(spec, [0.9, 0.9, 0.9], seconds=30)
    assert statuses(events) == [("firing", 0), ("firing*", 2)]


def test_reminders_also_in_the_hysteresis_zone_and_none_after_resolve() -> None:
    spec = above(0.5, recovery=0.2, repeat_interval_s=10)
    _, events, _ = run(spec, [0.9, 0.4, 0.4, 0.1, 0.1, 0.1], seconds=10)
    assert statuses(events) == [("firing", 0), ("firing*", 1), ("firing*", 2), ("resolved", 3)]
    assert events[1].threshold == 0.5


def test_no_reminders_without_repeat_interval() -> None:
    _, events, _ = run(above(0.5), [0.9] * 5, seconds=3600)
    assert statuses(events) == [("firing", 0)]


def test_state_can_be_resumed_from_its_fields() -> None:
    """The store persists the fields and rebuilds the state: evaluation continues the same."""
    spec = above(0.5, pending_points=3)
    state, events, _ = run(spec, [0.9, 0.9])
    assert events == []
    rebuilt = replace(SeriesState(), **{f: getattr(state, f) for f in state.__slots__})
    _, events, _ = run(spec, [0.9], state=rebuilt, start=2)
    assert statuses(events) == [("firing", 2)]
