"""The server's edge checks, before any route: a trusted ``Host`` and a JSON content type.

Without an admin token the server is open to anything that reaches its loopback address, and a
web page in the user's browser reaches it too. Two browser tricks are shut here:

* DNS rebinding: a page on ``attacker.example`` rebinds its name to 127.0.0.1 and reads the API
  as same-origin. Its requests carry ``Host: attacker.example``, so the server answers only
  Host names it knows: loopback names, its bind address, the host of ``public_url`` and
  ``COLLAPSEWATCH_ALLOWED_HOSTS``.
* Cross-site "simple" requests: a form or a ``no-cors`` fetch can POST ``text/plain``, form or
  empty bodies anywhere without a CORS preflight. Every POST, PUT and PATCH must declare
  ``Content-Type: application/json``, which a page on another site cannot send without a
  preflight the server never grants. DELETE is never a simple request.

The content-type rule holds with or without a token (one API contract); the Host rule holds
whenever the server runs without a token, and always once ``allowed_hosts`` is set.
A pure ASGI middleware, so streamed answers (Server-Sent Events) pass through untouched.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from collapsewatch_server import errors
from collapsewatch_server.config import Settings

#: Methods whose requests change state and may carry a body a browser can send cross-site.
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
#: The dashboard's HTML forms (login, logout) post form data; they change no stored state.
FORM_PATHS = frozenset({"/login", "/logout"})
JSON_TYPE = "application/json"


def host_name(header: str) -> str:
    """The name of a ``Host`` header, without port or IPv6 brackets, lower case."""
    header = header.strip().lower()
    if header.startswith("["):  # [::1]:8420
        return header[1:].partition("]")[0]
    name, _, _port = header.rpartition(":") if header.count(":") == 1 else (header, "", "")
    return name


def is_loopback_name(name: str) -> bool:
    """``localhost``, ``*.localhost`` (RFC 6761: never leaves the machine), 127/8 and ::1."""
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def trusted_hosts(settings: Settings) -> frozenset[str]:
    """The Host names, besides loopback ones, this server answers to."""
    names = {host_name(h) for h in settings.allowed_host_names}
    names.add(host_name(settings.host))
    if settings.public_url:
        public = urlsplit(settings.public_url).hostname
        if public:
            names.add(public.lower())
    return frozenset(n for n in names if n)


class EdgeChecks:
    """Refuse requests with an untrusted ``Host`` (400) or a state-changing request whose body
    is not declared JSON (415), each with a message saying what is expected."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.check_host = settings.admin_token is None or bool(settings.allowed_host_names)
        self.any_host = "*" in settings.allowed_host_names
        self.hosts = trusted_hosts(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope["headers"])
        problem = self._host_problem(headers.get("host")) or _type_problem(scope, headers)
        if problem is None:
            await self.app(scope, receive, send)
            return
        status, message = problem
        body = json.dumps({"detail": message}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", JSON_TYPE.encode()),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _host_problem(self, header: str | None) -> tuple[int, str] | None:
        if not self.check_host or self.any_host:
            return None
        if not header:
            return 400, errors.HOST_MISSING
        name = host_name(header)
        if is_loopback_name(name) or name in self.hosts:
            return None
        return 400, errors.HOST_UNTRUSTED.format(host=header[:100])


def _headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in raw}


def _type_problem(scope: Scope, headers: dict[str, str]) -> tuple[int, str] | None:
    if scope["method"] not in BODY_METHODS or scope["path"] in FORM_PATHS:
        return None
    declared = headers.get("content-type", "")
    if declared.partition(";")[0].strip().lower() == JSON_TYPE:
        return None
    return 415, errors.CONTENT_TYPE_NOT_JSON.format(
        method=scope["method"], got=declared[:100] or "none"
    )
