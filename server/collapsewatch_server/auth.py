"""Tokens: the admin token's check, and ingest tokens generated with 256 bits of randomness,
shown once, stored as SHA-256.

A slow password hash buys nothing for random 256-bit secrets; a fast hash keeps the ingest
path cheap. Comparison happens by indexed lookup of the hash, so no timing side channel
reveals the token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collapsewatch_server.config import Settings

TOKEN_PREFIX = "cw_"


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def display_prefix(token: str) -> str:
    """What lists show to tell tokens apart: the first characters, never the secret."""
    return token[: len(TOKEN_PREFIX) + 6]


def same_secret(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def bearer_token(authorization: str | None, cookie: str | None) -> str | None:
    """The token of a request: ``Authorization: Bearer`` first, then the dashboard cookie."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return cookie or None


def is_admin(settings: Settings, token: str | None) -> bool:
    """With no admin token configured the server is local and open; else the token must match."""
    if settings.admin_token is None:
        return True
    return token is not None and same_secret(token, settings.admin_token.get_secret_value())
