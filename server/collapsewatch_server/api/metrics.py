"""``GET /metrics``: the process's counters and the database's queues for Prometheus,
protected like the read API (configure the scrape with the admin token as bearer token)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from collapsewatch_server.api.deps import ContextDep, ReadAuth

router = APIRouter(tags=["meta"], dependencies=[ReadAuth])


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
def metrics(ctx: ContextDep) -> Response:
    """Prometheus text format: ingest batches, records, bytes and latency, rejections by
    reason, points, rule evaluations, alert events, deliveries by outcome, outbox depth and
    oldest pending age, the ingest queue and the connection pool."""
    return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)
