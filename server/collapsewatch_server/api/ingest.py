"""``POST /api/v1/ingest``: one batch of statistics from the SDK."""

from __future__ import annotations

import zlib

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from collapsewatch.schemas import IngestBatch, IngestResult
from collapsewatch_server import errors
from collapsewatch_server.api.deps import ContextDep, TokenDep
from collapsewatch_server.services.ingest import ingest_batch
from collapsewatch_server.services.ingest_tokens import check_ingest

router = APIRouter(prefix="/api/v1", tags=["ingest"])


async def read_body(request: Request, limit: int) -> bytes:
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
        return body
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
    return raw


@router.post(
    "/ingest",
    status_code=202,
    response_model=IngestResult,
    responses={400: {}, 401: {}, 403: {}, 409: {}, 413: {}, 422: {}},
)
async def ingest(request: Request, ctx: ContextDep, token: TokenDep) -> IngestResult | JSONResponse:
    """Validate and store one batch. A batch id seen before is acknowledged, not stored again."""
    raw = await read_body(request, ctx.settings.max_body_bytes)
    try:
        batch = IngestBatch.model_validate_json(raw)
    except ValidationError as exc:
        problems = exc.errors(include_url=False, include_input=False, include_context=False)
        status = 400 if any(p["type"] == "json_invalid" for p in problems) else 422
        return JSONResponse({"detail": jsonable_encoder(problems)}, status_code=status)
    await run_in_threadpool(check_ingest, ctx, token, batch.run.project)
    return await run_in_threadpool(ingest_batch, ctx, batch)
