"""405 answers whose ``Allow`` lists every method of the path.

Starlette answers a method a path does not take with the methods of the first route on that
path only; routes of one path (``GET`` and ``POST .../rules``) are separate routes, so the
header named some of the methods. This handler asks every route for every method."""

from __future__ import annotations

from fastapi import Request, Response
from fastapi.exception_handlers import http_exception_handler
from starlette.exceptions import HTTPException
from starlette.routing import Match

_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


async def complete_allow(request: Request, exc: Exception) -> Response:
    """The default answer to an HTTP exception; a 405's ``Allow`` lists all the path's methods."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        # every method some route takes fully on this path (routes may nest: ask each)
        allowed = {
            method
            for method in _METHODS
            if any(
                route.matches({**request.scope, "method": method})[0] == Match.FULL
                for route in request.app.router.routes
            )
        }
        if allowed:
            exc.headers = {**(exc.headers or {}), "Allow": ", ".join(sorted(allowed))}
    return await http_exception_handler(request, exc)
