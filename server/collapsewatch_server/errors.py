"""Domain errors, mapped to HTTP by one handler in the app; messages are constants tests reuse."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

RUN_NOT_FOUND = "run {run_id} not found"
SERIES_NOT_FOUND = "no series {indicator!r} on probe {probe!r} in run {run_id}"
PROJECT_NOT_FOUND = "project {project!r} not found"
RUN_IN_OTHER_PROJECT = "run {run_id} belongs to project {actual!r}, not {given!r}"
BATCH_ID_REUSED = (
    "batch {batch_id} was already stored with other content: a batch id names one batch"
)
INGEST_BUSY = (
    "{records} records are waiting to be processed; send this batch again in {retry_after} s"
)
AUTH_MISSING = "missing token: send 'Authorization: Bearer <token>'"
AUTH_INVALID = "invalid or revoked token"
AUTH_THROTTLED = "too many failed authentications from {address}; try again in {retry_after} s"
AUTH_WRONG_PROJECT = "this token may only ingest into project {project!r}"
BODY_TOO_LARGE = "request body larger than {limit} bytes"
BODY_NOT_GZIP = "body declared Content-Encoding: gzip but is not valid gzip data"
BODY_BAD_ENCODING = "unsupported Content-Encoding {encoding!r}: send identity or gzip"
RULE_NOT_FOUND = "rule {rule_id} not found in project {project!r}"
RULE_NAME_TAKEN = "project {project!r} already has a rule named {name!r}"
UNKNOWN_INDICATOR = "unknown indicator {indicator!r}; GET /api/v1/indicators lists them"
INDICATOR_NOT_IN_RUN = "no series of indicator {indicator!r} in run {run_id}"
SPECTRUM_NOT_FOUND = "no covariance spectrum of probe {probe!r} in run {run_id}"
RAW_RETENTION_NOTE = (
    "raw statistics older than {days:g} days are deleted (COLLAPSEWATCH_RAW_RETENTION_DAYS): "
    "indicator points are kept, but what needs the raw records (spectra, recomputing "
    "indicators) is gone for older steps"
)
TOKEN_NOT_FOUND = "token {token_id} not found in project {project!r}"
WEBHOOK_NOT_FOUND = "webhook {webhook_id} not found in project {project!r}"
SILENCE_NOT_FOUND = "silence {silence_id} not found in project {project!r}"
ROUTING_KEY_NEEDED = "a pagerduty receiver needs routing_key (the integration key of its service)"
EMAIL_URL = "an email receiver's url is mailto:address[,address...]; got {url!r}"
SMTP_NOT_SET = "no mail server: set COLLAPSEWATCH_SMTP_HOST to send email"
WEBHOOK_URL_INVALID = "url is not a valid URL: {reason}"
WEBHOOK_URL_SCHEME = "url must use http or https, not {scheme!r}"
WEBHOOK_URL_NOT_ABSOLUTE = "url must be an absolute http or https URL"
WEBHOOK_URL_NO_HOST = "url has no host"
WEBHOOK_URL_UNRESOLVABLE = "url host {host!r} does not resolve ({reason})"
WEBHOOK_URL_REFUSED = "url resolves to {address}, a {kind} address"
WEBHOOK_URL_PRIVATE = (
    "url resolves to {address}, a private address; "
    "set COLLAPSEWATCH_WEBHOOK_ALLOW_PRIVATE=true to allow private targets"
)
WEBHOOK_DISABLED = "webhook disabled before this delivery was sent"
PARQUET_NEEDS_PYARROW = (
    "Parquet export needs pyarrow on the server: pip install 'collapsewatch[parquet]' "
    "(or ask for format=csv)"
)
HOST_MISSING = "the request has no Host header"
HOST_UNTRUSTED = (
    "Host {host!r} is not a name this server answers to: use localhost or 127.0.0.1, "
    "or add the name to COLLAPSEWATCH_ALLOWED_HOSTS"
)
CONTENT_TYPE_NOT_JSON = "{method} requests must send Content-Type: application/json (got {got!r})"
REFUSE_WEAK_TOKEN = (
    "refusing to listen on {host}: COLLAPSEWATCH_ADMIN_TOKEN is shorter than {chars} characters; "
    'make one with: python -c "import secrets; print(secrets.token_urlsafe(32))"'
)
REFUSE_PUBLIC_WITHOUT_TOKEN = (
    "refusing to listen on {host}: a non-loopback address needs COLLAPSEWATCH_ADMIN_TOKEN"
)


class DomainError(Exception):
    """Base of the errors the API turns into ``{"detail": message}`` with a status.

    Each kind names its HTTP status where it is declared: ``class NotFound(DomainError,
    status_code=404)``."""

    status_code: ClassVar[int] = 400

    def __init_subclass__(cls, status_code: int | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if status_code is not None:
            cls.status_code = status_code

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def detail(self) -> Any:
        """What the API answers as ``{"detail": ...}``."""
        return self.message


class NotFound(DomainError, status_code=404):
    """No such project, run, series, rule, token, webhook or silence."""


class Conflict(DomainError, status_code=409):
    """The request contradicts what is stored (a batch id reused, a rule name taken)."""


class Unauthorized(DomainError, status_code=401):
    """No token, or one that is unknown or revoked (answered with ``WWW-Authenticate``)."""


class Forbidden(DomainError, status_code=403):
    """A valid token that may not do this (an ingest token of another project)."""


class PayloadTooLarge(DomainError, status_code=413):
    """A request body over the configured limit, compressed or not."""


class BadRequest(DomainError, status_code=400):
    """A body that cannot be read at all (an unknown encoding, broken gzip)."""


class Busy(DomainError, status_code=429):
    """The server is under load and says when to come back (429 with ``Retry-After``, the
    contract's "throttled": not a 5xx, nothing is wrong with the server); a client that waits
    and sends again loses nothing."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Throttled(Busy):
    """Too many failed authentications from one address: 429 with ``Retry-After``."""


class Invalid(DomainError, status_code=422):
    """A field the schema accepted but the domain refuses (an unknown indicator, a merged
    update that no longer holds together). Answered like FastAPI's own 422: a list of
    ``{"loc", "msg", "type"}`` saying which field."""

    def __init__(
        self,
        message: str,
        loc: Sequence[str | int] = ("body",),
        problems: Sequence[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.problems = (
            list(problems)
            if problems is not None
            else [{"type": "value_error", "loc": list(loc), "msg": message}]
        )

    @property
    def detail(self) -> Any:
        return self.problems


class NotImplementedHere(DomainError, status_code=501):
    """A feature this installation cannot serve (an optional dependency is missing)."""
