"""Dashboard pages, the login form and the static files.

Routes stay thin: parse the query, call one function of :mod:`.services.pages` (which reads
the data and renders it with ``collapsewatch_web.render``) and wrap its HTML. Services are
synchronous, so page routes are plain ``def`` routes that FastAPI runs in its threadpool.
"""

from __future__ import annotations

import uuid
from typing import Annotated
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from collapsewatch.schemas.bounds import MAX_STEP
from collapsewatch_server import auth, errors
from collapsewatch_server.api.charts import parse_run_ids
from collapsewatch_server.api.deps import (
    SESSION_COOKIE,
    ContextDep,
    SessionDep,
    SettingsDep,
    TokenDep,
    admin_token_accepted,
    may_read,
)
from collapsewatch_server.config import Settings
from collapsewatch_server.services import pages, report
from collapsewatch_web import assets, render
from collapsewatch_web.api_schemas.alerts import EventStatus, Severity

LOGIN_FAILED = "That token was not accepted."
LOGIN_NOT_NEEDED = "This server has no admin token: nothing to log in to."
_MAX_FORM_BYTES = 8192

# 'unsafe-inline' styles: Plotly.js injects its own <style> and sets style attributes.
# Scripts only from this server; the figure data is an inert application/json block.
_HTML_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _html(body: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status_code, headers=_HTML_HEADERS)


def _safe_next(target: str | None) -> str:
    """Only paths on this server: ``//evil.example`` or ``https://...`` would open a redirect."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    return target


def _auth_on(settings: Settings) -> bool:
    return settings.admin_token is not None


def require_page_read(
    request: Request, settings: SettingsDep, token: TokenDep, session: SessionDep
) -> None:
    """Like the API's read check, but a browser without the token is sent to the login form."""
    if may_read(request, settings, token, session):
        return
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    raise HTTPException(status_code=303, headers={"Location": f"/login?next={quote(here)}"})


router = APIRouter(include_in_schema=False)
protected = APIRouter(include_in_schema=False, dependencies=[Depends(require_page_read)])


# ------------------------------------------------------------------------------- pages


@protected.get("/", response_class=HTMLResponse)
def runs_page(
    ctx: ContextDep, project: str | None = None, q: str | None = None, tag: str | None = None
) -> HTMLResponse:
    """Every run, newest first, with its health per indicator family; ``?project=`` narrows
    the list to one project, ``?q=`` to names containing it, ``?tag=`` to runs carrying it."""
    project, q = project or None, (q or "").strip()[:128] or None
    tag = (tag or "").strip()[:64] or None
    try:
        return _html(pages.runs_page(ctx, project, q, tag))
    except errors.NotFound as exc:
        return _html(pages.error_page(ctx, 404, exc.message), 404)


@protected.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(
    run_id: str, ctx: ContextDep, step: str | None = None, indicator: str | None = None
) -> HTMLResponse:
    """One run: header, health, worst layers and a section per indicator family whose charts
    load as they scroll into view; run.js keeps everything live from the SSE stream.
    ``?step=N`` marks that step on every chart and scrolls to the indicator that alerted
    there (alert links point to it); ``&indicator=`` names the indicator."""
    at = int(step) if step and step.isdigit() and int(step) <= MAX_STEP else None
    try:
        return _html(pages.run_page(ctx, uuid.UUID(run_id), at, indicator))
    except (ValueError, errors.NotFound):  # ValueError: not a UUID, so no such run either
        return _html(pages.error_page(ctx, 404, errors.RUN_NOT_FOUND.format(run_id=run_id)), 404)


#: The report carries its own scripts and data inline, and fetches nothing.
_REPORT_HEADERS = {
    **_HTML_HEADERS,
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; "
    "style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'; base-uri 'none'",
}


#: The report is a file to keep, fetched by scripts too: in the OpenAPI document, unlike pages.
reports = APIRouter(tags=["read"], dependencies=[Depends(require_page_read)])


@reports.get(
    "/runs/{run_id}/report.html",
    response_class=HTMLResponse,
    responses={
        200: {"content": {"text/html": {}}},
        404: {"description": "unknown run (an HTML page)", "content": {"text/html": {}}},
    },
)
def run_report(run_id: str, ctx: ContextDep) -> HTMLResponse:
    """The run as one self-contained HTML file (Plotly, styles and figures inline): health,
    every alert event and every family's charts, readable offline."""
    try:
        body, filename = report.run_report(ctx, uuid.UUID(run_id))
    except (ValueError, errors.NotFound):  # ValueError: not a UUID, so no such run either
        return _html(pages.error_page(ctx, 404, errors.RUN_NOT_FOUND.format(run_id=run_id)), 404)
    headers = {**_REPORT_HEADERS, "Content-Disposition": f'inline; filename="{filename}"'}
    return HTMLResponse(body, headers=headers)


