"""Tables (SQLAlchemy 2 typed mappings). Alembic migrations own the schema; these mirror it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

#: SQLite only auto-increments INTEGER PRIMARY KEY; Postgres gets a real bigint.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both backends (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON}


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class IngestToken(Base):
    """A project's ingest token; only its SHA-256 is kept (tokens are 256-bit random)."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(128), default="")
    prefix: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), default="running")
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    host: Mapped[str] = mapped_column(String(256), default="")
    torch_version: Mapped[str] = mapped_column(String(64), default="")
    sdk_version: Mapped[str] = mapped_column(String(64), default="")
    started_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    last_step: Mapped[int | None] = mapped_column(BigInteger, default=None)
    #: Set when the run's nodata event was raised (claimed atomically); cleared by new data.
    stalled_notified_at: Mapped[datetime | None] = mapped_column(default=None)
    #: By collapse family, as the SDK last said: {"watched": bool, "detail": str}.
    coverage: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    #: The SDK's sampling interval as it changed: [[first step seen with it, every], ...].
    sampling: Mapped[list[Any]] = mapped_column(JSON, default=list, server_default="[]")

    __table_args__ = (Index("ix_runs_project_started", "project_id", "started_at"),)


class RunTag(Base):
    """A tag of a run (``watch(tags=[...])`` or the dashboard): the runs list filters on it."""

    __tablename__ = "run_tags"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)


class Probe(Base):
    __tablename__ = "probes"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(256))
    kind: Mapped[str] = mapped_column(String(32))
    module: Mapped[str] = mapped_column(String(128), default="")
    order: Mapped[int] = mapped_column(Integer, default=0)
    width: Mapped[int | None] = mapped_column(default=None)
    params: Mapped[int] = mapped_column(BigInteger, default=0)

    __table_args__ = (UniqueConstraint("run_id", "name", name="uq_probes_run_name"),)


class IngestedBatch(Base):
    """Batch ids already stored: a repeated batch is acknowledged and not stored again."""

    __tablename__ = "ingested_batches"

    batch_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    records: Mapped[int] = mapped_column(Integer, default=0)
    #: SHA-256 of the batch's content (all but ``sent_at``): the same id with other content is
    #: a conflict, not a duplicate. None for batches stored before it was kept.
    content_hash: Mapped[str | None] = mapped_column(String(64), default=None)


