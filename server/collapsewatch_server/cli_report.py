"""``collapsewatch report RUN_ID -o run.html``: save a run's self-contained HTML report from a
server (``GET /runs/{run_id}/report.html``), to attach to an issue or a review."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from collapsewatch_server.cli_http import bearer, detail, server_option

if TYPE_CHECKING:
    import httpx


def add_parser(sub: Any) -> None:
    """Register ``report`` on the main parser's subparsers."""
    report = sub.add_parser("report", help="save a run's self-contained HTML report")
    report.add_argument("run_id", help="the run's id (on its page and in `collapsewatch.Api`)")
    report.add_argument(
        "-o", "--output", help="file to write (default: the name the server gives it)"
    )
    server_option(report)
    report.add_argument(
        "--token",
        default=os.environ.get("COLLAPSEWATCH_ADMIN_TOKEN"),
        help="the server's admin token (default: COLLAPSEWATCH_ADMIN_TOKEN)",
    )
    report.set_defaults(func=cmd_report)


def _filename(response: httpx.Response, run_id: str) -> str:
    disposition = response.headers.get("content-disposition", "")
    _, _, name = disposition.partition('filename="')
    name = Path(name.rstrip('"')).name  # never a path the server chose
    return name or f"{run_id}-report.html"


def cmd_report(args: argparse.Namespace, client: httpx.Client | None = None) -> int:
    """Fetch the report and write it; exit 1 with the server's reason when it refuses."""
    import httpx

    http = client or httpx.Client(base_url=args.server.rstrip("/"), timeout=120)
    try:
        response = http.get(f"/runs/{args.run_id}/report.html", headers=bearer(args.token))
    except httpx.HTTPError as exc:
        print(f"collapsewatch: cannot reach the server: {exc}", file=sys.stderr)
        return 1
    finally:
        if client is None:
            http.close()
    if response.status_code != 200 or "html" not in response.headers.get("content-type", ""):
        reason = "log in with --token" if response.status_code in (303, 401) else None
        print(f"collapsewatch: no report: {reason or _reason(response)}", file=sys.stderr)
        return 1
    target = Path(args.output or _filename(response, args.run_id))
    target.write_bytes(response.content)
    size = len(response.content) / 1e6
    print(f"collapsewatch: report of run {args.run_id} written to {target} ({size:.1f} MB)")
    return 0


def _reason(response: httpx.Response) -> str:
    if response.headers.get("content-type", "").startswith("application/json"):
        return detail(response)
    return (
        f"run not found (HTTP {response.status_code})"
        if response.status_code == 404
        else (f"HTTP {response.status_code}")
    )
