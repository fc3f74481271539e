"""FastAPI dependencies: settings, the services' context and authentication, as ``Annotated``
aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Cookie, Depends, Header, Path, Request

from collapsewatch.schemas.bounds import MAX_INT64, NO_CONTROL, control_character
from collapsewatch_server import auth, errors
from collapsewatch_server.config import Settings
from collapsewatch_server.processor import Processor
from collapsewatch_server.services.context import ServiceContext

#: Cookie set by the dashboard's login form.
SESSION_COOKIE = "collapsewatch_token"


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_context(request: Request) -> ServiceContext:
    ctx: ServiceContext = request.app.state.context
    return ctx


def get_processor(request: Request) -> Processor:
    processor: Processor = request.app.state.processor
    return processor


#: The id of a stored row (rule, webhook, token) in a path: what a BIGINT column holds.
RowId = Annotated[int, Path(ge=1, le=MAX_INT64)]


def refuse_control_characters(request: Request) -> None:
    """No path or query parameter holds a control character: Postgres refuses NUL where
    SQLite takes it, and no name has one; one 422 naming the parameter on both backends."""
    for where, params in (("path", request.path_params), ("query", request.query_params)):
        for name, value in params.items():
            index = control_character(str(value))
            if index is not None:
                char = f"U+{ord(str(value)[index]):04X}"
                message = NO_CONTROL.format(char=char, index=index)
                raise errors.Invalid(message, loc=(where, name))


SettingsDep = Annotated[Settings, Depends(get_settings)]
ContextDep = Annotated[ServiceContext, Depends(get_context)]
ProcessorDep = Annotated[Processor, Depends(get_processor)]


def request_token(
    authorization: Annotated[str | None, Header()] = None,
    collapsewatch_token: Annotated[str | None, Cookie()] = None,
) -> str | None:
    return auth.bearer_token(authorization, collapsewatch_token)


TokenDep = Annotated[str | None, Depends(request_token)]


def require_read(settings: SettingsDep, token: TokenDep) -> None:
    """Reads (API and dashboard) need the admin token once one is configured."""
    if auth.is_admin(settings, token):
        return
    raise errors.Unauthorized(errors.AUTH_MISSING if token is None else errors.AUTH_INVALID)


ReadAuth = Depends(require_read)
