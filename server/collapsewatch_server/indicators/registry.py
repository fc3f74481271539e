"""The indicator catalogue: pure numpy functions of stored statistics, with their metadata.

Each family module registers its indicators with :func:`indicator`; the server computes every
indicator that applies to a record's probe kind when the record arrives, and serves the
metadata at ``GET /api/v1/indicators``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from collapsewatch.schemas import IndicatorInfo, ProbeKind

Stats = Mapping[str, "float | np.ndarray"]
Compute = Callable[[Stats], float | None]
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
        )


CATALOGUE: dict[str, Indicator] = {}


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
    pending_points: int = 3,
    warmup_steps: int = 0,
    rule_severity: Literal["info", "warning", "critical"] | None = None,
) -> Callable[[Compute], Compute]:
    """Register the decorated function as an indicator (names are unique)."""

    def register(fn: Compute) -> Compute:
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
        )
        return fn

    return register


def compute_indicators(kind: ProbeKind, stats: Stats) -> dict[str, float]:
    """Every applicable indicator of one record. Missing statistics skip an indicator; a value
    that cannot be computed (empty batch, diverged training) is NaN, which is itself a signal."""
    out: dict[str, float] = {}
    for ind in CATALOGUE.values():
        if ind.applies_to != kind:
            continue
        try:
            value = ind.compute(stats)
        except KeyError:
            continue
        except (ValueError, FloatingPointError, ZeroDivisionError, np.linalg.LinAlgError):
            value = math.nan
        if value is not None:
            out[ind.name] = float(value)
    return out
