"""``collapsewatch rules ...``: manage a project's alert rules through a server's HTTP API.

Talks HTTP (httpx, the SDK's own client), so it works against any server, local or remote,
and needs only the SDK installed. httpx is imported when a rules command runs, so the other
commands keep their light start.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from collapsewatch_server.cli_http import CliError, aligned, project_options, request, run_command

if TYPE_CHECKING:
    import httpx

#: (flag, field, type, help) of the rule fields settable from the command line.
_FIELDS: tuple[tuple[str, str, type, str], ...] = (
    ("--name", "name", str, "rule name, unique in the project"),
    ("--description", "description", str, "free text"),
    ("--indicator", "indicator", str, "indicator name (GET /api/v1/indicators)"),
    ("--condition", "condition", str, "above, below, outside, drop or rise"),
    ("--threshold", "threshold", float, "for above/below"),
    ("--low", "low", float, "band low, for outside"),
    ("--high", "high", float, "band high, for outside"),
    ("--percent", "percent", float, "for drop/rise: percent from the reference"),
    ("--reference", "reference", str, "for drop/rise: peak (default) or baseline"),
    ("--baseline-points", "baseline_points", int, "points averaged into the baseline"),
    ("--probe", "probe", str, "probe (layer) glob, default *"),
    ("--run", "run", str, "run name glob, default every run"),
    ("--pending-points", "pending_points", int, "consecutive breaching points before firing"),
    ("--pending-steps", "pending_steps", int, "steps a breach must last before firing"),
    ("--recovery", "recovery", float, "resolve only past this value"),
    ("--warmup-steps", "warmup_steps", int, "ignore points before this step"),
    ("--severity", "severity", str, "info, warning or critical"),
    ("--repeat-interval", "repeat_interval_s", float, "seconds between reminders while firing"),
)
_SHOWN = ("id", "name", "project", "indicator", "probe", "run", "condition", "threshold", "low",
          "high", "percent", "reference", "baseline_points", "pending_points", "pending_steps",
          "recovery", "warmup_steps", "severity", "repeat_interval_s", "enabled", "is_default",
          "description", "created_at", "updated_at")  # fmt: skip


def add_parser(sub: Any) -> None:
    """Register ``rules`` and its subcommands on the main parser's subparsers."""
    common = project_options()

    def fields(p: argparse.ArgumentParser) -> None:
        p.add_argument("--json", dest="json_file", help="rule fields as JSON ('-': stdin)")
        for flag, dest, kind, text in _FIELDS:
            p.add_argument(
                flag, dest=f"field_{dest}", type=kind, metavar=kind.__name__.upper(), help=text
            )

    rules = sub.add_parser("rules", help="manage alert rules (through the server)")
    rules_sub = rules.add_subparsers(dest="rules_command", required=True)
    rules_sub.add_parser("list", parents=[common], help="list a project's rules")
    for name, text in (
        ("show", "show one rule"),
        ("delete", "delete a rule"),
        ("enable", "enable a rule"),
        ("disable", "disable a rule (kept, not evaluated)"),
    ):
        rules_sub.add_parser(name, parents=[common], help=text).add_argument("id", type=int)
    create = rules_sub.add_parser(
        "create", parents=[common], help="create a rule from flags and/or --json FILE"
    )
    fields(create)
    create.add_argument("--disabled", action="store_true", help="create it disabled")
    update = rules_sub.add_parser(
        "update", parents=[common], help="change the given fields of a rule"
    )
    update.add_argument("id", type=int)
    fields(update)
    rules.set_defaults(func=cmd_rules)


