"""The API's own description (``/openapi.json``, ``/docs``, ``/redoc``): behind the same
check as every read, so a server with an admin token does not show its API to strangers."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from collapsewatch_server.api.deps import ReadAuth
from collapsewatch_server.api.pages import require_page_read

OPENAPI_URL = "/openapi.json"

router = APIRouter(include_in_schema=False)


@router.get(OPENAPI_URL, dependencies=[ReadAuth])
def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs", dependencies=[Depends(require_page_read)])
def swagger_ui(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(openapi_url=OPENAPI_URL, title=f"{request.app.title} API")


@router.get("/redoc", dependencies=[Depends(require_page_read)])
def redoc(request: Request) -> HTMLResponse:
    return get_redoc_html(openapi_url=OPENAPI_URL, title=f"{request.app.title} API")
