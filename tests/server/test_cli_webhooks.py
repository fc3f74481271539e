"""``collapsewatch webhooks ...`` against the real app (its TestClient is the CLI's client)
and a real receiver."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from collapsewatch_server import create_app
from collapsewatch_server.cli import build_parser
from collapsewatch_server.cli_webhooks import cmd_webhooks
from collapsewatch_server.config import Settings
from tests.webhook_support import Receiver, put_events


@pytest.fixture
def api(sqlite_url: str) -> Iterator[TestClient]:
    settings = Settings(db_url=sqlite_url, worker_poll_s=0.05, notify_group_wait_s=0)
    with TestClient(create_app(settings)) as client:
        yield client


def cli(api: TestClient, capsys: Any, *argv: str) -> tuple[int, str, str]:
    args = build_parser().parse_args(["webhooks", *argv, "--project", "proj"])
    code = cmd_webhooks(args, api)
    out, err = capsys.readouterr()
    return code, out, err


def test_create_list_test_deliveries_delete(api: TestClient, capsys: Any) -> None:
    with Receiver() as receiver:
        flags = ["--format", "slack", "--severity", "critical", "--severity", "warning"]
        code, out, err = cli(api, capsys, "create", "--url", receiver.url, *flags, "--name", "ops")
        assert code == 0, err
        secret = out.strip()
        assert secret.startswith("whsec_") and "shown only now" in err
        receiver.secret = secret

        code, out, _ = cli(api, capsys, "list")
        header, row = out.splitlines()
        assert header.split() == ["ID", "NAME", "FORMAT", "SEVERITIES", "ENABLED", "SECRET", "URL"]
        assert row.split() == ["1", "ops", "slack", "warning,critical", "yes", secret[:10] + "...",
                               receiver.url]  # fmt: skip

        code, out, _ = cli(api, capsys, "test", "1")
        assert code == 0 and out.startswith("ok: HTTP 200 in ") and out.strip().endswith(": ok")
        assert receiver.arrivals[0].signature_error is None

        put_events(api.app.state.context, "proj", 1, severity="critical")  # type: ignore[attr-defined]
        receiver.wait_for(2)
        # the receiver has it before the deliverer has written down the answer: wait for that
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            log = api.get("/api/v1/projects/proj/webhooks/1/deliveries").json()
            if log and not log[0]["test"] and log[0]["status"] == "delivered":
                break
            time.sleep(0.05)
        code, out, _ = cli(api, capsys, "deliveries", "1")
        first, attempt, test, test_attempt = out.splitlines()
        assert "firing" in first and "1 attempt(s)  1 event(s)  family=scalars" in first
        assert "HTTP 200" in attempt
        assert "test" in test and "delivered" in test and "HTTP 200" in test_attempt

    code, out, _ = cli(api, capsys, "test", "1")  # the receiver is gone now
    assert code == 1 and out.startswith("failed: ConnectError")

    code, out, _ = cli(api, capsys, "delete", "1")
    assert code == 0 and "webhook 1 deleted" in out
    code, _, err = cli(api, capsys, "delete", "1")
    assert code == 1 and "webhook 1 not found in project 'proj'" in err


def test_a_refused_url_says_why(api: TestClient, capsys: Any) -> None:
    code, _, err = cli(api, capsys, "create", "--url", "http://169.254.169.254/latest")
    assert code == 1
    assert err.strip() == (
        "collapsewatch: url: url resolves to 169.254.169.254, a link-local/metadata address"
    )


def test_no_deliveries_yet(api: TestClient, capsys: Any) -> None:
    assert cli(api, capsys, "create", "--url", "http://127.0.0.1:9/hook")[0] == 0
    assert cli(api, capsys, "deliveries", "1")[1].strip() == "no deliveries yet"
