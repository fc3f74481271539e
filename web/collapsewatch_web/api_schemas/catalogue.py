"""The indicator catalogue as the API serves it (``GET /api/v1/indicators``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from collapsewatch.schemas import ProbeKind


class RelativeDefault(BaseModel):
    """A default threshold relative to the run's own history: a ``drop`` (``rise``) of more
    than ``percent`` from the run's ``peak`` (trough) or ``baseline`` (its first points)."""

    condition: Literal["drop", "rise"]
    percent: float
    reference: Literal["peak", "baseline"] = "peak"
    baseline_points: int = Field(default=5, ge=1, description="points averaged as the baseline")
    enabled: bool = Field(
        default=False,
        description="whether the default pack's rule ships enabled: only where healthy "
        "training does not move the indicator far from its reference",
    )


class IndicatorInfo(BaseModel):
    """Catalogue entry of an indicator (``GET /api/v1/indicators``)."""

    name: str
    title: str
    family: str
    applies_to: ProbeKind
    direction: Literal["low_is_bad", "high_is_bad", "info"]
    warn: float | None = None
    critical: float | None = None
    unit: str = ""
    meaning: str
    what_to_try: str
    sources: list[str] = Field(default_factory=list)
    relative: RelativeDefault | None = Field(
        default=None, description="default relative to the run's history, besides warn/critical"
    )
    window: int = Field(
        default=1, description="computed on the summed statistics of the probe's last N records"
    )
