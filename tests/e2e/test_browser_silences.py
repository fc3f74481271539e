"""Silences and the missing-receiver banner in a real browser, against a real server process
and a real webhook receiver: a silence created on the alerts page (or by the run page's
"Silence this run for 2 h") keeps a collapsing run's alerts from being delivered while they
are still recorded and shown; deleting it lets them through again."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.browser import LIVE_TIMEOUT_MS, Tab, batch, ingest, wait_until
from tests.e2e.conftest import LiveServer, start_server
from tests.webhook_support import Receiver

ENV = {
    "COLLAPSEWATCH_NOTIFY_GROUP_WAIT_S": "0.2",
    "COLLAPSEWATCH_WORKER_POLL_S": "0.1",
}
STEPS = range(0, 120, 10)  # fc2 dies in the first steps: the dead-unit rule fires


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    live = start_server(f"sqlite:///{tmp_path}/live.db", log=tmp_path / "server.log", env=ENV)
    yield live
    live.stop()


def collapse(server: LiveServer, name: str) -> str:
    """A run named ``name`` whose fc2 loses its units; returns its id once its alerts exist."""
    run_id = str(uuid.uuid4())
    ingest(server, batch(run_id, STEPS, name=name))
    events = httpx.get(f"{server.url}/api/v1/alerts", params={"run_id": run_id}, timeout=10).json()
    assert events, f"run {name} raised no alert"
    return run_id


def delivered_runs(receiver: Receiver) -> list[str]:
    return sorted({a.json()["run"]["name"] for a in receiver.delivered()})


def settle(receiver: Receiver, runs: list[str]) -> None:
    """Wait until exactly these runs' notifications arrived, and a moment more."""
    deadline = time.monotonic() + 15
    while delivered_runs(receiver) != runs:
        assert time.monotonic() < deadline, (delivered_runs(receiver), runs)
        time.sleep(0.1)
    time.sleep(1.0)  # the group wait is 0.2 s: anything else would have come by now
    assert delivered_runs(receiver) == runs


def test_a_silence_from_the_alerts_page_stops_delivery_until_deleted(
    server: LiveServer, tab: Tab
) -> None:
    page = tab.page
    unheard = collapse(server, "relu-first")
    # alerts are firing and nothing receives them: both pages say so
    page.goto(f"{server.url}/alerts?project=demo")
    assert "no receiver gets them" in page.inner_text("#no-receiver-banner")
    page.goto(f"{server.url}/runs/{unheard}")
    assert page.is_visible("#no-receiver-banner")

    with Receiver() as receiver:
        r = httpx.post(
            f"{server.url}/api/v1/projects/demo/webhooks", json={"url": receiver.url}, timeout=10
        )
        receiver.secret = r.json()["secret"]
        page.goto(f"{server.url}/alerts?project=demo")
        assert page.query_selector("#no-receiver-banner") is None

        page.fill("#silence-run", "relu-b*")
        page.fill("#silence-hours", "2")
        page.fill("#silence-comment", "known bad sweep")
        with page.expect_navigation():  # the page reloads with the silence in force
            page.click("#silence-save")
        wait_until(
            page, "document.querySelector('#silences-table tbody tr') !== null", LIVE_TIMEOUT_MS
        )
        assert "run=relu-b*" in page.inner_text("#silences-table")

        collapse(server, "relu-b1")  # silenced
        collapse(server, "relu-c")  # heard
        settle(receiver, ["relu-c"])
        page.goto(f"{server.url}/alerts?project=demo")
        silenced_rows = page.eval_on_selector_all(
            "#events-table tbody tr",
            "rows => rows.filter(r => r.querySelector('.silenced'))"
            ".map(r => r.cells[3].textContent)",
        )
        assert silenced_rows and all("relu-b1" in row for row in silenced_rows)
        assert page.inner_text("#silences-table tbody td.num") == str(len(silenced_rows))
        # the notifications sent: relu-c's, one per family it fired in, each with its events
        groups = page.eval_on_selector_all(
            "#notifications-table tbody tr", "rows => rows.map(r => r.cells[2].textContent)"
        )
        assert "family dead_units" in groups and len(groups) == len(receiver.delivered())

        # the run page silences its own run (by exact name) for two hours
        again = collapse(server, "relu-d")
        settle(receiver, ["relu-c", "relu-d"])
        page.goto(f"{server.url}/runs/{again}")
        page.click("#silence-run")
        wait_until(
            page,
            "document.getElementById('silence-run-status').textContent"
            ".startsWith('Silenced until')",
            LIVE_TIMEOUT_MS,
        )
        collapse(server, "relu-d")  # another run of that name: silenced
        collapse(server, "relu-b2")  # still silenced by the alerts page's silence
        settle(receiver, ["relu-c", "relu-d"])
        assert len({a.json()["run"]["id"] for a in receiver.delivered()}) == 2

        # deleting the silences lets alerts through again
        page.goto(f"{server.url}/alerts?project=demo")
        assert page.eval_on_selector_all("#silences-table tbody tr", "rows => rows.length") == 2
        with page.expect_navigation():
            page.click("#silences-table .delete-silence >> nth=0")
        wait_until(
            page,
            "document.querySelectorAll('#silences-table tbody tr').length === 1",
            LIVE_TIMEOUT_MS,
        )
        with page.expect_navigation():
            page.click("#silences-table .delete-silence")
        wait_until(page, "document.getElementById('silences-table') === null", LIVE_TIMEOUT_MS)
        collapse(server, "relu-b3")
        settle(receiver, ["relu-b3", "relu-c", "relu-d"])
    assert all(a.signature_error is None for a in receiver.arrivals)
    assert tab.problems == [], f"browser errors: {tab.problems}"
