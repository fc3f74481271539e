"""FastAPI dependencies: settings, the services' context and authentication, as ``Annotated``
aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Cookie, Depends, Header, Path, Request

from collapsewatch.schemas.bounds import MAX_INT32, NO_CONTROL, control_character
from collapsewatch_server import auth, errors
from collapsewatch_server.config import Settings
from collapsewatch_server.processor import Processor
from collapsewatch_server.services.context import ServiceContext
from collapsewatch_server.throttle import AuthThrottle

#: Cookie set by the dashboard's login form: a signed expiry, never the token itself.
SESSION_COOKIE = "collapsewatch_session"


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_context(request: Request) -> ServiceContext:
    ctx: ServiceContext = request.app.state.context
    return ctx


def get_processor(request: Request) -> Processor:
    processor: Processor = request.app.state.processor
    return processor


#: The id of a rule, webhook, token or silence in a path: their id columns are INTEGER.
RowId = Annotated[int, Path(ge=1, le=MAX_INT32)]


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


def get_throttle(request: Request) -> AuthThrottle:
    throttle: AuthThrottle = request.app.state.auth_throttle
    return throttle


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def request_token(authorization: Annotated[str | None, Header()] = None) -> str | None:
    return auth.bearer_token(authorization)


def request_session(
    collapsewatch_session: Annotated[str | None, Cookie()] = None,
) -> str | None:
    return collapsewatch_session


TokenDep = Annotated[str | None, Depends(request_token)]
SessionDep = Annotated[str | None, Depends(request_session)]


def admin_token_accepted(request: Request, settings: Settings, token: str | None) -> bool:
    """Whether ``token`` is the admin token, throttled per client address: a blocked address
    gets :class:`errors.Throttled` (429) whatever it sends."""
    if settings.admin_token is None:
        return True
    if token is None:
        return False
    throttle, address = get_throttle(request), client_address(request)
    wait = throttle.retry_after(address)
    if wait is not None:
        raise errors.Throttled(
            errors.AUTH_THROTTLED.format(address=address, retry_after=wait), wait
        )
    if auth.is_admin(settings, token):
        throttle.succeeded(address)
        return True
    throttle.failed(address)
    return False


def may_read(request: Request, settings: Settings, token: str | None, session: str | None) -> bool:
    """The admin token in ``Authorization``, or the signed cookie of a dashboard login."""
    return auth.valid_session(settings, session) or admin_token_accepted(request, settings, token)


def require_read(
    request: Request, settings: SettingsDep, token: TokenDep, session: SessionDep
) -> None:
    """Reads (API and dashboard) need the admin token once one is configured."""
    if may_read(request, settings, token, session):
        return
    raise errors.Unauthorized(errors.AUTH_MISSING if token is None else errors.AUTH_INVALID)


ReadAuth = Depends(require_read)
