"""The retention policy: raw statistic records (about 20 times the size of the indicator
points) older than ``raw_retention_days`` are deleted, in bounded batches, each its own short
transaction, so ingest never waits long behind it. Indicator points are kept."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from collapsewatch_server import errors
from collapsewatch_server.repositories import stat_records
from collapsewatch_server.services.context import ServiceContext

log = logging.getLogger("collapsewatch.retention")

#: Batches deleted per call; the worker calls again at its next scan.
MAX_BATCHES = 50


def prune_raw(ctx: ServiceContext, now: datetime) -> int:
    """Delete raw records older than the retention horizon, at most ``MAX_BATCHES`` batches
    of ``raw_retention_batch``; how many went (0 with no retention set)."""
    days = ctx.settings.raw_retention_days
    if days is None:
        return 0
    cutoff = now - timedelta(days=days)
    deleted = 0
    for _ in range(MAX_BATCHES):
        with ctx.db.write() as s:
            n = stat_records.delete_older(s, cutoff, ctx.settings.raw_retention_batch)
        deleted += n
        if n < ctx.settings.raw_retention_batch:
            break
    if deleted:
        ctx.metrics.raw_records_pruned.inc(deleted)
        log.info("retention: %d raw statistic records older than %g days deleted", deleted, days)
    return deleted


def note(ctx: ServiceContext) -> str | None:
    """What a reader of raw records should be told when retention deletes them."""
    days = ctx.settings.raw_retention_days
    return None if days is None else errors.RAW_RETENTION_NOTE.format(days=days)
