"""The app factory: no engine or settings at import time, so tests build apps freely."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from collapsewatch._version import __version__
from collapsewatch_server.api import (
    alerts,
    charts,
    docs,
    ingest,
    ingest_tokens,
    live,
    methods,
    openapi,
    pages,
    runs,
    silences,
    webhooks,
)
from collapsewatch_server.api import (
    metrics as metrics_api,
)
from collapsewatch_server.api.deps import refuse_control_characters
from collapsewatch_server.api.edges import EdgeChecks
from collapsewatch_server.config import Settings
from collapsewatch_server.db import Database, make_engine, migrate
from collapsewatch_server.errors import Busy, DomainError
from collapsewatch_server.in_flight import InFlight
from collapsewatch_server.metrics import Metrics
from collapsewatch_server.processor import Processor
from collapsewatch_server.services.context import ServiceContext
from collapsewatch_server.services.parsed_batches import ParsedBatches
from collapsewatch_server.throttle import AuthThrottle
from collapsewatch_server.worker import Worker

#: Every route of the app, in the order they are matched: where two paths could both match, the
#: earlier router's route answers.
_ROUTERS: tuple[APIRouter, ...] = (
    runs.router,
    runs.api,
    ingest.router,
    live.router,
    alerts.router,
    webhooks.router,
    silences.router,
    ingest_tokens.router,
    charts.router,
    metrics_api.router,
    pages.router,
    pages.reports,
    docs.router,
)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app: connect, migrate the schema to head, wire routes and error handling."""
    settings = settings or Settings()
    engine = make_engine(settings.db_url, echo=settings.db_echo)
    migrate(engine)
    db = Database(engine)
    metrics = Metrics()
    metrics.watch_database(db)
    # The webhook deliverer and the stall scan run with the server, on its event loop; the
    # services of the routes ring its doorbell when they commit deliveries.
    worker = Worker(db, settings, metrics)
    # Every server process processes accepted batches (indicators, points, alerts), whether
    # or not it delivers webhooks.
    # ... and takes the batches the routes accepted already parsed (not validated twice).
    # ... and gives way to the ingest requests being accepted.
    parsed, in_flight = ParsedBatches(), InFlight()
    processor = Processor(
        ServiceContext(
            db,
            settings,
            wake_deliverer=worker.wake,
            metrics=metrics,
            parsed=parsed,
            in_flight=in_flight,
        )
    )
    context = ServiceContext(
        db,
        settings,
        wake_deliverer=worker.wake,
        wake_processor=processor.wake,
        metrics=metrics,
        parsed=parsed,
        in_flight=in_flight,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        processor.start()
        if settings.worker:
            worker.start()
        try:
            yield
        finally:
            await processor.stop()
            await worker.stop()
            engine.dispose()

    app = FastAPI(
        title="collapsewatch",
        version=__version__,
        summary="Collapse indicators of neural networks in training, live.",
        lifespan=lifespan,
        # served by api.docs, behind the read check
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        dependencies=[Depends(refuse_control_characters)],
    )
    # Figures of a large run are megabytes of JSON; gzip makes them a fraction. Server-Sent
    # Events are left alone by the middleware (they must not be buffered).
    app.add_middleware(GZipMiddleware, minimum_size=2048)
    # outermost: a refused Host or content type never reaches a route
    app.add_middleware(EdgeChecks, settings=settings)
    app.state.settings = settings
    app.state.context = context
    app.state.processor = processor
    app.state.auth_throttle = AuthThrottle(settings.auth_free_failures, settings.auth_max_block_s)

    @app.exception_handler(DomainError)
    async def domain_error(_request: Request, exc: DomainError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        if isinstance(exc, Busy):
            headers = {"Retry-After": str(exc.retry_after_s)}
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)

    app.add_exception_handler(StarletteHTTPException, methods.complete_allow)
    for router in _ROUTERS:
        app.include_router(router)
    openapi.install(app)
    return app
