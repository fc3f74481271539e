"""``collapsewatch webhooks ...``: manage a project's webhooks through a server's HTTP API.

Like ``collapsewatch rules`` it talks HTTP (httpx, imported when a command runs), so it works
against any server and needs only the SDK installed; it shares that module's request helper.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from collapsewatch_server.cli_http import project_options, request, run_command
from collapsewatch_web.api_schemas.alerts import Severity
from collapsewatch_web.api_schemas.webhooks import WEBHOOK_FORMATS

if TYPE_CHECKING:
    import httpx

#: Severities in the schema's order (least severe first), as the API lists them.
SEVERITIES = [s.value for s in Severity]


def add_parser(sub: Any) -> None:
    """Register ``webhooks`` and its subcommands on the main parser's subparsers."""
    common = project_options()

    hooks = sub.add_parser("webhooks", help="manage webhooks (through the server)")
    hooks_sub = hooks.add_subparsers(dest="webhooks_command", required=True)
    hooks_sub.add_parser("list", parents=[common], help="list a project's webhooks")
    create = hooks_sub.add_parser(
        "create", parents=[common], help="create a webhook; prints its secret once"
    )
    create.add_argument(
        "--url",
        required=True,
        help="where to POST alerts (http or https; PagerDuty's Events v2 URL; mailto:a@b,c@d)",
    )
    create.add_argument("--format", choices=WEBHOOK_FORMATS, default="generic")
    create.add_argument(
        "--severity",
        dest="severities",
        action="append",
        choices=SEVERITIES,
        help="send only these severities (repeat the flag); default all",
    )
    create.add_argument("--name", default="")
    create.add_argument("--routing-key", help="PagerDuty's integration key (format pagerduty)")
    create.add_argument("--secret", help="whsec_<base64> of 24+ bytes; default: generated")
    create.add_argument("--disabled", action="store_true", help="create it disabled")
    for name, text in (
        ("delete", "delete a webhook and its delivery log"),
        ("test", "send a signed test event now and show what the receiver answered"),
        ("deliveries", "show a webhook's recent deliveries and their attempts"),
    ):
        hooks_sub.add_parser(name, parents=[common], help=text).add_argument("id", type=int)
    hooks.set_defaults(func=cmd_webhooks)


def format_table(hooks: Sequence[dict[str, Any]]) -> str:
    """Webhooks as an aligned text table."""
    header = ("ID", "NAME", "FORMAT", "SEVERITIES", "ENABLED", "SECRET", "URL")
    rows = [
        (
            str(h["id"]),
            h["name"] or "-",
            h["format"],
            ",".join(h["severities"]),
            "yes" if h["enabled"] else "no",
            h["secret_hint"],
            h["url"],
        )
        for h in hooks
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )


def format_test(result: dict[str, Any]) -> str:
    """One line: what the receiver answered to a test event, or why nothing was answered."""
    if result["status_code"] is None:
        return f"failed: {result['error']}"
    verdict = "ok" if result["ok"] else "failed"
    line = f"{verdict}: HTTP {result['status_code']} in {result['latency_ms']:.0f} ms"
    body = result["response_body"].strip().replace("\n", " ")
    return f"{line}: {body[:200]}" if body else line


def format_deliveries(deliveries: Sequence[dict[str, Any]]) -> str:
    """Each delivery (a notification carrying a group of events, or a test send) on a line,
    its attempts indented below it."""
    lines = []
    for d in deliveries:
        what = "test" if d["test"] else d["event_status"]
        labels = " ".join(f"{k}={v}" for k, v in d["group"].items() if k not in ("status", "run"))
        carried = "" if d["test"] else f"  {len(d['event_ids'])} event(s)  {labels}".rstrip()
        lines.append(
            f"{d['id']}  {d['created_at'][:19]}  {what:<8}  {d['status']:<10}  "
            f"{d['attempts']} attempt(s){carried}"
        )
        for a in d["log"]:
            answer = f"HTTP {a['status_code']}" if a["status_code"] is not None else "-"
            error = f"  {a['error']}" if a["error"] else ""
            latency = f"{a['latency_ms']:.0f} ms" if a["latency_ms"] is not None else "-"
            lines.append(f"    {a['attempted_at'][:23]}  {answer:<8}  {latency:>7}{error}")
    return "\n".join(lines) if lines else "no deliveries yet"


def _create_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"url": args.url, "format": args.format, "name": args.name}
    if args.severities:
        body["severities"] = sorted(set(args.severities), key=SEVERITIES.index)
    if args.secret:
        body["secret"] = args.secret
    if args.disabled:
        body["enabled"] = False
    if args.routing_key:
        body["routing_key"] = args.routing_key
    return body


def cmd_webhooks(args: argparse.Namespace, client: httpx.Client | None = None) -> int:
    """Run one ``webhooks`` subcommand; ``client`` lets tests hand in an app's TestClient."""

    def run(http: httpx.Client, base: str, token: str | None) -> int:
        command = args.webhooks_command
        if command == "list":
            print(format_table(request(http, "GET", base, token)))
        elif command == "create":
            created = request(http, "POST", base, token, json=_create_body(args))
            print(created["secret"])
            print(
                f"collapsewatch: webhook {created['id']} -> {created['url']} "
                f"({created['format']}); its signing secret is shown only now.",
                file=sys.stderr,
            )
        elif command == "delete":
            request(http, "DELETE", f"{base}/{args.id}", token)
            print(f"collapsewatch: webhook {args.id} deleted")
        elif command == "test":
            result = request(http, "POST", f"{base}/{args.id}/test", token)
            print(format_test(result))
            return 0 if result["ok"] else 1
        else:
            print(format_deliveries(request(http, "GET", f"{base}/{args.id}/deliveries", token)))
        return 0

    return run_command(args, client, "webhooks", run)
