"""Signatures in the Standard Webhooks way (https://www.standardwebhooks.com/).

Every request carries three headers::

    webhook-id:        the event id (receivers deduplicate on it)
    webhook-timestamp: unix seconds when it was signed
    webhook-signature: v1,<base64 HMAC-SHA256(key, f"{id}.{timestamp}.{body}")>

The key is the base64 part of the webhook's secret ``whsec_<base64>``. A receiver recomputes
the HMAC over the raw body bytes, compares in constant time and refuses old timestamps (replay);
:func:`verify` does exactly that and is what docs/webhooks.md shows receivers.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping

SECRET_PREFIX = "whsec_"
#: 192 bits at least; generated secrets have 32 bytes.
MIN_SECRET_BYTES = 24
GENERATED_SECRET_BYTES = 32

HEADER_ID = "webhook-id"
HEADER_TIMESTAMP = "webhook-timestamp"
HEADER_SIGNATURE = "webhook-signature"

#: Messages of :class:`InvalidSecret` and :class:`SignatureError`, reused by tests.
SECRET_FORMAT = (
    f"secret must be '{SECRET_PREFIX}' followed by base64 of at least {MIN_SECRET_BYTES} bytes"
)
MISSING_HEADER = "missing header {name!r}"
BAD_TIMESTAMP = "webhook-timestamp is not a unix time in seconds"
STALE_TIMESTAMP = "webhook-timestamp is {age:.0f} s away from now (tolerance {tolerance:.0f} s)"
NO_MATCH = "no v1 signature matches the body"


class InvalidSecret(ValueError):
    """A secret that is not ``whsec_<base64>`` of at least :data:`MIN_SECRET_BYTES` bytes."""


class SignatureError(ValueError):
    """A request whose signature headers do not prove it came from the holder of the secret."""


def new_secret() -> str:
    """A fresh random secret, ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(GENERATED_SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key inside ``secret``; raises :class:`InvalidSecret` when malformed or short."""
    if not secret.startswith(SECRET_PREFIX):
        raise InvalidSecret(SECRET_FORMAT)
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidSecret(SECRET_FORMAT) from None
    if len(key) < MIN_SECRET_BYTES:
        raise InvalidSecret(SECRET_FORMAT)
    return key


def secret_hint(secret: str) -> str:
    """Enough of a secret to recognise it in a list (prefix and 4 characters), never all."""
    return secret[: len(SECRET_PREFIX) + 4] + "..."


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``v1,<base64>`` signature of one message."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def sign_headers(
    secret: str, msg_id: str, body: bytes, timestamp: int | None = None
) -> dict[str, str]:
    """The three signature headers for ``body``, signed now unless ``timestamp`` is given."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        HEADER_ID: msg_id,
        HEADER_TIMESTAMP: str(ts),
        HEADER_SIGNATURE: signature(secret, msg_id, ts, body),
    }


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    tolerance_s: float = 300.0,
    now: float | None = None,
) -> None:
    """Check a received webhook; return quietly when genuine, else raise :class:`SignatureError`.

    ``headers`` may use any case (HTTP header names are case-insensitive). ``body`` must be the
    raw bytes as received, before any JSON parsing. ``webhook-signature`` may list several
    space-separated signatures (secret rotation); one match is enough.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    for name in (HEADER_ID, HEADER_TIMESTAMP, HEADER_SIGNATURE):
        if not lowered.get(name):
            raise SignatureError(MISSING_HEADER.format(name=name))
    try:
        ts = int(lowered[HEADER_TIMESTAMP])
    except ValueError:
        raise SignatureError(BAD_TIMESTAMP) from None
    age = (time.time() if now is None else now) - ts
    if abs(age) > tolerance_s:
        raise SignatureError(STALE_TIMESTAMP.format(age=age, tolerance=tolerance_s))
    expected = signature(secret, lowered[HEADER_ID], ts, body)
    for candidate in lowered[HEADER_SIGNATURE].split():
        if hmac.compare_digest(candidate.encode(), expected.encode()):
            return
    raise SignatureError(NO_MATCH)