class QueuedBatch(Base):
    """A batch accepted and not yet processed: its validated JSON, gzipped. The processors of
    every server process claim the oldest batch of a run that nobody holds (a lease), compute
    its indicators and rules, store the results and delete the row, in one transaction."""

    __tablename__ = "ingest_queue"

    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(String(36), unique=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    #: what processing it costs, in records (``IngestBatch.load``: a column's values weigh
    #: little): the queue's depth and a claim's size are counted in these
    records: Mapped[int] = mapped_column(Integer, default=0)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: Claimed by a processor until then; a crashed processor's claim expires.
    lease_until: Mapped[datetime | None] = mapped_column(default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    #: Set when processing failed too often: kept for the operator, skipped by the processors.
    failed_at: Mapped[datetime | None] = mapped_column(default=None)
    error: Mapped[str | None] = mapped_column(String(2000), default=None)

    __table_args__ = (Index("ix_ingest_queue_run_seq", "run_id", "seq"),)


class StatRecordRow(Base):
    """Raw statistics of a probe at a step (codec.encode_stats): indicators can be recomputed."""

    __tablename__ = "stat_records"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    probe_id: Mapped[int] = mapped_column(ForeignKey("probes.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(BigInteger)
    stats: Mapped[bytes] = mapped_column(LargeBinary)
    #: When it was stored: retention deletes records older than its horizon. None for
    #: records stored before this was kept (their run's last data stands in for it).
    received_at: Mapped[datetime | None] = mapped_column(default=None, index=True)

    __table_args__ = (Index("ix_stat_records_probe_step", "probe_id", "step"),)


class Series(Base):
    __tablename__ = "series"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    probe_id: Mapped[int] = mapped_column(ForeignKey("probes.id", ondelete="CASCADE"))
    indicator: Mapped[str] = mapped_column(String(64))
    # Counters kept as points are stored, so listings never count points.
    points: Mapped[int] = mapped_column(BigInteger, default=0)
    first_step: Mapped[int | None] = mapped_column(BigInteger, default=None)
    last_step: Mapped[int | None] = mapped_column(BigInteger, default=None)
    last_value: Mapped[float | None] = mapped_column(Float, default=None)
    # The rollup levels but the finest hold the points before this step (``rollups``).
    coarse_until: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")

    __table_args__ = (
        UniqueConstraint("run_id", "probe_id", "indicator", name="uq_series_run_probe_indicator"),
    )


class Point(Base):
    """An indicator value, or a block of a series' values at consecutive stored steps (a
    scalar column as it came, see ``codec.pack_points``): then ``step`` and ``value`` are the
    block's first, ``last_step`` its last, and ``packed`` holds all of them. ``id`` grows with
    arrival, so live pages ask for ids above a cursor."""

    __tablename__ = "points"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(BigInteger)
    value: Mapped[float | None] = mapped_column(Float, default=None)
    last_step: Mapped[int | None] = mapped_column(BigInteger, default=None)
    packed: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)

    __table_args__ = (
        UniqueConstraint("series_id", "step", name="uq_points_series_step"),
        # a series' blocks by their last step: which series have blocks (read before a
        # series' points are aggregated), and the blocks reaching into a range of steps
        Index(
            "ix_points_blocks",
            "series_id",
            "last_step",
            sqlite_where=text("packed IS NOT NULL"),
            postgresql_where=text("packed IS NOT NULL"),
        ),
    )


class PointRollup(Base):
    """A series' points in one step bin of one resolution (``rollups.LEVELS``): count,
    extremes with their steps, and the newest value. Charts of long series read these."""

    __tablename__ = "point_rollups"

    series_id: Mapped[int] = mapped_column(
        ForeignKey("series.id", ondelete="CASCADE"), primary_key=True
    )
    level: Mapped[int] = mapped_column(Integer, primary_key=True)
    bin: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)
    nonfinite: Mapped[int] = mapped_column(BigInteger)
    first_step: Mapped[int] = mapped_column(BigInteger)
    last_step: Mapped[int] = mapped_column(BigInteger)
    last: Mapped[float | None] = mapped_column(Float)
    low: Mapped[float | None] = mapped_column(Float)
    low_step: Mapped[int | None] = mapped_column(BigInteger)
    high: Mapped[float | None] = mapped_column(Float)
    high_step: Mapped[int | None] = mapped_column(BigInteger)


class Rule(Base):
    """An alert rule of a project (semantics: ``collapsewatch_web.api_schemas.alerts``)."""

    __tablename__ = "rules"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    description: Mapped[str] = mapped_column(String(2000), default="")
    indicator: Mapped[str] = mapped_column(String(64))
    probe_glob: Mapped[str] = mapped_column(String(256), default="*")
    run_glob: Mapped[str | None] = mapped_column(String(256), default=None)
    condition: Mapped[str] = mapped_column(String(16))
    threshold: Mapped[float | None] = mapped_column(Float, default=None)
    low: Mapped[float | None] = mapped_column(Float, default=None)
    high: Mapped[float | None] = mapped_column(Float, default=None)
    percent: Mapped[float | None] = mapped_column(Float, default=None)
    reference: Mapped[str] = mapped_column(String(16), default="peak")
    baseline_points: Mapped[int] = mapped_column(Integer, default=5)
    pending_points: Mapped[int | None] = mapped_column(Integer, default=None)
    pending_steps: Mapped[int | None] = mapped_column(BigInteger, default=None)
    recovery: Mapped[float | None] = mapped_column(Float, default=None)
    warmup_steps: Mapped[int] = mapped_column(BigInteger, default=0)
    severity: Mapped[str] = mapped_column(String(16), default="warning")
    repeat_interval_s: Mapped[float | None] = mapped_column(Float, default=None)
    enabled: Mapped[bool] = mapped_column(default=True)
    is_default: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("project_id", "name", name="uq_rules_project_name"),)


class AlertStateRow(Base):
    """Where one (rule, run, probe) stands; survives restarts because it lives here."""

    __tablename__ = "alert_states"

    id: Mapped[int] = mapped_column(primary_key=True)
    rule_id: Mapped[int] = mapped_column(ForeignKey("rules.id", ondelete="CASCADE"))
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    probe_id: Mapped[int] = mapped_column(ForeignKey("probes.id", ondelete="CASCADE"))
    state: Mapped[str] = mapped_column(String(16), default="normal")
    breach_count: Mapped[int] = mapped_column(Integer, default=0)
    breach_start_step: Mapped[int | None] = mapped_column(BigInteger, default=None)
    last_step: Mapped[int | None] = mapped_column(BigInteger, default=None)
    last_value: Mapped[float | None] = mapped_column(Float, default=None)
    peak: Mapped[float | None] = mapped_column(Float, default=None)
    trough: Mapped[float | None] = mapped_column(Float, default=None)
    baseline_sum: Mapped[float] = mapped_column(Float, default=0.0)
    baseline_count: Mapped[int] = mapped_column(Integer, default=0)
    since: Mapped[datetime | None] = mapped_column(default=None)
    last_notified_at: Mapped[datetime | None] = mapped_column(default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        UniqueConstraint("rule_id", "run_id", "probe_id", name="uq_alert_states_rule_run_probe"),
    )


class AlertEvent(Base):
    """A state change worth telling someone about; its deliveries are written with it."""

    __tablename__ = "alert_events"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    rule_id: Mapped[int | None] = mapped_column(
        ForeignKey("rules.id", ondelete="SET NULL"), default=None
    )
    rule_name: Mapped[str | None] = mapped_column(String(128), default=None)
    probe: Mapped[str | None] = mapped_column(String(256), default=None)
    indicator: Mapped[str | None] = mapped_column(String(64), default=None)
    status: Mapped[str] = mapped_column(String(16))
    severity: Mapped[str] = mapped_column(String(16))
    value: Mapped[float | None] = mapped_column(Float, default=None)
    threshold: Mapped[float | None] = mapped_column(Float, default=None)
    step: Mapped[int | None] = mapped_column(BigInteger, default=None)
    reminder: Mapped[bool] = mapped_column(default=False)
    message: Mapped[str] = mapped_column(String(2000), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: The silence that kept this event from being delivered (None: not silenced).
    silence_id: Mapped[int | None] = mapped_column(
        ForeignKey("silences.id", ondelete="SET NULL"), default=None
    )

    __table_args__ = (Index("ix_alert_events_project_created", "project_id", "created_at"),)


class Webhook(Base):
    """A receiver of a project's alert events. The secret signs deliveries, so it is kept."""

    __tablename__ = "webhooks"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(128), default="")
    url: Mapped[str] = mapped_column(String(2048))
    format: Mapped[str] = mapped_column(String(16), default="generic")
    severities: Mapped[list[str]] = mapped_column(JSON, default=list)
    secret: Mapped[str] = mapped_column(String(256))
    #: PagerDuty's integration (routing) key; None for the other formats.
    routing_key: Mapped[str | None] = mapped_column(String(64), default=None)
    enabled: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Delivery(Base):
    """The outbox: one notification to one webhook, carrying a group of alert events (its
    members, :class:`DeliveryEvent`) that share a group key. Written in the transaction of its
    first event; later events of the same key join it until it is sealed (first claimed)."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    #: The notification's id: the ``webhook-id`` receivers deduplicate on (kept over retries).
    uid: Mapped[str] = mapped_column(String(36), unique=True)
    webhook_id: Mapped[int] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    #: What its events have in common (``collapsewatch_server.notify.grouping``).
    group_key: Mapped[str] = mapped_column(String(512))
    #: Set when first claimed: from then on no event joins and the content stays the same.
    sealed_at: Mapped[datetime | None] = mapped_column(default=None)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: A claimed delivery is someone's until then; a crashed sender's claim expires.
    lease_until: Mapped[datetime | None] = mapped_column(default=None)
    last_status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    last_error: Mapped[str | None] = mapped_column(String(2000), default=None)
    last_latency_ms: Mapped[float | None] = mapped_column(Float, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(default=None)

    __table_args__ = (
        Index("ix_deliveries_due", "status", "next_attempt_at"),
        Index("ix_deliveries_webhook_group", "webhook_id", "group_key"),
    )


class DeliveryEvent(Base):
    """An event carried by a delivery; an event goes to a webhook in one delivery only."""

    __tablename__ = "delivery_events"

    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("deliveries.id", ondelete="CASCADE"), primary_key=True
    )
    event_id: Mapped[str] = mapped_column(
        ForeignKey("alert_events.id", ondelete="CASCADE"), primary_key=True
    )
    webhook_id: Mapped[int] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))

    __table_args__ = (
        UniqueConstraint("webhook_id", "event_id", name="uq_delivery_events_webhook_event"),
        Index("ix_delivery_events_event", "event_id"),
    )


class Silence(Base):
    """Events matching every set matcher between ``starts_at`` and ``ends_at`` are recorded
    (marked with the silence) and not delivered."""

    __tablename__ = "silences"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    run_glob: Mapped[str | None] = mapped_column(String(256), default=None)
    rule: Mapped[str | None] = mapped_column(String(128), default=None)
    indicator: Mapped[str | None] = mapped_column(String(64), default=None)
    probe_glob: Mapped[str | None] = mapped_column(String(256), default=None)
    severity: Mapped[str | None] = mapped_column(String(16), default=None)
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime]
    comment: Mapped[str] = mapped_column(String(2000), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DeliveryAttempt(Base):
    """The delivery log: every attempt with what the receiver said."""

    __tablename__ = "delivery_attempts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("deliveries.id", ondelete="CASCADE"), index=True
    )
    attempted_at: Mapped[datetime] = mapped_column(default=utcnow)
    status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    latency_ms: Mapped[float | None] = mapped_column(Float, default=None)
    error: Mapped[str | None] = mapped_column(String(2000), default=None)
