"""A real ``collapsewatch serve`` process on a free port and a SQLite file, per test."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest

from collapsewatch_demo.validation.processes import serve, stop
from tests.e2e.browser import CHROMIUM, Tab


@dataclass
class LiveServer:
    url: str
    db_url: str
    process: subprocess.Popen[bytes]
    log: IO[bytes] | None = None

    def stop(self) -> None:
        stop(self.process)
        if self.log is not None:
            self.log.close()


def start_server(
    db_url: str,
    port: int | None = None,
    log: Path | None = None,
    env: dict[str, str] | None = None,
) -> LiveServer:
    """Start the real CLI server and wait until /healthz answers; ``env`` adds variables
    (e.g. ``COLLAPSEWATCH_WEBHOOK_BACKOFF_BASE_S``) to a clean environment."""
    out = open(log, "wb") if log else None  # noqa: SIM115 - closed by LiveServer.stop
    try:
        proc, url = serve(db_url, port=port, out=out, env=env)
    except RuntimeError as exc:
        if out:
            out.close()
        raise RuntimeError(f"{exc}; see {log}") from exc
    return LiveServer(url, db_url, proc, out)


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[LiveServer]:
    server = start_server(f"sqlite:///{tmp_path}/live.db", log=tmp_path / "server.log")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield b
        b.close()


@pytest.fixture
def tab(browser: Any) -> Iterator[Tab]:
    context = browser.new_context(viewport={"width": 1360, "height": 900}, color_scheme="light")
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    yield Tab(page, problems)
    context.close()


@pytest.fixture
def inproc(sqlite_url: str) -> Iterator[Any]:
    """The real app in this process on a SQLite file: the SDK sends through it
    (``http_client=inproc``, ``server="http://testserver"``)."""
    from fastapi.testclient import TestClient

    from collapsewatch_server import create_app
    from collapsewatch_server.config import Settings

    with TestClient(create_app(Settings(db_url=sqlite_url))) as client:
        yield client
