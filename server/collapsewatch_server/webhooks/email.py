"""Email receivers: one message per notification, sent through the configured SMTP server.

A receiver's ``url`` is ``mailto:`` and its addresses, comma-separated. Sending is blocking
(:mod:`smtplib`); the deliverer runs it in a thread. An answer the mail server gives is
classified like an HTTP one: a 4xx reply (try later) is retried, a 5xx refusal is not.
"""

from __future__ import annotations

import smtplib
import time
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from urllib.parse import unquote

from collapsewatch_server import errors
from collapsewatch_server.config import Settings
from collapsewatch_server.webhooks.payloads import detail_lines, summary
from collapsewatch_web.api_schemas.webhooks import WebhookPayload

SCHEME = "mailto:"


def recipients(url: str) -> list[str]:
    """The addresses of a ``mailto:`` URL; ValueError naming the URL when it has none."""
    if not url.startswith(SCHEME):
        raise ValueError(errors.EMAIL_URL.format(url=url))
    found = [a.strip() for a in unquote(url[len(SCHEME) :]).split("?")[0].split(",")]
    if not found or not all("@" in a and " " not in a for a in found):
        raise ValueError(errors.EMAIL_URL.format(url=url))
    return found


def message(p: WebhookPayload, sender: str, to: list[str]) -> EmailMessage:
    """The mail of a notification: the title as subject, a line per alert, the link."""
    msg = EmailMessage()
    msg["Subject"] = f"[collapsewatch] {p.title}"
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(idstring=str(p.id))
    msg["X-Collapsewatch-Notification"] = str(p.id)
    lines = [summary(p), "", *detail_lines(p), "", p.url]
    msg.set_content("\n".join(lines))
    return msg


def send(settings: Settings, msg: EmailMessage) -> None:
    """Send ``msg`` (blocking); raises :class:`smtplib.SMTPException` or :class:`OSError`."""
    if not settings.smtp_host:
        raise smtplib.SMTPException(errors.SMTP_NOT_SET)
    with smtplib.SMTP(
        settings.smtp_host, settings.smtp_port, timeout=settings.webhook_timeout_s
    ) as smtp:
        if settings.smtp_starttls:
            smtp.starttls()
        if settings.smtp_username and settings.smtp_password:
            smtp.login(settings.smtp_username, settings.smtp_password.get_secret_value())
        smtp.send_message(msg)


#: What stands in for an HTTP status when the mail server took the message.
ACCEPTED = 250


def deliver(
    settings: Settings, p: WebhookPayload, url: str
) -> tuple[int | None, str | None, bool, float]:
    """Send a notification's mail: (250 or None, error, whether retrying may help, latency
    ms). A 4xx reply of the mail server (try later), a refused connection or a timeout may
    pass; a 5xx refusal or a bad address will not."""
    start = time.perf_counter()
    code: int | None = None
    error: str | None = None
    retryable = True
    try:
        send(settings, message(p, settings.smtp_from, recipients(url)))
        code = ACCEPTED
    except smtplib.SMTPResponseException as exc:
        reply = exc.smtp_error
        text = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
        error = f"SMTP {exc.smtp_code}: {text}"
        retryable = exc.smtp_code < 500
    except smtplib.SMTPRecipientsRefused as exc:
        error, retryable = f"recipients refused: {', '.join(exc.recipients)}", False
    except ValueError as exc:
        error, retryable = str(exc), False
    except (smtplib.SMTPException, OSError) as exc:
        error = f"{type(exc).__name__}: {exc}" if str(exc) else repr(exc)
    return code, error, retryable, round((time.perf_counter() - start) * 1000.0, 3)
