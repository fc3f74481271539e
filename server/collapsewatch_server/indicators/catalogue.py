"""The indicator catalogue: pure numpy functions of stored statistics, with their metadata.

Each family module registers its indicators with :func:`indicator`; the server computes every
indicator that applies to a record's probe kind when the record arrives, and serves the
metadata at ``GET /api/v1/indicators``. A windowed indicator (``window=W``) reads the sum of
the statistics of its probe's last W records (this one included): counts over one sampled
batch over-count dead units, counts over a window of batches do not.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import numpy as np

from collapsewatch.schemas import ProbeKind
from collapsewatch_web.api_schemas.catalogue import IndicatorInfo, RelativeDefault

Stats = Mapping[str, "float | np.ndarray"]
Compute = Callable[[Stats], float | None]
F = TypeVar("F", bound=Compute)
#: The summed statistics of a probe's last ``w`` records, ending at the record being judged.
WindowStats = Callable[[int], Stats]
Direction = Literal["low_is_bad", "high_is_bad", "info"]


@dataclass(frozen=True)
class Indicator:
    """One indicator: how to compute it and how to read it."""

    name: str
    title: str
    family: str
    applies_to: ProbeKind
    direction: Direction
    compute: Compute
    meaning: str
    what_to_try: str
    warn: float | None = None
    critical: float | None = None
    unit: str = ""
    sources: tuple[str, ...] = field(default_factory=tuple)
    #: Defaults of this indicator's rule in the default pack: consecutive breaching points
    #: before firing, and steps ignored at the start (healthy runs cross thresholds early).
    pending_points: int = 3
    warmup_steps: int = 0
    #: Severity of the default rule; None: critical when ``critical`` is set, else warning.
    #: Conditions that are often wanted (neural collapse in the terminal phase) say "info".
    rule_severity: Literal["info", "warning", "critical"] | None = None
    #: Recovery (hysteresis) of the default rule, for statistics of one sampled batch that
    #: hover around the threshold; None: resolve as soon as a point no longer breaches.
    rule_recovery: float | None = None
    #: False: the default rule is created disabled (meaningful only for some networks).
    rule_enabled: bool = True
    #: A default relative to the run's own history (a drop from its peak, ...), for rule packs.
    relative: RelativeDefault | None = None
    #: Records whose statistics are summed before computing (1: this record alone).
    window: int = 1

    def info(self) -> IndicatorInfo:
        return IndicatorInfo(
            name=self.name,
            title=self.title,
            family=self.family,
            applies_to=self.applies_to,
            direction=self.direction,
            warn=self.warn,
            critical=self.critical,
            unit=self.unit,
            meaning=self.meaning,
            what_to_try=self.what_to_try,
            sources=list(self.sources),
            relative=self.relative,
            window=self.window,
        )


CATALOGUE: dict[str, Indicator] = {}


#: Kinds logged at evaluations (``log_tokens``, ``log_eval``, ``log_samples``, ``log_state``).
EVALUATION_KINDS = frozenset({ProbeKind.text, ProbeKind.eval, ProbeKind.samples, ProbeKind.state})


def indicator(
    name: str,
    *,
    title: str,
    family: str,
    applies_to: ProbeKind,
    direction: Direction,
    meaning: str,
    what_to_try: str,
    warn: float | None = None,
    critical: float | None = None,
    unit: str = "",
    sources: tuple[str, ...] = (),
    pending_points: int | None = None,
    warmup_steps: int = 0,
    rule_severity: Literal["info", "warning", "critical"] | None = None,
    rule_recovery: float | None = None,
    rule_enabled: bool = True,
    relative: RelativeDefault | None = None,
    window: int = 1,
) -> Callable[[F], F]:
    """Register the decorated function as an indicator (names are unique).

    ``pending_points`` (None: the default) is 1 for the evaluation loggers' kinds, whose every
    point is a whole evaluation and which users log a few times a run (a second point to
    confirm came 5-10% of the run late), and 3 for the training-step kinds: with 2, the tune
    half of the validation suite gained two false alarms in eight controls (a classifier's
    logits, a pruned layer near its threshold) for a delay 2% of the run shorter.
    """
    if pending_points is None:
        pending_points = 1 if applies_to in EVALUATION_KINDS else 3

    def register(fn: F) -> F:
        if name in CATALOGUE:
            raise ValueError(f"indicator {name!r} registered twice")
        CATALOGUE[name] = Indicator(
            name=name,
            title=title,
            family=family,
            applies_to=applies_to,
            direction=direction,
            compute=fn,
            meaning=meaning,
            what_to_try=what_to_try,
            warn=warn,
            critical=critical,
            unit=unit,
            sources=sources,
            pending_points=pending_points,
            warmup_steps=warmup_steps,
            rule_severity=rule_severity,
            rule_recovery=rule_recovery,
            rule_enabled=rule_enabled,
            relative=relative,
            window=window,
        )
        return fn

    return register


#: The indicators of each probe kind, by (kind, catalogue size): ingest asks for every record.
_OF_KIND: dict[tuple[ProbeKind, int], list[Indicator]] = {}


def of_kind(kind: ProbeKind) -> list[Indicator]:
    """The indicators that apply to a probe kind, in catalogue order."""
    key = (kind, len(CATALOGUE))
    found = _OF_KIND.get(key)
    if found is None:
        found = _OF_KIND[key] = [i for i in CATALOGUE.values() if i.applies_to == kind]
    return found


#: The longest window of each probe kind, by (kind, catalogue size): asked for every record.
_WINDOWS: dict[tuple[ProbeKind, int], int] = {}


def windows_needed(kind: ProbeKind) -> int:
    """The longest window of the indicators of this probe kind (1: no window)."""
    key = (kind, len(CATALOGUE))
    found = _WINDOWS.get(key)
    if found is None:
        found = _WINDOWS[key] = max((i.window for i in of_kind(kind)), default=1)
    return found


def compute_indicators(
    kind: ProbeKind, stats: Stats, window: WindowStats | None = None
) -> dict[str, float]:
    """Every applicable indicator of one record. Missing statistics skip an indicator; a value
    that cannot be computed (empty batch, diverged training) is NaN, which is itself a signal.

    ``window(w)`` gives the statistics windowed indicators read; without it they read this
    record's statistics alone.
    """
    out: dict[str, float] = {}
    for ind in of_kind(kind):
        try:
            value = ind.compute(window(ind.window) if window and ind.window > 1 else stats)
        except KeyError:
            continue
        except (ValueError, FloatingPointError, ZeroDivisionError, np.linalg.LinAlgError):
            value = math.nan
        if value is not None:
            out[ind.name] = float(value)
    return out