@protected.get("/compare", response_class=HTMLResponse)
def compare_page(
    ctx: ContextDep, runs: str = "", indicator: str | None = None, probe: str | None = None
) -> HTMLResponse:
    """Runs overlaid, one line per run, on a chosen indicator and layer (compare.js draws it
    from ``GET /api/v1/compare``)."""
    try:
        return _html(pages.compare_page(ctx, parse_run_ids(runs), indicator, probe))
    except errors.Invalid as exc:
        return _html(pages.error_page(ctx, 400, str(exc)), 400)
    except errors.NotFound as exc:
        return _html(pages.error_page(ctx, 404, exc.message), 404)


@protected.get("/alerts", response_class=HTMLResponse)
def alerts_page(
    ctx: ContextDep, project: str = "", run_id: str = "", severity: str = "", state: str = ""
) -> HTMLResponse:
    """Alerts firing now and past events under the filters, each linking to its run at its
    step; with a project, its rules, the rule editor and the back-test (alerts.js)."""
    # a filter that is not a value of its kind filters nothing (a page, not an API: no 422)
    filters = {
        "project": project or None,
        "run_id": run_id if _is_uuid(run_id) else None,
        "severity": severity if severity in set(Severity) else None,
        "state": state if state in set(EventStatus) else None,
    }
    try:
        return _html(pages.alerts_page(ctx, filters))
    except errors.NotFound as exc:
        return _html(pages.error_page(ctx, 404, exc.message), 404)


@protected.get("/projects/{project}/settings", response_class=HTMLResponse)
def settings_page(project: str, ctx: ContextDep) -> HTMLResponse:
    """A project's ingest tokens and webhooks; settings.js creates, revokes, tests and reads
    delivery logs through the tokens and webhooks APIs."""
    try:
        return _html(pages.settings_page(ctx, project))
    except errors.NotFound as exc:
        return _html(pages.error_page(ctx, 404, exc.message), 404)


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


# ------------------------------------------------------------------------------- login


@router.get("/login", response_class=HTMLResponse)
def login_form(
    settings: SettingsDep, next_url: Annotated[str | None, Query(alias="next")] = None
) -> Response:
    if not _auth_on(settings):
        return RedirectResponse(_safe_next(next_url), status_code=303)
    return _html(render.render_login_page(None, _safe_next(next_url)))


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request, settings: SettingsDep) -> Response:
    """Check the posted admin token; on success set a signed session cookie (HttpOnly)."""
    body = await request.body()
    # parsed by hand: a one-field form does not justify the python-multipart dependency
    form = parse_qs(body[:_MAX_FORM_BYTES].decode("utf-8", "replace"))
    token = (form.get("token") or [""])[0].strip()
    target = _safe_next((form.get("next") or ["/"])[0])
    if not _auth_on(settings):
        return _html(render.render_login_page(LOGIN_NOT_NEEDED, target), 400)
    try:
        accepted = bool(token) and admin_token_accepted(request, settings, token)
    except errors.Throttled as exc:
        page = _html(render.render_login_page(exc.message, target), 429)
        page.headers["Retry-After"] = str(exc.retry_after_s)
        return page
    if not accepted:
        return _html(render.render_login_page(LOGIN_FAILED, target), 401)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        auth.new_session(settings),
        max_age=auth.SESSION_MAX_AGE_S,
        path="/",
        httponly=True,  # scripts never see the session
        samesite="strict",  # other sites cannot ride on it
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout")
def logout() -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response


# ------------------------------------------------------------------------------ static


@router.get(f"/static/{assets.PLOTLY_JS}")
def plotly_js(request: Request) -> Response:
    """Plotly.js from the installed plotly package (never a CDN: users are often offline),
    gzipped once per process rather than by the middleware on every request."""
    # the URL carries plotly's version: a new plotly is a new URL, so this one never changes
    headers = {"Cache-Control": "public, max-age=31536000, immutable"}
    # read as the GZip middleware reads it (it would compress the file otherwise)
    if "gzip" in request.headers.get("accept-encoding", ""):
        headers |= {"Content-Encoding": "gzip", "Vary": "Accept-Encoding"}
        return Response(assets.plotly_js_gzip(), media_type="text/javascript", headers=headers)
    return FileResponse(assets.plotly_js_path(), media_type="text/javascript", headers=headers)


@router.get("/static/{name}")
def static(name: str) -> FileResponse:
    path = assets.static_file(name)
    if path is None:
        raise HTTPException(status_code=404, detail=f"no static file {name!r}")
    # small files that change with the code: revalidate each time (ETag makes it cheap)
    return FileResponse(path, headers={"Cache-Control": "no-cache"})


router.include_router(protected)
