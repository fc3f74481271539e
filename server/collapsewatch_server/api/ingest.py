"""``POST /api/v1/ingest``: one batch of statistics from the SDK."""

from __future__ import annotations

import asyncio
import time
import zlib
from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from collapsewatch.schemas import IngestBatch, IngestResult
from collapsewatch_server import errors
from collapsewatch_server.api.deps import (
    ContextDep,
    ProcessorDep,
    TokenDep,
    client_address,
    get_throttle,
)
from collapsewatch_server.processor import Processor
from collapsewatch_server.services.context import ServiceContext
from collapsewatch_server.services.ingest import Accepted, accept_batch
from collapsewatch_server.services.ingest_tokens import check_ingest
from collapsewatch_server.throttle import AuthThrottle

router = APIRouter(prefix="/api/v1", tags=["ingest"])


@dataclass(frozen=True)
class Body:
    """A request's body (``raw``, never more than the limit) and, when it came gzipped as one
    whole gzip member, those bytes (the ingest queue keeps them instead of compressing again)."""

    raw: bytes
    gzipped: bytes | None = None


async def read_body(request: Request, limit: int) -> Body:
    """The request body, gunzipped if declared so, never more than ``limit`` bytes either way."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise errors.PayloadTooLarge(errors.BODY_TOO_LARGE.format(limit=limit))
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise errors.PayloadTooLarge(errors.BODY_TOO_LARGE.format(limit=limit))
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return Body(body)
    if encoding != "gzip":
        raise errors.BadRequest(errors.BODY_BAD_ENCODING.format(encoding=encoding))
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        # max_length bounds the output: a small gzip bomb cannot blow up memory
        raw = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise errors.BadRequest(errors.BODY_NOT_GZIP) from exc
    if len(raw) > limit or inflater.unconsumed_tail:
        raise errors.PayloadTooLarge(errors.BODY_TOO_LARGE.format(limit=limit))
    if not inflater.eof:
        raise errors.BadRequest(errors.BODY_NOT_GZIP)
    return Body(raw, None if inflater.unused_data else body)


@router.post(
    "/ingest",
    status_code=202,
    response_model=IngestResult,
    responses={400: {}, 401: {}, 403: {}, 409: {}, 413: {}, 415: {}, 422: {}, 429: {}},
)
async def ingest(
    request: Request, ctx: ContextDep, processor: ProcessorDep, token: TokenDep
) -> IngestResult | JSONResponse:
    """Validate and store one batch; its indicators and alerts follow at once (``queued``
    until then). A batch id seen before is acknowledged, not stored again (409 when its
    content differs). 429 with Retry-After when the processing queue is deep."""
    metrics = ctx.metrics
    started = time.perf_counter()
    try:
        # the processor gives way while the batch is read and accepted (not while the answer
        # waits for the processor)
        with ctx.in_flight.accepting():
            body = await read_body(request, ctx.settings.max_body_bytes)
            # Validation, the token check and the accepting transaction in one worker thread:
            # on a loaded machine every hop between the event loop and a thread waits.
            taken = await run_in_threadpool(
                take, ctx, processor, body, token, get_throttle(request), client_address(request)
            )
        if isinstance(taken, JSONResponse):
            return taken
        result = await answer(ctx, processor, taken)
    except errors.DomainError as exc:
        metrics.rejected(exc.status_code, throttled=isinstance(exc, errors.Throttled))
        raise
    metrics.ingest_batches.labels("duplicate" if result.duplicate else "accepted").inc()
    if not result.duplicate:
        metrics.ingest_records.inc(result.records)
        metrics.ingest_bytes.inc(len(body.raw))
    metrics.ingest_latency.observe(time.perf_counter() - started)
    return result


@dataclass(frozen=True)
class Taken:
    """A batch accepted, and the future of its points when this process may wait for them."""

    batch_id: str
    accepted: Accepted
    expected: asyncio.Future[int] | None


def take(
    ctx: ServiceContext,
    processor: Processor,
    body: Body,
    token: str | None,
    throttle: AuthThrottle,
    address: str,
) -> Taken | JSONResponse:
    """In a worker thread: validate ``body`` (a 400 or 422 answer when it is not a batch),
    check the token, accept the batch."""
    try:
        batch = IngestBatch.model_validate_json(body.raw)
    except ValidationError as exc:
        problems = exc.errors(include_url=False, include_input=False, include_context=False)
        status = 400 if any(p["type"] == "json_invalid" for p in problems) else 422
        ctx.metrics.rejected(status)
        return JSONResponse({"detail": jsonable_encoder(problems)}, status_code=status)
    check_ingest_throttled(ctx, token, batch.run.project, throttle, address)
    batch_id = str(batch.batch_id)
    # made before the batch is accepted, so a batch processed at once is not missed
    expected = processor.expect(batch_id)
    try:
        accepted = accept_batch(ctx, batch, body.raw, body.gzipped)
    except BaseException:
        processor.forget(batch_id)
        raise
    return Taken(batch_id, accepted, expected)


def check_ingest_throttled(
    ctx: ServiceContext, token: str | None, project: str, throttle: AuthThrottle, address: str
) -> None:
    """:func:`check_ingest`, counting wrong tokens per client address: a blocked address may
    still ingest with a project token, but its admin-token guesses are answered 429."""
    wait = throttle.retry_after(address)
    try:
        check_ingest(ctx, token, project, admin=wait is None)
    except errors.Unauthorized:
        if token is None:
            raise
        if wait is not None:
            message = errors.AUTH_THROTTLED.format(address=address, retry_after=wait)
            raise errors.Throttled(message, wait) from None
        throttle.failed(address)
        raise


async def answer(ctx: ServiceContext, processor: Processor, taken: Taken) -> IngestResult:
    """The answer to an accepted batch: when nothing else was waiting, this process's
    processor gets up to ``ingest_wait_s`` to compute its points, so the answer can say how
    many -- unless other batches arrive meanwhile (many clients: none waits for points)."""
    accepted = taken.accepted
    try:
        if taken.expected is None or not accepted.alone:
            return accepted.result
        points = await processor.wait(
            taken.expected, ctx.settings.ingest_wait_s, lambda: len(ctx.in_flight) > 0
        )
    finally:
        processor.forget(taken.batch_id)
    if points is None:
        return accepted.result
    return accepted.result.model_copy(update={"points": points, "queued": False})
