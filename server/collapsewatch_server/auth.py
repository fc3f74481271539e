"""Tokens: the admin token's check, the dashboard's signed session cookie, and ingest tokens
generated with 256 bits of randomness, shown once, stored as SHA-256.

A slow password hash buys nothing for random 256-bit secrets; a fast hash keeps the ingest
path cheap. Comparison happens by indexed lookup of the hash, so no timing side channel
reveals the token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collapsewatch_server.config import Settings

TOKEN_PREFIX = "cw_"
#: A dashboard login should outlive a browser restart but not a month of disuse.
SESSION_MAX_AGE_S = 14 * 24 * 3600
_SESSION_VERSION = "v1"
#: Shortest admin token a server reachable from other machines accepts.
MIN_PUBLIC_TOKEN_CHARS = 16


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def display_prefix(token: str) -> str:
    """What lists show to tell tokens apart: the first characters, never the secret."""
    return token[: len(TOKEN_PREFIX) + 6]


def same_secret(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer`` header."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return None


def _session_signature(admin_token: str, payload: str) -> str:
    # keyed by the admin token: changing it ends every session
    key = hashlib.sha256(b"collapsewatch session\x00" + admin_token.encode()).digest()
    return hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()


def new_session(settings: Settings, now: float | None = None) -> str:
    """The dashboard cookie of a login: an expiry signed with a key derived from the admin
    token (HMAC-SHA256), so the cookie never holds the token and cannot be forged."""
    assert settings.admin_token is not None, "sessions exist only with an admin token"
    expires = int(now if now is not None else time.time()) + SESSION_MAX_AGE_S
    payload = f"{_SESSION_VERSION}.{expires}"
    signature = _session_signature(settings.admin_token.get_secret_value(), payload)
    return f"{payload}.{signature}"


def valid_session(settings: Settings, cookie: str | None, now: float | None = None) -> bool:
    """True for an unexpired cookie made by :func:`new_session` under the current admin token."""
    if settings.admin_token is None or not cookie:
        return False
    payload, _, signature = cookie.rpartition(".")
    version, _, expires = payload.partition(".")
    if version != _SESSION_VERSION or not expires.isdigit():
        return False
    expected = _session_signature(settings.admin_token.get_secret_value(), payload)
    if not hmac.compare_digest(signature.encode(), expected.encode()):
        return False
    return int(expires) > (now if now is not None else time.time())


def is_admin(settings: Settings, token: str | None) -> bool:
    """With no admin token configured the server is local and open; else the token must match."""
    if settings.admin_token is None:
        return True
    return token is not None and same_secret(token, settings.admin_token.get_secret_value())
