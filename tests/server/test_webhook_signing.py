"""Standard Webhooks signatures: what we send verifies, anything altered does not."""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path
from typing import Any

import pytest

from collapsewatch_server.webhooks import signing

BODY = b'{"type":"alert.firing","value":0.9}'


def test_new_secret_is_whsec_and_32_random_bytes() -> None:
    secret = signing.new_secret()
    assert secret.startswith("whsec_")
    assert len(signing.secret_key(secret)) == 32
    assert signing.new_secret() != secret


def test_signature_is_hmac_sha256_of_id_timestamp_body_with_the_decoded_key() -> None:
    secret = signing.new_secret()
    headers = signing.sign_headers(secret, "evt-1", BODY, timestamp=1_700_000_000)
    key = base64.b64decode(secret.removeprefix("whsec_"))
    expected = hmac.new(key, b"evt-1.1700000000." + BODY, hashlib.sha256).digest()
    assert headers == {
        "webhook-id": "evt-1",
        "webhook-timestamp": "1700000000",
        "webhook-signature": "v1," + base64.b64encode(expected).decode(),
    }


def test_verify_accepts_what_was_signed_in_any_header_case() -> None:
    secret = signing.new_secret()
    headers = signing.sign_headers(secret, "evt-1", BODY)
    signing.verify(secret, headers, BODY)
    signing.verify(secret, {k.title(): v for k, v in headers.items()}, BODY)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda h, b: (h, b + b" "), signing.NO_MATCH),
        (lambda h, b: (h, b.replace(b"0.9", b"0.1")), signing.NO_MATCH),
        (lambda h, b: ({**h, "webhook-id": "evt-2"}, b), signing.NO_MATCH),
        (lambda h, b: ({**h, "webhook-timestamp": str(int(h["webhook-timestamp"]) + 1)}, b),
         signing.NO_MATCH),
        (lambda h, b: ({k: v for k, v in h.items() if k != "webhook-signature"}, b),
         signing.MISSING_HEADER.format(name="webhook-signature")),
        (lambda h, b: ({**h, "webhook-timestamp": "soon"}, b), signing.BAD_TIMESTAMP),
    ],
)  # fmt: skip
def test_verify_refuses_a_tampered_request(change: object, message: str) -> None:
    secret = signing.new_secret()
    headers, body = change(signing.sign_headers(secret, "evt-1", BODY), BODY)  # type: ignore[operator]
    with pytest.raises(signing.SignatureError) as err:
        signing.verify(secret, headers, body)
    assert str(err.value) == message


def test_verify_refuses_another_secret_and_old_timestamps() -> None:
    secret = signing.new_secret()
    headers = signing.sign_headers(secret, "evt-1", BODY, timestamp=1_700_000_000)
    with pytest.raises(signing.SignatureError, match="no v1 signature"):
        signing.verify(signing.new_secret(), headers, BODY, now=1_700_000_000)
    with pytest.raises(signing.SignatureError, match="tolerance 300 s"):
        signing.verify(secret, headers, BODY, now=1_700_000_000 + 301)
    signing.verify(secret, headers, BODY, now=1_700_000_000 + 299)


def test_one_matching_signature_of_several_is_enough() -> None:
    """Receivers rotating secrets may see several space-separated signatures."""
    secret = signing.new_secret()
    headers = signing.sign_headers(secret, "evt-1", BODY)
    other = signing.sign_headers(signing.new_secret(), "evt-1", BODY)["webhook-signature"]
    headers["webhook-signature"] = f"{other} {headers['webhook-signature']}"
    signing.verify(secret, headers, BODY)


@pytest.mark.parametrize(
    "secret",
    [
        "no-prefix-" + base64.b64encode(b"x" * 32).decode(),
        "whsec_" + base64.b64encode(b"x" * 23).decode(),  # too short
        "whsec_not*base64*at*all*really*",
    ],
)
def test_malformed_or_short_secrets_are_refused(secret: str) -> None:
    with pytest.raises(signing.InvalidSecret, match="whsec_"):
        signing.secret_key(secret)


def test_secret_hint_never_shows_the_key() -> None:
    secret = signing.new_secret()
    hint = signing.secret_hint(secret)
    assert hint.startswith("whsec_") and hint.endswith("...") and len(hint) < 16


def test_the_docs_snippet_for_receivers_verifies_our_signatures() -> None:
    page = (Path(__file__).parents[2] / "docs" / "webhooks.md").read_text()
    snippet = page.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(snippet, namespace)
    secret = signing.new_secret()
    headers = signing.sign_headers(secret, "evt-1", BODY)
    assert namespace["verify"](secret, headers, BODY) is True
    assert namespace["verify"](secret, headers, BODY + b" ") is False
    assert namespace["verify"](signing.new_secret(), headers, BODY) is False
