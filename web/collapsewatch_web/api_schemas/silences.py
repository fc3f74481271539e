"""Silences of a project: events matching every set matcher between a start and an end are
recorded and shown, marked silenced, and not delivered (HTTP API v1)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, model_validator

from collapsewatch.schemas.bounds import Label, Text
from collapsewatch_web.api_schemas.alerts import Severity


class SilenceMatchers(BaseModel):
    """What a silence matches; an unset matcher matches everything."""

    run: Label | None = Field(default=None, max_length=256, description="run name glob")
    rule: Label | None = Field(default=None, max_length=128, description="rule name")
    indicator: Label | None = Field(default=None, max_length=64)
    probe: Label | None = Field(default=None, max_length=256, description="probe name glob")
    severity: Severity | None = None


class SilenceCreate(SilenceMatchers):
    """A new silence: from ``starts_at`` (default now) until ``ends_at``, or for
    ``duration_s`` seconds from its start."""

    model_config = ConfigDict(extra="forbid")

    starts_at: datetime | None = None
    ends_at: datetime | None = None
    duration_s: float | None = Field(default=None, gt=0, le=366 * 86400)
    comment: Text = Field(default="", max_length=2000)

    @model_validator(mode="after")
    def _one_end(self) -> SilenceCreate:
        if (self.ends_at is None) == (self.duration_s is None):
            raise ValueError("give exactly one of ends_at and duration_s")
        return self


class SilencePublic(SilenceMatchers):
    id: int
    project: str
    starts_at: datetime
    ends_at: datetime
    comment: str
    active: bool = Field(description="started and not yet ended")
    created_at: datetime
    silenced_events: int = Field(description="events it kept from being delivered")
