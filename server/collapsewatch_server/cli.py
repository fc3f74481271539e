"""The ``collapsewatch`` command: serve, demo, token, sync, migrate, rules, webhooks, report.

Only the standard library is imported at module level: ``collapsewatch sync`` works with the
SDK alone, and the server's dependencies load only for the commands that need them.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import faulthandler
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from collapsewatch._version import __version__
from collapsewatch_server import allocator, cli_report, cli_rules, cli_silences, cli_webhooks

if TYPE_CHECKING:
    from collapsewatch_server.config import Settings

PORT_IN_USE = (
    "collapsewatch: port {port} on {host} is in use (another collapsewatch server?); "
    "stop it, or pick another port with --port, e.g. --port {other}"
)
_NEEDS_SERVER_EXTRA = (
    "collapsewatch: this command needs the server extra: pip install 'collapsewatch[server]'"
)


def _settings(args: argparse.Namespace) -> Settings:
    try:
        from collapsewatch_server.config import Settings
    except ImportError:
        sys.exit(_NEEDS_SERVER_EXTRA)
    overrides: dict[str, Any] = {}
    for field in ("host", "port", "db_url"):
        value = getattr(args, field, None)
        if value is not None:
            overrides[field] = value
    return Settings(**overrides)


def _check_bind(settings: Settings) -> None:
    from collapsewatch_server.auth import MIN_PUBLIC_TOKEN_CHARS
    from collapsewatch_server.config import is_loopback
    from collapsewatch_server.errors import REFUSE_PUBLIC_WITHOUT_TOKEN, REFUSE_WEAK_TOKEN

    if is_loopback(settings.host):
        return
    if settings.admin_token is None:
        sys.exit("collapsewatch: " + REFUSE_PUBLIC_WITHOUT_TOKEN.format(host=settings.host))
    if len(settings.admin_token.get_secret_value()) < MIN_PUBLIC_TOKEN_CHARS:
        message = REFUSE_WEAK_TOKEN.format(host=settings.host, chars=MIN_PUBLIC_TOKEN_CHARS)
        sys.exit("collapsewatch: " + message)


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` for uvicorn; a port already taken exits with a hint
    instead of uvicorn's traceback."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            sys.exit(PORT_IN_USE.format(host=host, port=port, other=port + 1))
        sys.exit(f"collapsewatch: cannot listen on {host}:{port}: {exc.strerror or exc}")
    sock.set_inheritable(True)
    return sock


def compress_plotly_in_background() -> None:
    """Gzip the Plotly bundle while the server starts, so the first page load does not wait
    for it (a second of CPU, once per process, on a thread of the lowest priority: zlib lets
    go of the GIL, and requests and trainers on the machine go first)."""
    from collapsewatch_web import assets

    def compress() -> None:
        with contextlib.suppress(OSError):  # Linux: a thread's own niceness
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        assets.plotly_js_gzip()

    threading.Thread(target=compress, name="cw-plotly-gzip", daemon=True).start()


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the server in the foreground."""
    settings = _settings(args)
    _check_bind(settings)
    sock = listen(settings.host, settings.port)
    allocator.cap_arenas()  # before any thread starts: see the module
    import uvicorn

    from collapsewatch_server.app import create_app

    app = create_app(settings)
    compress_plotly_in_background()
    print(f"collapsewatch: dashboard at http://{settings.host}:{settings.port}/", flush=True)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=args.log_level)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


class BackgroundServer:
    """A uvicorn server on a thread of this process (for ``demo``), stopped with :meth:`stop`."""

    def __init__(self, settings: Settings, log_level: str = "warning") -> None:
        sock = listen(settings.host, settings.port)
        import uvicorn

        from collapsewatch_server.app import create_app

        config = uvicorn.Config(
            create_app(settings), host=settings.host, port=settings.port, log_level=log_level
        )
        self.server = uvicorn.Server(config)
        self.url = f"http://{settings.host}:{settings.port}"
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, name="collapsewatch-server"
        )

    def start(self, timeout: float = 30.0) -> None:
        self.thread.start()
        compress_plotly_in_background()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start on {self.url}")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def _scenarios() -> tuple[dict[str, Any], Callable[..., list[Any]]]:
    """The demo's scenarios and their runner, imported here, never at the top: they live in
    ``collapsewatch_demo`` and train with torch, which the server (and its Docker image) does
    not need. ``pip install "collapsewatch[demo]"`` (what ``make run`` does) brings both."""
    try:
        from collapsewatch_demo.scenarios import SCENARIOS, run_scenario
    except ImportError as e:
        sys.exit(
            f"collapsewatch: the demo needs the collapsewatch_demo package and torch ({e}); "
            'install them with pip install "collapsewatch[demo]"'
        )
    return SCENARIOS, run_scenario


