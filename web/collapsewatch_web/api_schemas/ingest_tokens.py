"""Ingest tokens of a project (``/api/v1/projects/{project}/tokens``): the secret a training
process sends, shown once when created and stored hashed."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from collapsewatch.schemas.bounds import Label


class TokenCreate(BaseModel):
    """Ask for a new ingest token of a project."""

    model_config = ConfigDict(extra="forbid")

    name: Label = Field(default="", max_length=128)


class TokenPublic(BaseModel):
    """An ingest token as listed: never the secret, only its first characters."""

    id: int
    project: str
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None = None


class TokenCreated(TokenPublic):
    """Answer to a token creation: the only time the secret is shown."""

    token: str