def _body(args: argparse.Namespace) -> dict[str, Any]:
    """Rule fields from --json (if any), overridden by the flags given."""
    body: dict[str, Any] = {}
    if args.json_file:
        try:
            text = sys.stdin.read() if args.json_file == "-" else Path(args.json_file).read_text()
            body = json.loads(text)
        except (OSError, ValueError) as exc:
            raise CliError(f"cannot read rule JSON from {args.json_file}: {exc}") from exc
        if not isinstance(body, dict):
            raise CliError("the rule JSON must be an object")
    for _, dest, _, _ in _FIELDS:
        value = getattr(args, f"field_{dest}")
        if value is not None:
            body[dest] = value
    if getattr(args, "disabled", False):
        body["enabled"] = False
    return body


def describe_condition(rule: dict[str, Any]) -> str:
    """A rule's condition as one short phrase: "> 0.5", "drop 50% from peak", ..."""
    c = rule["condition"]
    if c in ("above", "below"):
        text = f"{'>' if c == 'above' else '<'} {rule['threshold']:g}"
    elif c == "outside":
        text = f"outside [{rule['low']:g}, {rule['high']:g}]"
    else:
        text = f"{c} {rule['percent']:g}% from {rule['reference']}"
    if rule.get("recovery") is not None:
        text += f", recover at {rule['recovery']:g}"
    return text


def _pending(rule: dict[str, Any]) -> str:
    if rule.get("pending_points") is not None:
        return f"{rule['pending_points']} pts"
    if rule.get("pending_steps") is not None:
        return f"{rule['pending_steps']} steps"
    return "-"


def _warmup(rule: dict[str, Any]) -> str:
    """When judging starts: "<200 or healthy" (threshold rules also start at their layer's
    first healthy point), ">=200" (drop, rise), "-" without a warm-up."""
    steps = rule.get("warmup_steps") or 0
    if not steps:
        return "-"
    return f">={steps}" if rule["condition"] in ("drop", "rise") else f"<{steps} or healthy"


def format_table(rules: Sequence[dict[str, Any]]) -> str:
    """Rules as an aligned text table."""
    header = (
        "ID", "NAME", "INDICATOR", "PROBE", "CONDITION", "PENDING", "WARM-UP", "SEVERITY", "ENABLED"
    )  # fmt: skip
    rows = [
        (
            str(r["id"]),
            r["name"],
            r["indicator"],
            r["probe"] + (f" (run {r['run']})" if r.get("run") else ""),
            describe_condition(r),
            _pending(r),
            _warmup(r),
            r["severity"],
            "yes" if r["enabled"] else "no",
        )
        for r in rules
    ]
    return aligned(header, rows)


def format_rule(rule: dict[str, Any]) -> str:
    """One rule, a field a line."""
    width = max(len(k) for k in _SHOWN)

    def text(value: Any) -> str:
        if isinstance(value, bool):
            return "yes" if value else "no"
        return "-" if value in (None, "") else str(value)

    return "\n".join(f"{k.ljust(width)}  {text(rule.get(k))}" for k in _SHOWN)


def cmd_rules(args: argparse.Namespace, client: httpx.Client | None = None) -> int:
    """Run one ``rules`` subcommand; ``client`` lets tests hand in an app's TestClient."""

    def run(http: httpx.Client, base: str, token: str | None) -> None:
        command = args.rules_command
        if command == "list":
            print(format_table(request(http, "GET", base, token)))
        elif command == "show":
            print(format_rule(request(http, "GET", f"{base}/{args.id}", token)))
        elif command == "create":
            print(format_rule(request(http, "POST", base, token, json=_body(args))))
        elif command == "update":
            body = _body(args)
            if not body:
                raise CliError("nothing to update: give field flags or --json")
            print(format_rule(request(http, "PUT", f"{base}/{args.id}", token, json=body)))
        elif command == "delete":
            request(http, "DELETE", f"{base}/{args.id}", token)
            print(f"collapsewatch: rule {args.id} deleted")
        else:  # enable / disable
            rule = request(http, "POST", f"{base}/{args.id}/{command}", token)
            print(f"collapsewatch: rule {rule['id']} ({rule['name']}) {command}d")

    return run_command(args, client, "rules", run)