def cmd_demo(args: argparse.Namespace) -> int:
    """Train a scenario's collapsing run and its healthy control, streaming into a server."""
    if args.list:
        SCENARIOS, _ = _scenarios()
        for sc in SCENARIOS.values():
            print(f"{sc.name:<16} {sc.family:<14} {sc.indicator} on {sc.probe}: {sc.summary}")
        return 0
    server_url = args.server
    background = None
    _exit_after_ctrl_c(STOP_GRACE_S)
    if server_url is None:
        settings = _settings(args)
        _check_bind(settings)
        background = BackgroundServer(settings)
        background.start()
        server_url = background.url
    try:
        return _demo(args, server_url, background)
    except KeyboardInterrupt:
        # Ctrl-C while training or serving: end the interrupted runs while the server still
        # takes their last batches, and so that no SDK sender thread is inside torch when the
        # interpreter shuts down (a daemon thread unwound there aborts the process:
        # "terminate called without an active exception"); then stop the server's thread
        # before the interpreter shuts down (its executors refuse new work then, and
        # tracebacks follow).
        from collapsewatch.open_runs import finish_all

        finish_all(timeout=10.0, status="crashed")
        print("\ncollapsewatch: stopped", file=sys.stderr, flush=True)
        if background is not None:
            background.stop()
        # Everything is stored and the server stopped (or given 10 s): leave now. The
        # interpreter's own exit would wait for any thread still running (a server thread
        # answering a last request) and unwind threads inside torch, which aborts.
        logging.shutdown()
        sys.stdout.flush()
        os._exit(130)
    finally:
        if background is not None:
            background.stop()


#: After Ctrl-C the demo finishes its runs and stops its server; past this it exits anyway.
STOP_GRACE_S = 30.0


def _exit_after_ctrl_c(grace_s: float) -> None:
    """Ctrl-C raises KeyboardInterrupt as usual, and makes sure the process ends: if it is
    still here ``grace_s`` later, the threads' stacks go to stderr (what held it up) and it
    exits with 130. A Ctrl-C that does not end the demo leaves the user only kill -9."""

    def on_ctrl_c(_signum: int, _frame: Any) -> None:
        def watchdog() -> None:
            time.sleep(grace_s)
            print(
                f"collapsewatch: still stopping {grace_s:.0f} s after Ctrl-C; exiting. "
                "What was running:",
                file=sys.stderr,
                flush=True,
            )
            faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
            os._exit(130)

        threading.Thread(target=watchdog, name="collapsewatch-exit", daemon=True).start()
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, on_ctrl_c)


def _demo(args: argparse.Namespace, server_url: str, background: BackgroundServer | None) -> int:
    print(f"collapsewatch: dashboard at {server_url}/", flush=True)
    SCENARIOS, run_scenario = _scenarios()
    if args.scenario not in SCENARIOS:
        known = ", ".join(sorted(SCENARIOS))
        sys.exit(f"collapsewatch: unknown scenario {args.scenario!r}; known: {known}")
    results = run_scenario(args.scenario, server_url, project=args.project, token=args.token)
    for result in results:
        print(f"collapsewatch: run page {server_url}/runs/{result.run_id}", flush=True)
    if background is not None and not args.exit:
        print("collapsewatch: the server keeps running; Ctrl-C stops it.", flush=True)
        while background.thread.is_alive():
            background.thread.join(timeout=0.5)
    return 0


def _context(args: argparse.Namespace) -> Any:
    """The services' context on the database of ``--db`` (migrated to the newest schema)."""
    from collapsewatch_server.db import Database, make_engine, migrate
    from collapsewatch_server.services.context import ServiceContext

    settings = _settings(args)
    engine = make_engine(settings.db_url)
    migrate(engine)
    return ServiceContext(Database(engine), settings)


