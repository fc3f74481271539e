"""What the pages show, computed from schemas: thresholds in force, how a value stands against
them, the worst layers of a run, health per indicator family, the model summary.

Pure functions, so templates stay logic-light and the rules are tested without a server.
Values are judged here only: the server judges the points it streams live with
:func:`latest_values`, and the browser shows those judgements.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from collapsewatch.schemas import FamilyCoverage
from collapsewatch_web.api_schemas.alerts import (
    Condition,
    RuleCreate,
    RulePublic,
    Severity,
    Side,
    bad_side,
    breaches,
    glob_matches,
)
from collapsewatch_web.api_schemas.catalogue import IndicatorInfo
from collapsewatch_web.api_schemas.charts import Judgement, LatestValue, Threshold
from collapsewatch_web.api_schemas.health import FamilyHealth, HealthState
from collapsewatch_web.api_schemas.runs import PointEvent, ProbePublic, SamplingInterval

#: Families in the order researchers read them; unknown families follow, by name.
FAMILY_TITLES: dict[str, str] = {
    "dead_units": "Dead units",
    "dimensional": "Dimensional collapse",
    "complete": "Complete collapse",
    "neural_collapse": "Neural collapse",
    "tokens": "Token uniformity",
    "attention": "Attention entropy",
    "codebook": "Codebook usage",
    "posterior": "Posterior collapse",
    "routing": "Expert routing",
    "sparsity": "Sparsity and pruning",
    "diversity": "Output diversity",
    "generative": "Generative mode collapse",
    "state": "Long-context state",
    "training": "Training health",
    "scalars": "Logged scalars",
}
#: Worst first; the index is the rank used to sort.
JUDGEMENTS: tuple[Judgement, ...] = ("critical", "warn", "info", "ok", "none")
HEALTH_STATES: tuple[HealthState, ...] = ("critical", "warning", "info", "pending", "ok")
_JUDGEMENT_OF: dict[Severity, Judgement] = {
    Severity.critical: "critical",
    Severity.warning: "warn",
    Severity.info: "info",
}


def family_title(family: str) -> str:
    """A family's heading: the known title, else its key made readable."""
    return FAMILY_TITLES.get(family, family.replace("_", " ").capitalize())


def family_order(family: str) -> tuple[int, str]:
    """Sort key of families: reading order, unknown ones after, by name."""
    known = list(FAMILY_TITLES)
    return (known.index(family) if family in known else len(known), family)


# ---------------------------------------------------------------------------- thresholds


def thresholds_for(
    info: IndicatorInfo,
    rules: Iterable[RuleCreate | RulePublic],
    run_name: str = "",
    probes: Sequence[str] = (),
) -> list[Threshold]:
    """The levels ``info`` is judged against on a run: those of the enabled rules watching it
    (fixed levels only: a relative drop has no fixed line), else the catalogue's defaults,
    unless rules watching it are all disabled: then none (the project switched it off, and a
    page must not warn where no alert can fire).

    A rule counts when its run glob matches ``run_name`` and, when ``probes`` are given, its
    probe glob matches one of them.
    """
    out: list[Threshold] = []
    switched_off = False
    for rule in rules:
        if rule.indicator != info.name:
            continue
        if not glob_matches(run_name, rule.run):
            continue
        if probes and not any(glob_matches(p, rule.probe) for p in probes):
            continue
        if not rule.enabled:
            switched_off = True
            continue
        levels: list[tuple[float, Side]] = []
        if rule.condition in (Condition.above, Condition.below) and rule.threshold is not None:
            levels = [(rule.threshold, bad_side(rule.condition))]
        elif rule.condition == Condition.outside and rule.low is not None and rule.high is not None:
            levels = [(rule.low, "below"), (rule.high, "above")]
        out += (
            Threshold(
                value=level,
                side=side,
                severity=rule.severity,
                label=rule.name,
                probe=rule.probe,
                source="rule",
            )
            for level, side in levels
        )
    if out or switched_off or info.direction == "info":
        return out
    side: Side = "above" if info.direction == "high_is_bad" else "below"
    for level, severity, label in (
        (info.warn, Severity.warning, "warn"),
        (info.critical, Severity.critical, "critical"),
    ):
        if level is not None:
            out.append(
                Threshold(
                    value=level, side=side, severity=severity, label=label, source="catalogue"
                )
            )
    return out


