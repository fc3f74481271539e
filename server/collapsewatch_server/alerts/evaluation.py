"""A project's rules applied to the points of one ingest batch: which (rule, probe) series each
point belongs to, the state machine (:mod:`.engine`) on each, and what to announce.

Pure: the ingest service loads the rules and their states, calls :func:`judge_points` and
stores what it returns, in the transaction that stores the points.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from collapsewatch_server.alerts.engine import RuleSpec, SeriesState, Transition, evaluate
from collapsewatch_web.api_schemas.alerts import glob_matches

#: A series' state key within one run: (rule id, probe id).
StateKey = tuple[int, int]


class NewPoint(NamedTuple):
    """An indicator point just stored, as rules see it (value NaN when not finite)."""

    probe_id: int
    probe: str
    indicator: str
    step: int
    value: float


@dataclass(frozen=True)
class Raised:
    """A transition to announce, with the rule and the series it is about."""

    rule_id: int
    rule_name: str
    indicator: str
    probe: str
    transition: Transition


@dataclass
class Judged:
    """What a batch changed: the states that moved, and the transitions to announce."""

    states: dict[StateKey, SeriesState] = field(default_factory=dict)
    raised: list[Raised] = field(default_factory=list)


def judge_points(
    rules: Mapping[int, RuleSpec],
    states: Mapping[StateKey, SeriesState],
    points: Sequence[NewPoint],
    now: datetime,
    final: bool = False,
) -> Judged:
    """Run ``rules`` (by id; those watching the run) over ``points`` in step order, from
    ``states`` (a missing state is a fresh one). A point reaches the rules of its indicator
    whose probe glob matches its probe. ``final``: the batch ends the run, so each series'
    last point in it is judged as its run's end state (see :func:`.engine.evaluate`)."""
    by_indicator: dict[str, list[tuple[int, RuleSpec]]] = defaultdict(list)
    for rule_id, spec in rules.items():
        by_indicator[spec.indicator].append((rule_id, spec))
    current = dict(states)
    judged = Judged()
    watches: dict[tuple[int, str], bool] = {}
    last: dict[tuple[str, int], int] = {}
    if final:
        for point in points:
            series = (point.indicator, point.probe_id)
            last[series] = max(point.step, last.get(series, point.step))
    for point in sorted(points, key=lambda p: p.step):
        ends = final and last.get((point.indicator, point.probe_id)) == point.step
        for rule_id, spec in by_indicator.get(point.indicator, ()):
            seen = watches.get((rule_id, point.probe))
            if seen is None:
                seen = watches[(rule_id, point.probe)] = glob_matches(point.probe, spec.probe)
            if not seen:
                continue
            key = (rule_id, point.probe_id)
            old = current.get(key) or SeriesState()
            new, transitions = evaluate(
                spec, old, point.step, point.value, now, point.probe, final=ends
            )
            if new is not old:
                current[key] = judged.states[key] = new
            judged.raised += (
                Raised(rule_id, spec.name, spec.indicator, point.probe, t) for t in transitions
            )
    return judged
