"""Alert rules, alert events and alert states (HTTP API v1), and the two judgements every
layer shares: which names a rule's glob watches (:func:`glob_matches`) and whether a value
breaches a level (:func:`breaches`). The alert engine, the back-test and the dashboards call
these; nothing else decides either.

Rule semantics follow Grafana's alerting: a condition on each new point of the selected
series, a pending period before firing, an optional recovery threshold (hysteresis), a repeat
interval for reminders; a running run that goes silent raises a ``nodata`` event.
"""

from __future__ import annotations

import math
import uuid
from datetime import datetime
from enum import StrEnum
from fnmatch import fnmatchcase
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from collapsewatch.schemas.bounds import MAX_INT32, NAME_CHARS, Label, Step, Text

#: Messages of rule validation, reused by tests.
RULE_NEEDS_THRESHOLD = "condition {condition!r} needs 'threshold'"
RULE_NEEDS_BAND = "condition 'outside' needs 'low' and 'high'"
RULE_BAND_ORDER = "'low' must not be greater than 'high'"
RULE_NEEDS_PERCENT = "condition {condition!r} needs 'percent'"
RULE_ONE_PENDING = "set 'pending_points' or 'pending_steps', not both"
RULE_RECOVERY_SIDE = "'recovery' must be on the healthy side of 'threshold' for {condition!r}"
RULE_RECOVERY_BAND = "'recovery' does not apply to 'outside': a band has no single healthy side"

Glob = Annotated[
    str, Field(min_length=1, max_length=256, description="fnmatch pattern"), NAME_CHARS
]
RuleName = Annotated[str, Field(min_length=1, max_length=128), NAME_CHARS]
#: The side of a level where values are bad.
Side = Literal["above", "below"]


def glob_matches(name: str, glob: str | None) -> bool:
    """Whether a rule (or a threshold) with this glob watches the probe or run ``name``:
    ``glob`` is a case-sensitive fnmatch pattern; None (a rule without a run glob) watches
    every name."""
    return glob is None or fnmatchcase(name, glob)


def breaches(value: float | None, level: float, side: Side) -> bool:
    """Whether ``value`` is past ``level`` on its bad ``side``, strictly (a value equal to the
    level is not). A missing, NaN or infinite value breaches every level: a statistic that
    diverged is alarming."""
    if value is None or not math.isfinite(value):
        return True
    return value > level if side == "above" else value < level


class Severity(StrEnum):
    info = "info"
    warning = "warning"
    critical = "critical"


class Condition(StrEnum):
    """``above``/``below`` a threshold, ``outside`` a band, or a relative ``drop``/``rise`` of
    ``percent`` from the run's own reference (its peak/trough, or the mean of its first points)."""

    above = "above"
    below = "below"
    outside = "outside"
    drop = "drop"
    rise = "rise"


def bad_side(condition: Condition) -> Side:
    """The side of its level where a one-sided condition's values are bad: above for ``above``
    and ``rise``, below for ``below`` and ``drop``. ``outside`` has two (its band's edges), so
    it has none here: callers judge a band edge by edge."""
    if condition == Condition.outside:
        raise ValueError("'outside' is bad on both sides of its band")
    return "above" if condition in (Condition.above, Condition.rise) else "below"


class Reference(StrEnum):
    peak = "peak"  # drop: from the highest value so far; rise: from the lowest
    baseline = "baseline"  # the mean of the first ``baseline_points`` points


class AlertState(StrEnum):
    normal = "normal"
    pending = "pending"
    firing = "firing"
    resolved = "resolved"


class EventStatus(StrEnum):
    firing = "firing"
    resolved = "resolved"
    nodata = "nodata"


