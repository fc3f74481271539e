"""FastAPI dependencies: settings, store and authentication, as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Cookie, Depends, Header, Request

from collapsewatch_server import auth, errors
from collapsewatch_server.config import Settings
from collapsewatch_server.store import Store

#: Cookie set by the dashboard's login form.
SESSION_COOKIE = "collapsewatch_token"


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_store(request: Request) -> Store:
    return request.app.state.store


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]


def request_token(
    authorization: Annotated[str | None, Header()] = None,
    collapsewatch_token: Annotated[str | None, Cookie()] = None,
) -> str | None:
    return auth.bearer_token(authorization, collapsewatch_token)


TokenDep = Annotated[str | None, Depends(request_token)]


def is_admin(settings: Settings, token: str | None) -> bool:
    """With no admin token configured the server is local and open; else the token must match."""
    if settings.admin_token is None:
        return True
    return token is not None and auth.same_secret(token, settings.admin_token.get_secret_value())


def require_read(settings: SettingsDep, token: TokenDep) -> None:
    """Reads (API and dashboard) need the admin token once one is configured."""
    if is_admin(settings, token):
        return
    raise errors.Unauthorized(errors.AUTH_MISSING if token is None else errors.AUTH_INVALID)


ReadAuth = Depends(require_read)


def check_ingest(settings: Settings, store: Store, token: str | None, project: str) -> None:
    """Ingest needs the admin token or an ingest token of the batch's project."""
    if is_admin(settings, token):
        return
    if token is None:
        raise errors.Unauthorized(errors.AUTH_MISSING)
    owner = store.token_project(token)
    if owner is None:
        raise errors.Unauthorized(errors.AUTH_INVALID)
    if owner != project:
        raise errors.Forbidden(errors.AUTH_WRONG_PROJECT.format(project=owner))
