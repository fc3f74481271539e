"""What the HTTP subcommands of the CLI share: the server default, requests, error text, and
tables in aligned columns."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from collapsewatch.config import DEFAULT_SERVER, ENV_SERVER

if TYPE_CHECKING:
    import httpx


class CliError(Exception):
    """Printed as ``collapsewatch: <message>``; the command exits 1."""


def aligned(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """``header`` and ``rows`` as lines of columns, each column as wide as its widest cell and
    two spaces apart (no trailing blanks)."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )


def detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    if isinstance(detail, list):  # 422: [{"loc": [...], "msg": ...}, ...]
        return "; ".join(
            f"{'.'.join(str(x) for x in p.get('loc', []) if x != 'body') or 'rule'}: {p.get('msg')}"
            for p in detail
        )
    return f"{detail} (HTTP {response.status_code})"


def request(client: httpx.Client, method: str, url: str, token: str | None, **kw: Any) -> Any:
    import httpx

    headers = bearer(token)
    if method in ("POST", "PUT", "PATCH"):  # the server takes them only declared JSON
        headers["Content-Type"] = "application/json"
    try:
        response = client.request(method, url, headers=headers, **kw)
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach the server: {exc}") from exc
    if response.status_code >= 400:
        raise CliError(detail(response))
    return response.json() if response.content else None


def bearer(token: str | None) -> dict[str, str]:
    """The ``Authorization`` header that carries ``token``; none without a token."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def server_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--server``: the server's base URL, by default as the SDK finds it
    (``COLLAPSEWATCH_SERVER``, else the local server)."""
    parser.add_argument(
        "--server",
        default=os.environ.get(ENV_SERVER, DEFAULT_SERVER),
        help=f"server URL (default: {ENV_SERVER} or {DEFAULT_SERVER})",
    )


def project_options() -> argparse.ArgumentParser:
    """``--project``, ``--server`` and ``--token`` of every subcommand that talks to the API."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--project",
        default=os.environ.get("COLLAPSEWATCH_PROJECT"),
        required="COLLAPSEWATCH_PROJECT" not in os.environ,
        help="project name (default: COLLAPSEWATCH_PROJECT)",
    )
    server_option(common)
    common.add_argument(
        "--token",
        default=os.environ.get("COLLAPSEWATCH_ADMIN_TOKEN")
        or os.environ.get("COLLAPSEWATCH_TOKEN"),
        help="token (default: COLLAPSEWATCH_ADMIN_TOKEN, else COLLAPSEWATCH_TOKEN)",
    )
    return common


#: One subcommand's work: ``(client, base URL of the project's resource, token)`` -> exit code
#: (None: 0).
Command = Callable[["httpx.Client", str, "str | None"], "int | None"]


def run_command(
    args: argparse.Namespace, client: httpx.Client | None, resource: str, command: Command
) -> int:
    """Run ``command`` against ``/api/v1/projects/{project}/{resource}`` of ``--server`` (or
    ``client``: tests hand in an app's TestClient); a :class:`CliError` is printed as
    ``collapsewatch: <message>`` and exits 1."""
    import httpx

    own = client is None
    http = client or httpx.Client(base_url=args.server.rstrip("/"), timeout=30)
    try:
        return command(http, f"/api/v1/projects/{args.project}/{resource}", args.token) or 0
    except CliError as exc:
        print(f"collapsewatch: {exc}", file=sys.stderr)
        return 1
    finally:
        if own:
            http.close()