def judge(
    value: float | None, thresholds: Sequence[Threshold], probe: str = ""
) -> tuple[Judgement, float | None, float]:
    """How ``value`` stands: the worst severity among the thresholds it is past (strictly,
    as rules judge), the level crossed, and how far past it relative to it.

    A missing (NaN) value is past every threshold: a diverged statistic is alarming. Without
    a threshold for the probe the answer is ``none``; within every threshold, ``ok``.
    """
    applicable = [t for t in thresholds if glob_matches(probe, t.probe)]
    if not applicable:
        return "none", None, 0.0
    best: tuple[int, float, float] | None = None  # (rank, -margin, level)
    for t in applicable:
        if not breaches(value, t.value, t.side):
            continue
        if value is not None and math.isfinite(value):
            margin = abs(value - t.value) / max(abs(t.value), 1e-12)
        else:
            margin = math.inf
        rank = JUDGEMENTS.index(_JUDGEMENT_OF[t.severity])
        if best is None or (rank, -margin) < best[:2]:
            best = (rank, -margin, t.value)
    if best is None:
        return "ok", None, 0.0
    return JUDGEMENTS[best[0]], best[2], -best[1]


def latest_values(
    points: Iterable[PointEvent], thresholds: Mapping[str, Sequence[Threshold]]
) -> list[LatestValue]:
    """Each newest point judged against its indicator's thresholds, in the order given."""
    out = []
    for p in points:
        judgement, level, margin = judge(p.value, thresholds.get(p.indicator, ()), p.probe)
        out.append(
            LatestValue(
                indicator=p.indicator,
                probe=p.probe,
                step=p.step,
                value=p.value,
                judgement=judgement,
                threshold=level,
                margin=margin if math.isfinite(margin) else 1e308,
            )
        )
    return out


def worst_first(values: Iterable[LatestValue], direction: str = "") -> list[LatestValue]:
    """Worst judgement first, then furthest past its threshold, then (with the indicator's
    ``direction``) nearest to the bad end: the highest value when high is bad."""
    return sorted(
        values, key=lambda v: (JUDGEMENTS.index(v.judgement), -v.margin, -_badness(v, direction))
    )


def _badness(v: LatestValue, direction: str) -> float:
    if v.value is None or not math.isfinite(v.value):
        return math.inf
    if direction == "high_is_bad":
        return v.value
    return -v.value if direction == "low_is_bad" else 0.0


def worst_layers(values: Iterable[LatestValue], limit: int = 12) -> list[LatestValue]:
    """The layers past a threshold at their last point, worst first: the run page's table."""
    past = [v for v in values if v.judgement in ("critical", "warn", "info")]
    return worst_first(past)[:limit]


# -------------------------------------------------------------------------------- health


