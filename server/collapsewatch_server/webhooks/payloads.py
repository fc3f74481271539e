"""Webhook bodies: pure functions from a notification (a group of alert events) to the bytes a
receiver gets.

``generic`` is the :class:`~collapsewatch_web.api_schemas.webhooks.WebhookPayload` JSON, every
alert with its detail, worst first; ``slack`` and ``discord`` are messages those services'
incoming webhooks post as they are: a summary line ("Dead units: 5 layers of run X critical
since step 240"), a line per layer (cut to what the service shows) and a link; ``pagerduty`` is
a PagerDuty Events v2 event (:mod:`.pagerduty`); ``email`` a mail (:mod:`.email`).
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from collapsewatch_server.webhooks.grouping import NODATA_FAMILY, family_of, labels_of
from collapsewatch_web.api_schemas.alerts import AlertEventPublic, EventStatus, Severity
from collapsewatch_web.api_schemas.webhooks import AlertItem, WebhookFormat, WebhookPayload
from collapsewatch_web.views import family_title

SEVERITY_EMOJI = {Severity.info: "🔵", Severity.warning: "🟠", Severity.critical: "🔴"}
RESOLVED_EMOJI = "✅"
NODATA_EMOJI = "⏸️"
TEST_EMOJI = "🧪"
#: Discord embed colours: resolved is green whatever the severity, nodata grey.
SEVERITY_COLOUR = {Severity.info: 0x3498DB, Severity.warning: 0xF39C12, Severity.critical: 0xE74C3C}
RESOLVED_COLOUR = 0x2ECC71
NODATA_COLOUR = 0x95A5A6
TEST_MESSAGE = "Test event from collapsewatch: this webhook is reachable and signed."
TEST_TITLE = f"{TEST_EMOJI} Test from collapsewatch ({{project}})"

# Limits of the receiving services; longer texts are cut rather than rejected by them.
_SLACK_HEADER_MAX = 150
_SLACK_TEXT_MAX = 3000
_DISCORD_CONTENT_MAX = 2000
_DISCORD_TITLE_MAX = 256
_DISCORD_DESCRIPTION_MAX = 4096
#: Layers listed one per line in chat messages; the rest are counted ("… and 12 more").
CHAT_LINES = 10
SCALARS_FAMILY = "scalars"


@dataclass(frozen=True)
class Notification:
    """What one delivery carries: its id (the ``webhook-id``), group key and events, worst
    first (:func:`~collapsewatch_server.webhooks.grouping.worst_first`)."""

    id: uuid.UUID
    project: str
    group_key: str
    events: Sequence[AlertEventPublic]
    url: str


def _item(e: AlertEventPublic) -> AlertItem:
    return AlertItem(
        event_id=e.id,
        status=e.status,
        severity=e.severity,
        rule=None if e.rule_name is None else {"id": e.rule_id, "name": e.rule_name},
        indicator=e.indicator,
        probe=e.probe,
        value=e.value,
        threshold=e.threshold,
        step=e.step,
        reminder=e.reminder,
        message=e.message,
        time=e.created_at,
        url=e.url,
    )


def build_payload(n: Notification) -> WebhookPayload:
    """The generic payload of a notification."""
    events = n.events
    first = events[0]
    runs = {e.run_id for e in events}
    families = {family_of(e.indicator) for e in events}
    steps = [e.step for e in events if e.step is not None]
    one_run = len(runs) == 1
    return WebhookPayload(
        type=f"alert.{first.status.value}",  # type: ignore[arg-type]
        id=n.id,
        status=first.status,
        severity=first.severity,  # worst first
        project=n.project,
        run={"id": str(first.run_id), "name": first.run_name}
        if one_run
        else {"id": None, "name": None},
        family=families.pop() if len(families) == 1 else None,
        group=labels_of(n.group_key),
        title=title(events),
        since_step=min(steps) if steps else None,
        alerts=[_item(e) for e in events],
        time=max(e.created_at for e in events),
        url=first.url if one_run else n.url,
    )


def make_test_payload(project: str, url: str, time: datetime) -> WebhookPayload:
    """A test notification (``POST .../webhooks/{id}/test``): a fresh id, no alerts."""
    return WebhookPayload(
        type="test",
        id=uuid.uuid4(),
        status="test",
        severity=Severity.info,
        project=project,
        run={"id": None, "name": None},
        title=TEST_TITLE.format(project=project),
        time=time,
        url=url,
    )


def render(payload: WebhookPayload, fmt: WebhookFormat) -> bytes:
    """The request body for a chat or generic webhook (UTF-8 JSON, compact)."""
    if fmt == "generic":
        return payload.model_dump_json().encode()
    if fmt == "slack":
        doc = slack_message(payload)
    elif fmt == "discord":
        doc = discord_message(payload)
    else:
        raise ValueError(f"format {fmt!r} is not rendered as a webhook body")
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


# ------------------------------------------------------------------------------ text


def num(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4g}" if math.isfinite(value) else str(value)


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _what(events: Sequence[AlertEventPublic]) -> str:
    """What the group is about: its family's title, or its rules when families differ."""
    families = {family_of(e.indicator) for e in events}
    if len(families) == 1:
        return family_title(families.pop())
    rules = sorted({e.rule_name or e.indicator or "alert" for e in events})
    return ", ".join(rules[:3]) + (f" and {len(rules) - 3} more" if len(rules) > 3 else "")


