"""Typed server settings, read from ``COLLAPSEWATCH_*`` environment variables."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: What the events of one notification can be made to share.
GroupLabel = Literal["run", "family", "rule", "probe", "severity"]


def default_db_url() -> str:
    """A SQLite file in the user's data directory: works with nothing configured."""
    path = Path.home() / ".local" / "share" / "collapsewatch" / "collapsewatch.db"
    return f"sqlite:///{path}"


class Settings(BaseSettings):
    """Everything the server can be told. Defaults run locally with nothing set."""

    model_config = SettingsConfigDict(env_prefix="COLLAPSEWATCH_", extra="ignore")

    db_url: str = Field(default_factory=default_db_url, description="SQLAlchemy URL")
    host: str = "127.0.0.1"
    port: int = Field(default=8420, ge=0, le=65535)
    admin_token: SecretStr | None = Field(
        default=None, description="when set, reads need it; ingest needs it or a project token"
    )
    public_url: str | None = Field(
        default=None, description="base URL of the dashboard in links (webhooks); default host:port"
    )
    allowed_hosts: str = Field(
        default="",
        description="comma-separated Host names served besides loopback ones, the bind address "
        "and public_url's host ('*': any); checked without admin token, and always when set",
    )
    auth_free_failures: int = Field(
        default=10, ge=1, description="failed authentications of an address before throttling"
    )
    auth_max_block_s: float = Field(
        default=300.0, gt=0, description="longest block of an address after failed authentications"
    )
    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024, description="after gunzip")
    stalled_after_s: float = Field(default=300.0, gt=0, description="running run silent -> stalled")
    sse_poll_s: float = Field(default=1.0, gt=0, description="how often live pages look for points")
    db_echo: bool = False

    # ingest: accepted at once, processed by every server process's processor
    ingest_queue_max_records: int = Field(
        default=200_000, ge=1, description="records waiting above which ingest answers 429"
    )
    ingest_retry_after_s: int = Field(
        default=2, ge=1, description="Retry-After of a 429 for a deep queue"
    )
    ingest_wait_s: float = Field(
        default=0.5,
        ge=0,
        description="when nothing else waits, the answer waits this long for the batch's points",
    )
    ingest_poll_s: float = Field(
        default=0.5, gt=0, description="queue poll when not woken (other processes' batches)"
    )
    ingest_lease_s: float = Field(
        default=120.0, gt=0, description="a processor's hold on a batch; a dead one's expires"
    )
    ingest_claim_records: int = Field(
        default=1000,
        ge=1,
        description="records a processor takes at once from a run's queued batches (a deep "
        "queue is worked through in fewer, larger transactions)",
    )
    ingest_max_attempts: int = Field(
        default=3, ge=1, description="processing attempts before a batch is set aside"
    )

    # retention
    raw_retention_days: float | None = Field(
        default=None,
        gt=0,
        description="delete raw statistic records older than this (indicator points are kept)",
    )
    raw_retention_batch: int = Field(
        default=5000, ge=1, description="raw records deleted per transaction"
    )

    # alerts and webhooks
    worker: bool = Field(default=True, description="run the deliverer and the stall scanner")
    worker_poll_s: float = Field(default=0.5, gt=0, description="outbox poll when not woken")
    webhook_timeout_s: float = Field(default=5.0, gt=0, description="one delivery attempt")
    webhook_retry_horizon_s: float = Field(
        default=6 * 3600.0, gt=0, description="keep retrying a delivery this long"
    )
    webhook_allow_private: bool = Field(
        default=False, description="allow webhook targets in private networks (10/8, ...)"
    )
    webhook_backoff_base_s: float = Field(
        default=1.0, gt=0, description="first retry delay; doubles per attempt (full jitter)"
    )
    webhook_backoff_max_s: float = Field(
        default=30.0,
        gt=0,
        description="longest retry delay (a recovered receiver gets its backlog at once anyway)",
    )
    webhook_release_per_s: float = Field(
        default=20.0,
        gt=0,
        description="deliveries per second released to a receiver that answers again",
    )
    notify_group_by: list[GroupLabel] = Field(
        default_factory=lambda: list[GroupLabel](["run", "family"]),
        description="what the events of one notification share (besides their status)",
    )
    notify_group_wait_s: float = Field(
        default=10.0, ge=0, description="a new group waits this long for more events"
    )
    notify_group_interval_s: float = Field(
        default=60.0, ge=0, description="least time between two notifications of one group"
    )
    smtp_host: str | None = Field(default=None, description="mail server of email receivers")
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_from: str = Field(default="collapsewatch@localhost", description="From: of alert mail")
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = Field(default=False, description="STARTTLS before logging in")
    webhook_concurrency: int = Field(
        default=16, ge=1, le=1024, description="deliveries in flight per server process"
    )

    @field_validator("admin_token", mode="before")
    @classmethod
    def _empty_token_is_none(cls, value: object) -> object:
        # COLLAPSEWATCH_ADMIN_TOKEN= (empty) means "no token", not "the empty token"
        return None if value in ("", None) else value

    @property
    def allowed_host_names(self) -> tuple[str, ...]:
        """``allowed_hosts`` split at commas, blanks dropped."""
        return tuple(h.strip() for h in self.allowed_hosts.split(",") if h.strip())

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``: the only addresses served without a token."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
