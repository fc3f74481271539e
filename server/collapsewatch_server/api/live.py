"""``GET /api/v1/runs/{run_id}/events``: Server-Sent Events with new points (judged against
the thresholds in force), run changes and alert events.

Server processes keep no state, so each stream polls the database for point ids above its
cursor; the cursor doubles as the SSE event id, so a reconnecting browser resumes where it
stopped.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from collapsewatch.schemas.bounds import MAX_INT64
from collapsewatch_server import errors
from collapsewatch_server.api.deps import ContextDep, ReadAuth
from collapsewatch_server.services import alerts, live, runs
from collapsewatch_server.services.context import ServiceContext
from collapsewatch_web.api_schemas.alerts import AlertEventPublic
from collapsewatch_web.api_schemas.charts import Threshold

router = APIRouter(prefix="/api/v1", tags=["live"], dependencies=[ReadAuth])

HEARTBEAT_S = 15.0
#: How far before the newest alert event seen a stream looks again (clock skew between server
#: processes, and events committed a little after their timestamp).
ALERT_OVERLAP = timedelta(seconds=30)


def _sse(event: str, data: object, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


class _AlertCursor:
    """Which alert events a stream has sent. Event ids are random and clocks of several server
    processes differ a little, so the stream re-reads a window before the newest event it has
    seen and skips ids it already sent."""

    def __init__(self, since: datetime) -> None:
        self.since = since
        self.sent: dict[uuid.UUID, datetime] = {}

    def fresh(self, events: list[AlertEventPublic]) -> list[AlertEventPublic]:
        out = [e for e in events if e.id not in self.sent]
        for e in out:
            self.sent[e.id] = e.created_at
        if self.sent:
            newest = max(self.sent.values())
            self.since = max(self.since, newest - ALERT_OVERLAP)
            self.sent = {k: t for k, t in self.sent.items() if t >= self.since}
        return out


async def _stream(
    request: Request,
    ctx: ServiceContext,
    run_id: uuid.UUID,
    cursor: int,
    thresholds: dict[str, list[Threshold]],
    sent: _AlertCursor,
) -> AsyncIterator[str]:
    yield "retry: 2000\n\n"
    state = None
    quiet = 0.0
    poll_s = ctx.settings.sse_poll_s
    try:
        while not await request.is_disconnected():
            events, new_cursor = await run_in_threadpool(
                live.judged_points_since, ctx, run_id, cursor, thresholds
            )
            if events:
                payload = {"points": [e.model_dump() for e in events]}
                yield _sse("points", payload, new_cursor)
                cursor = new_cursor
                quiet = 0.0
            # no id: an alert must not move the points' resume cursor (Last-Event-ID)
            recent = await run_in_threadpool(alerts.alerts_since, ctx, run_id, sent.since)
            fired = sent.fresh(recent)
            if fired:
                yield _sse("alert", {"alerts": [e.model_dump(mode="json") for e in fired]})
                quiet = 0.0
            status, last_step = await run_in_threadpool(runs.run_state, ctx, run_id)
            if (status, last_step) != state:
                state = (status, last_step)
                yield _sse("run", {"status": status.value, "last_step": last_step})
            if events and len(events) >= 5000:
                continue  # more are waiting: do not sleep
            if quiet >= HEARTBEAT_S:
                yield ": keep-alive\n\n"
                quiet = 0.0
            await asyncio.sleep(poll_s)
            quiet += poll_s
    except errors.NotFound:
        # the run was deleted while watched: end the stream cleanly (a reconnect gets 404)
        return


@router.get("/runs/{run_id}/events", response_class=StreamingResponse)
async def run_events(
    run_id: uuid.UUID,
    request: Request,
    ctx: ContextDep,
    after: Annotated[
        int | None, Query(ge=0, le=MAX_INT64, description="point id to resume after")
    ] = None,
    alerts_after: Annotated[
        datetime | None, Query(description="send alert events created from then on; default now")
    ] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """New points (``event: points``, each judged: ``judgement``, the ``threshold`` crossed
    and the ``margin`` past it), status changes (``event: run``) and new alert events
    (``event: alert``, ``{"alerts": [...]}``) of a run."""
    # 404 before the stream opens; the thresholds in force judge the stream's points
    thresholds = await run_in_threadpool(live.thresholds_of, ctx, run_id)
    # A browser reconnecting on its own repeats the page's URL (and its ?after=) but adds
    # Last-Event-ID: that one is newer, so it wins.
    if last_event_id and last_event_id.isdigit() and int(last_event_id) <= MAX_INT64:
        after = int(last_event_id)
    cursor = after if after is not None else await run_in_threadpool(runs.latest_cursor, ctx)
    since = alerts_after or datetime.now(UTC)
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return StreamingResponse(
        _stream(request, ctx, run_id, cursor, thresholds, _AlertCursor(since)),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