class _RuleFields(BaseModel):
    """Every field of a rule with its default; shared by create and public."""

    model_config = ConfigDict(extra="forbid")

    name: RuleName
    description: Text = Field(default="", max_length=2000)
    indicator: Label = Field(min_length=1, max_length=64)
    probe: Glob = Field(default="*", description="probe (layer) name glob")
    run: Glob | None = Field(default=None, description="run name glob; none: every run")
    condition: Condition
    threshold: float | None = None
    low: float | None = None
    high: float | None = None
    percent: float | None = Field(default=None, gt=0, le=10_000)
    reference: Reference = Reference.peak
    baseline_points: int = Field(default=5, ge=1, le=100_000)
    pending_points: int | None = Field(
        default=None, ge=1, le=MAX_INT32, description="consecutive breaching points before firing"
    )
    pending_steps: Step | None = Field(
        default=None, description="steps the breach must last before firing"
    )
    recovery: float | None = Field(
        default=None, description="resolve only past this value (hysteresis); default threshold"
    )
    warmup_steps: Step = Field(default=0, description="points before this step are ignored")
    severity: Severity = Severity.warning
    repeat_interval_s: float | None = Field(
        default=None, gt=0, description="remind while firing, at most this often"
    )
    enabled: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        c = self.condition
        if c in (Condition.above, Condition.below) and self.threshold is None:
            raise ValueError(RULE_NEEDS_THRESHOLD.format(condition=c.value))
        if c == Condition.outside:
            if self.low is None or self.high is None:
                raise ValueError(RULE_NEEDS_BAND)
            if self.low > self.high:
                raise ValueError(RULE_BAND_ORDER)
        if c in (Condition.drop, Condition.rise) and self.percent is None:
            raise ValueError(RULE_NEEDS_PERCENT.format(condition=c.value))
        if self.pending_points is not None and self.pending_steps is not None:
            raise ValueError(RULE_ONE_PENDING)
        if self.recovery is not None and self.threshold is not None:
            wrong = (c == Condition.above and self.recovery > self.threshold) or (
                c == Condition.below and self.recovery < self.threshold
            )
            if wrong:
                raise ValueError(RULE_RECOVERY_SIDE.format(condition=c.value))
        if c == Condition.outside and self.recovery is not None:
            raise ValueError(RULE_RECOVERY_BAND)
        return self


class RuleCreate(_RuleFields):
    """A new rule of a project (``POST /api/v1/projects/{project}/rules``)."""


class RuleUpdate(BaseModel):
    """A partial update (``PUT .../rules/{id}``): given fields replace, the rest stay."""

    model_config = ConfigDict(extra="forbid")

    name: RuleName | None = None
    description: Text | None = Field(default=None, max_length=2000)
    indicator: Label | None = Field(default=None, min_length=1, max_length=64)
    probe: Glob | None = None
    run: Glob | None = None
    condition: Condition | None = None
    threshold: float | None = None
    low: float | None = None
    high: float | None = None
    percent: float | None = Field(default=None, gt=0, le=10_000)
    reference: Reference | None = None
    baseline_points: int | None = Field(default=None, ge=1, le=100_000)
    pending_points: int | None = Field(default=None, ge=1, le=MAX_INT32)
    pending_steps: Step | None = None
    recovery: float | None = None
    warmup_steps: Step | None = None
    severity: Severity | None = None
    repeat_interval_s: float | None = Field(default=None, gt=0)
    enabled: bool | None = None


class RulePublic(_RuleFields):
    model_config = ConfigDict(extra="ignore")

    id: int
    project: str
    is_default: bool = False
    created_at: datetime
    updated_at: datetime


class AlertEventPublic(BaseModel):
    """One alert event: a rule started firing, resolved, reminded, or a run went silent."""

    id: uuid.UUID
    project: str
    run_id: uuid.UUID
    run_name: str
    rule_id: int | None = None
    rule_name: str | None = None
    status: EventStatus
    severity: Severity
    indicator: str | None = None
    probe: str | None = None
    value: float | None = None
    threshold: float | None = None
    step: int | None = None
    reminder: bool = False
    message: str = ""
    created_at: datetime
    url: str = Field(description="the run's dashboard page at that step")
    silence_id: int | None = Field(
        default=None, description="the silence that kept it from being delivered"
    )


class AlertStatePublic(BaseModel):
    """Where one (rule, run, probe) stands now."""

    rule_id: int
    rule_name: str
    run_id: uuid.UUID
    probe: str
    state: AlertState
    severity: Severity
    last_step: int | None = None
    last_value: float | None = None
    since: datetime | None = None