def cmd_token(args: argparse.Namespace) -> int:
    """Create, list or revoke a project's ingest tokens (directly in the database)."""
    from collapsewatch_server.errors import DomainError
    from collapsewatch_server.services import ingest_tokens

    ctx = _context(args)
    try:
        if args.token_command == "create":
            created = ingest_tokens.create_token(ctx, args.project, args.name)
            print(created.token)
            print(
                f"collapsewatch: token {created.prefix}... for project {created.project!r}; "
                "it is shown only now. Use it as COLLAPSEWATCH_TOKEN.",
                file=sys.stderr,
            )
        elif args.token_command == "list":
            for t in ingest_tokens.list_tokens(ctx, args.project):
                state = f"revoked {t.revoked_at:%Y-%m-%d}" if t.revoked_at else "active"
                print(f"{t.id}\t{t.prefix}...\t{t.name}\t{t.created_at:%Y-%m-%d %H:%M}\t{state}")
        else:
            ingest_tokens.revoke_token(ctx, args.project, args.id)
            print(f"collapsewatch: token {args.id} revoked")
    except DomainError as exc:
        print(f"collapsewatch: {exc.message}", file=sys.stderr)
        return 1
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    """Upload batches spooled while the server was away (idempotent: safe to repeat).

    Exit code 0 only when every batch is on the server; 1 when some were set aside as rejected
    or kept for a later sync, or when the directory does not exist.
    """
    from collapsewatch.pipeline.replay import sync

    try:
        report = sync(args.directory, server=args.server, token=args.token)
    except FileNotFoundError as exc:
        print(f"collapsewatch: {exc}", file=sys.stderr)
        return 1
    print(
        f"collapsewatch: {report.sent} batches sent, {report.duplicate} already stored, "
        f"{report.rejected} rejected (set aside in rejected/ with the server's answer), "
        f"{report.kept} kept for a later sync"
    )
    for problem in report.problems:
        print(f"collapsewatch: {problem}", file=sys.stderr)
    return 0 if report.complete else 1


def cmd_migrate(args: argparse.Namespace) -> int:
    """Bring the database schema to the newest version."""
    _context(args)
    print("collapsewatch: schema up to date")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="collapsewatch", description="Watch neural networks for collapse while they train."
    )
    parser.add_argument("--version", action="version", version=f"collapsewatch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def db_option(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--db",
            dest="db_url",
            help="SQLAlchemy URL (default: COLLAPSEWATCH_DB_URL or a SQLite file in "
            "~/.local/share/collapsewatch)",
        )

    serve = sub.add_parser("serve", help="run the server and dashboards")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8420)")
    serve.add_argument("--log-level", default="info")
    db_option(serve)
    serve.set_defaults(func=cmd_serve)

    demo = sub.add_parser("demo", help="train a collapsing run and a control into a server")
    demo.add_argument("--server", help="an existing server URL; default: start one here")
    demo.add_argument("--host", help="address of the started server (default 127.0.0.1)")
    demo.add_argument("--port", type=int, help="port of the started server (default 8420)")
    demo.add_argument("--token", help="ingest token for --server")
    demo.add_argument("--project", default="demo")
    demo.add_argument(
        "--scenario",
        default="dead_units",
        help="which collapse and control to train (see `collapsewatch demo --list`)",
    )
    demo.add_argument("--list", action="store_true", help="list the scenarios and exit")
    demo.add_argument("--exit", action="store_true", help="stop the started server at the end")
    db_option(demo)
    demo.set_defaults(func=cmd_demo)

    token = sub.add_parser("token", help="manage ingest tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    create = token_sub.add_parser("create", help="create a token (printed once)")
    create.add_argument("--project", required=True)
    create.add_argument("--name", default="")
    db_option(create)
    listing = token_sub.add_parser("list", help="list a project's tokens")
    listing.add_argument("--project", required=True)
    db_option(listing)
    revoke = token_sub.add_parser("revoke", help="revoke a token by id")
    revoke.add_argument("--project", required=True)
    revoke.add_argument("id", type=int)
    db_option(revoke)
    token.set_defaults(func=cmd_token)

    sync = sub.add_parser("sync", help="upload statistics spooled while the server was away")
    sync.add_argument("directory", help="a spool directory (or the spool root)")
    sync.add_argument("--server", help="server URL (default: COLLAPSEWATCH_SERVER or local)")
    sync.add_argument("--token", help="ingest token (default: COLLAPSEWATCH_TOKEN)")
    sync.set_defaults(func=cmd_sync)

    migrate = sub.add_parser("migrate", help="apply database migrations")
    db_option(migrate)
    migrate.set_defaults(func=cmd_migrate)

    cli_rules.add_parser(sub)
    cli_webhooks.add_parser(sub)
    cli_report.add_parser(sub)
    cli_silences.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ImportError as exc:
        if exc.name in {"fastapi", "uvicorn", "sqlalchemy", "alembic", "numpy", "plotly"}:
            sys.exit(_NEEDS_SERVER_EXTRA)
        raise


if __name__ == "__main__":
    sys.exit(main())
