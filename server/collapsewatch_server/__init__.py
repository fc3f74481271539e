"""collapsewatch server: ingest statistics, compute collapse indicators, serve dashboards.

Importing this package is cheap; FastAPI and SQLAlchemy load only with :func:`create_app`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

    from collapsewatch_server.config import Settings

__all__ = ["create_app"]


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the ASGI app; see :func:`collapsewatch_server.app.create_app`."""
    from collapsewatch_server.app import create_app as _create_app

    return _create_app(settings)