class StateCount(Protocol):
    """Alert states of one indicator at one state and rule severity (rows of the alert
    states repository)."""

    @property
    def indicator(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def severity(self) -> str: ...
    @property
    def count(self) -> int: ...


def family_health(
    counts: Iterable[StateCount], family_of: Mapping[str, str], families: Iterable[str] = ()
) -> list[FamilyHealth]:
    """Each family's worst alert state: firing (at its worst severity), else pending, else ok.

    ``families`` are listed even without any alert state (as ok); indicators missing from
    ``family_of`` (gone from the catalogue) are left out. Reading order of families.
    """
    firing: Counter[str] = Counter()
    pending: Counter[str] = Counter()
    worst: dict[str, HealthState] = {f: "ok" for f in families}
    for c in counts:
        family = family_of.get(c.indicator)
        if family is None:
            continue
        if c.state == "firing":
            firing[family] += c.count
            state: HealthState = c.severity if c.severity in HEALTH_STATES else "warning"  # type: ignore[assignment]
        elif c.state == "pending":
            pending[family] += c.count
            state = "pending"
        else:
            state = "ok"
        current = worst.get(family, "ok")
        worst[family] = min(current, state, key=HEALTH_STATES.index)
    return [
        FamilyHealth(
            family=f,
            title=family_title(f),
            state=worst[f],
            firing=firing[f],
            pending=pending[f],
        )
        for f in sorted(worst, key=family_order)
    ]


# --------------------------------------------------------------------------------- model


@dataclass(frozen=True)
class ModelSummary:
    """The header's one-line description of the watched model."""

    probes: int
    params: int
    modules: list[tuple[str, int]]  # module type and how many probes observe one, most first

    @property
    def params_text(self) -> str:
        return human_count(self.params)


def model_summary(probes: Sequence[ProbePublic]) -> ModelSummary:
    """Probe count, parameters and module types of a run's probes."""
    modules = Counter(p.module or p.kind.value for p in probes)
    return ModelSummary(
        probes=len(probes),
        params=sum(p.params for p in probes),
        modules=modules.most_common(),
    )


def human_count(n: int) -> str:
    """1234567 -> '1.23M': parameter counts as people say them."""
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= size:
            return f"{n / size:.3g}{suffix}"
    return str(n)


def highlighted(values: Sequence[LatestValue], direction: str, k: int) -> list[str]:
    """The ``k`` probes a crowded chart draws in colour: the worst against their thresholds,
    then the most extreme last values in the bad direction (the highest for informational
    indicators), so the layer that collapsed is never one of the grey lines."""

    # informational indicators have no bad end: their highest values stand out
    ranked = worst_first(values, direction if direction != "info" else "high_is_bad")
    return [v.probe for v in ranked[:k]]


def sampling_text(intervals: Sequence[SamplingInterval]) -> str:
    """How a run was sampled, for its header: "every 8, 16 from step 256, 32 from 512"."""
    if not intervals:
        return "\u2013"  # an en dash, as the other empty fields
    parts = [f"every {intervals[0].every}"]
    parts += [f"{i.every} from step {i.step}" for i in intervals[1:]]
    return ", ".join(parts)


def coverage_rows(coverage: Mapping[str, FamilyCoverage]) -> list[tuple[str, bool, str]]:
    """(family title, watched, what is watched or what to add), watched families first, each
    group in reading order."""
    order = {f: i for i, f in enumerate(FAMILY_TITLES)}
    rows = sorted(coverage.items(), key=lambda kv: (not kv[1].watched, order.get(kv[0], 99)))
    return [(family_title(f), c.watched, c.detail) for f, c in rows]


def most_different(
    newest: Sequence[Sequence[PointEvent]], order: Sequence[str], indicator: str | None = None
) -> tuple[str, str] | None:
    """The (indicator, probe) where runs differ most at their newest points, for a comparison
    to open on: the spread of the runs' values over the largest of them (so indicators of any
    scale compare), among series two runs or more have; ``indicator`` narrows it to one.
    Ties go to ``order`` (the catalogue's), then to the first probe seen. None when no series
    is shared."""
    values: dict[tuple[str, str], list[float]] = {}
    for run_points in newest:
        for p in run_points:
            if indicator is not None and p.indicator != indicator:
                continue
            if p.value is not None and math.isfinite(p.value):
                values.setdefault((p.indicator, p.probe), []).append(p.value)
    rank = {name: i for i, name in enumerate(order)}
    best: tuple[float, int, int] | None = None
    chosen: tuple[str, str] | None = None
    for seen, (key, vs) in enumerate(values.items()):
        if len(vs) < 2:
            continue
        scale = max(abs(v) for v in vs)
        spread = (max(vs) - min(vs)) / scale if scale > 0 else 0.0
        score = (-spread, rank.get(key[0], len(rank)), seen)
        if best is None or score < best:
            best, chosen = score, key
    return chosen