def _where(events: Sequence[AlertEventPublic]) -> str:
    probes = {e.probe for e in events if e.probe}
    runs = sorted({e.run_name for e in events})
    # logged scalars are metrics, not layers
    noun = "metric" if {family_of(e.indicator) for e in events} == {SCALARS_FAMILY} else "layer"
    layers = f"{len(probes)} {noun}s" if probes else f"no {noun}"
    if len(probes) == 1:
        layers = f"{noun} {next(iter(probes))}"
    run = f"run {runs[0]}" if len(runs) == 1 else f"{len(runs)} runs"
    return f"{layers} of {run}"


def title(events: Sequence[AlertEventPublic]) -> str:
    """One line saying what happened, with the worst severity's emoji, e.g.
    "🔴 Dead units: 5 layers of run X critical since step 240"."""
    first = events[0]
    if first.status == EventStatus.nodata or family_of(first.indicator) == NODATA_FAMILY:
        runs = ", ".join(sorted({e.run_name for e in events}))
        return f"{NODATA_EMOJI} No data: run {runs} stopped sending"
    steps = [e.step for e in events if e.step is not None]
    since = f" since step {min(steps)}" if steps else ""
    if first.status == EventStatus.resolved:
        return f"{RESOLVED_EMOJI} Resolved: {_what(events)} on {_where(events)}"
    still = "still " if all(e.reminder for e in events) else ""
    return (
        f"{SEVERITY_EMOJI[first.severity]} {_what(events)}: {_where(events)} "
        f"{still}{first.severity.value}{since}"
    )


def alert_line(a: AlertItem) -> str:
    """One alert as a line: where, which rule, value vs threshold, step."""
    where = a.probe or "run"
    rule = (a.rule or {}).get("name") or a.indicator or "alert"
    value = ""
    if a.value is not None or a.threshold is not None:
        value = f" {num(a.value)} (threshold {num(a.threshold)})"
    step = f" at step {a.step}" if a.step is not None else ""
    return f"{where}: {rule}{value}{step} [{a.severity.value}]"


def detail_lines(p: WebhookPayload, limit: int | None = None) -> list[str]:
    """A line per alert, worst first; past ``limit``, one line counting the rest."""
    lines = [alert_line(a) for a in p.alerts]
    if limit is not None and len(lines) > limit:
        lines = [*lines[:limit], f"… and {len(lines) - limit} more"]
    return lines


def summary(p: WebhookPayload) -> str:
    """The plain-text fallback: the title, the project and the alerts' messages' first."""
    if p.status == "test":
        return f"{p.title}. {TEST_MESSAGE}"
    message = p.alerts[0].message if p.alerts and p.alerts[0].message else ""
    return f"{p.title} (project {p.project})" + (f". {message}" if message else "")


# ------------------------------------------------------------------------------ slack


def _slack_escape(text: str) -> str:
    # Slack's mrkdwn treats these three as control characters (links, mentions).
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_message(p: WebhookPayload) -> dict[str, Any]:
    """An incoming-webhook message: ``text`` (notifications, old clients) plus Block Kit."""
    body = "\n".join(f"• {_slack_escape(line)}" for line in detail_lines(p, CHAT_LINES))
    return {
        "text": _cut_slack(summary(p)),
        "blocks": [
            {
                "type": "header",
                "text": {"type": "plain_text", "text": cut(p.title, _SLACK_HEADER_MAX)},
            },
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": _cut_slack(body or _slack_escape(summary(p)))},
            },
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Open in collapsewatch"},
                        "url": p.url,
                    }
                ],
            },
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": f"project {_slack_escape(p.project)} · notification {p.id} · "
                        f"{p.time.isoformat()}",
                    }
                ],
            },
        ],
    }


def _cut_slack(text: str) -> str:
    return cut(text, _SLACK_TEXT_MAX)


# ---------------------------------------------------------------------------- discord


def _colour(p: WebhookPayload) -> int:
    if p.status == "resolved":
        return RESOLVED_COLOUR
    if p.status == "nodata":
        return NODATA_COLOUR
    return SEVERITY_COLOUR[p.severity]


def discord_message(p: WebhookPayload) -> dict[str, Any]:
    """An execute-webhook message: ``content`` plus one embed coloured by the worst severity."""
    return {
        "content": cut(summary(p), _DISCORD_CONTENT_MAX),
        # Run and rule names are user text: never let them ping @everyone or a role.
        "allowed_mentions": {"parse": []},
        "embeds": [
            {
                "title": cut(p.title, _DISCORD_TITLE_MAX),
                "description": cut(
                    "\n".join(detail_lines(p, CHAT_LINES)) or summary(p), _DISCORD_DESCRIPTION_MAX
                ),
                "url": p.url,
                "color": _colour(p),
                "timestamp": p.time.isoformat(),
                "footer": {"text": f"collapsewatch · {p.project} · notification {p.id}"},
            }
        ],
    }
