"""Operational metrics in the Prometheus text format (``GET /metrics``).

Counters and histograms are counted where things happen (ingest, processing, delivery) in
this process; the outbox, the ingest queue and the connection pool are read when Prometheus
scrapes, so they show the database as it stands, whichever process did the work. Each app has
its own registry: tests build many apps in one process.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from collapsewatch_server.db import Database
from collapsewatch_server.repositories import ingest_queue
from collapsewatch_server.tables import Delivery, utcnow

#: What a rejected ingest request is counted as, by its HTTP status (a 429 is ``busy`` when
#: the queue is deep, ``throttled`` after failed authentications: see ``rejected``).
REJECTION_REASONS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    409: "conflict",
    413: "too_large",
    422: "invalid",
    429: "busy",
}
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The counters of one server process, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.ingest_batches = self._counter(
            "collapsewatch_ingest_batches",
            "Ingest batches accepted (duplicate: a re-sent batch, acknowledged only).",
            "outcome",
        )
        self.ingest_records = self._counter(
            "collapsewatch_ingest_records", "Statistic records in accepted batches."
        )
        self.ingest_bytes = self._counter(
            "collapsewatch_ingest_bytes", "Bytes of accepted batches, uncompressed."
        )
        self.ingest_latency = Histogram(
            "collapsewatch_ingest_latency_seconds",
            "Time to answer an ingest request.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.ingest_rejected = self._counter(
            "collapsewatch_ingest_rejected", "Ingest requests refused, by reason.", "reason"
        )
        self.points = self._counter(
            "collapsewatch_points_stored", "Indicator points stored by processing."
        )
        self.batches_failed = self._counter(
            "collapsewatch_batches_failed", "Batch processing attempts that failed."
        )
        self.rule_evaluations = self._counter(
            "collapsewatch_rule_evaluations",
            "New points judged by alert rules (one per rule and point).",
        )
        self.alert_events = self._counter(
            "collapsewatch_alert_events", "Alert events raised, by status.", "status"
        )
        self.raw_records_pruned = self._counter(
            "collapsewatch_raw_records_pruned",
            "Raw statistic records deleted by the retention policy.",
        )
        self.deliveries = self._counter(
            "collapsewatch_webhook_deliveries",
            "Webhook delivery attempts, by the delivery's outcome (pending: will be retried).",
            "outcome",
        )

    def _counter(self, name: str, documentation: str, *labels: str) -> Counter:
        """A counter of this app's registry (an app's own: tests build many in one process)."""
        return Counter(name, documentation, labels, registry=self.registry)

    def watch_database(self, db: Database) -> None:
        """Read the outbox, the ingest queue and the pool of ``db`` at every scrape."""
        self.registry.register(_DatabaseCollector(db))

    def rejected(self, status_code: int, *, throttled: bool = False) -> None:
        """Count an ingest request refused with ``status_code``; ``throttled``: a 429 for
        failed authentications rather than a deep queue."""
        reason = "throttled" if throttled else REJECTION_REASONS.get(status_code, str(status_code))
        self.ingest_rejected.labels(reason).inc()


class _DatabaseCollector(Collector):
    """Gauges read at scrape time: the work waiting in the database and the pool's use."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[Metric]:
        with self.db.read() as s:
            pending, oldest = s.execute(
                select(func.count(), func.min(Delivery.created_at)).where(
                    Delivery.status.in_(("pending", "delivering"))
                )
            ).one()
            batches, records = ingest_queue.depth(s)
        yield GaugeMetricFamily(
            "collapsewatch_outbox_depth", "Webhook deliveries not sent yet.", value=pending
        )
        yield GaugeMetricFamily(
            "collapsewatch_outbox_oldest_pending_age_seconds",
            "Age of the oldest delivery not sent yet (0 when none).",
            value=_age(oldest),
        )
        yield GaugeMetricFamily(
            "collapsewatch_ingest_queue_batches", "Accepted batches not processed yet.", batches
        )
        yield GaugeMetricFamily(
            "collapsewatch_ingest_queue_records", "Records of those batches.", records
        )
        pool = self.db.engine.pool
        in_use = GaugeMetricFamily(
            "collapsewatch_db_pool_connections",
            "Database connections of this process's pool, by state.",
            labels=["state"],
        )
        checked_out = getattr(pool, "checkedout", None)
        checked_in = getattr(pool, "checkedin", None)
        if callable(checked_out) and callable(checked_in):
            in_use.add_metric(["in_use"], float(checked_out()))
            in_use.add_metric(["idle"], float(checked_in()))
        yield in_use
        size = getattr(pool, "size", None)
        yield GaugeMetricFamily(
            "collapsewatch_db_pool_size",
            "Connections the pool keeps (0 when it keeps no fixed number).",
            value=float(size()) if callable(size) else 0.0,
        )


def _age(oldest: datetime | None) -> float:
    if oldest is None:
        return 0.0
    if oldest.tzinfo is None:  # SQLite's naive timestamps are UTC
        oldest = oldest.replace(tzinfo=UTC)
    return max(0.0, (utcnow() - oldest).total_seconds())
