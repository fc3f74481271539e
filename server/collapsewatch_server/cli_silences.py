"""``collapsewatch silences ...``: silence a project's alerts for a while, through a server's
HTTP API (like ``collapsewatch webhooks``, it needs only the SDK installed).

``collapsewatch silences create --project p --run 'sweep-*' --for 2h`` keeps matching events
from being delivered for two hours; they are still recorded and shown, marked silenced.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from collapsewatch_server.cli_http import CliError, project_options, request, run_command
from collapsewatch_web.api_schemas.alerts import Severity

if TYPE_CHECKING:
    import httpx

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
BAD_DURATION = "duration {text!r}: write a number and a unit, like 90m, 2h or 1d"


def parse_duration(text: str) -> float:
    """Seconds of ``30s``, ``90m``, ``2h``, ``1d`` (or a bare number of seconds)."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not found or float(found.group(1)) <= 0:
        raise CliError(BAD_DURATION.format(text=text))
    return float(found.group(1)) * _UNITS[found.group(2) or "s"]


def add_parser(sub: Any) -> None:
    """Register ``silences`` and its subcommands on the main parser's subparsers."""
    common = project_options()
    silences = sub.add_parser("silences", help="silence alerts for a while (through the server)")
    silences_sub = silences.add_subparsers(dest="silences_command", required=True)
    listing = silences_sub.add_parser("list", parents=[common], help="list a project's silences")
    listing.add_argument("--active", action="store_true", help="only those in force now")
    create = silences_sub.add_parser(
        "create", parents=[common], help="silence matching alerts; unset matchers match all"
    )
    create.add_argument("--run", help="run name glob, e.g. 'sweep-*'")
    create.add_argument("--rule", help="rule name")
    create.add_argument("--indicator", help="indicator name, e.g. dead_fraction")
    create.add_argument("--probe", help="probe name glob, e.g. 'blocks.*'")
    create.add_argument("--severity", choices=[s.value for s in Severity])
    create.add_argument(
        "--for", dest="duration", required=True, help="how long: 30m, 2h, 1d (from now)"
    )
    create.add_argument("--comment", default="", help="why (shown on the alerts page)")
    silences_sub.add_parser(
        "delete", parents=[common], help="delete a silence: alerts are delivered again"
    ).add_argument("id", type=int)
    silences.set_defaults(func=cmd_silences)


def format_table(silences: Sequence[dict[str, Any]]) -> str:
    """Silences as an aligned text table."""
    header = ("ID", "ACTIVE", "MATCHES", "UNTIL", "SILENCED", "COMMENT")
    rows = []
    for s in silences:
        matchers = [f"{k}={s[k]}" for k in ("run", "rule", "indicator", "probe", "severity")]
        rows.append(
            (
                str(s["id"]),
                "yes" if s["active"] else "no",
                " ".join(m for m in matchers if not m.endswith("=None")) or "everything",
                s["ends_at"][:19],
                str(s["silenced_events"]),
                s["comment"] or "-",
            )
        )
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )


def _create_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"duration_s": parse_duration(args.duration), "comment": args.comment}
    for name in ("run", "rule", "indicator", "probe", "severity"):
        if getattr(args, name):
            body[name] = getattr(args, name)
    return body


def cmd_silences(args: argparse.Namespace, client: httpx.Client | None = None) -> int:
    """Run one ``silences`` subcommand; ``client`` lets tests hand in an app's TestClient."""

    def run(http: httpx.Client, base: str, token: str | None) -> int:
        command = args.silences_command
        if command == "list":
            params = {"active": "true"} if args.active else {}
            print(format_table(request(http, "GET", base, token, params=params)))
        elif command == "create":
            created = request(http, "POST", base, token, json=_create_body(args))
            print(f"collapsewatch: silence {created['id']} until {created['ends_at'][:19]} UTC")
        else:
            request(http, "DELETE", f"{base}/{args.id}", token)
            print(f"collapsewatch: silence {args.id} deleted")
        return 0

    return run_command(args, client, "silences", run)
