"""Silences through the real app: the API and ``collapsewatch silences`` create, list and
delete them; a silenced event is recorded (marked) and not delivered to a real receiver;
expiry and deletion lift a silence."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from collapsewatch_server import create_app
from collapsewatch_server.cli import build_parser
from collapsewatch_server.cli_silences import cmd_silences
from collapsewatch_server.config import Settings
from tests.webhook_support import Receiver, put_events

BASE = "/api/v1/projects/proj/silences"


@pytest.fixture
def api(db_url: str) -> Iterator[TestClient]:
    settings = Settings(db_url=db_url, worker_poll_s=0.05, notify_group_wait_s=0)
    with TestClient(create_app(settings)) as client:
        yield client


def cli(api: TestClient, capsys: Any, *argv: str) -> tuple[int, str, str]:
    args = build_parser().parse_args(["silences", *argv, "--project", "proj"])
    code = cmd_silences(args, api)
    out, err = capsys.readouterr()
    return code, out, err


def fire(api: TestClient, run_name: str, **kw: Any) -> str:
    (event_id,) = put_events(api.app.state.context, "proj", 1, run_name=run_name, **kw)  # type: ignore[attr-defined]
    return event_id


def delivered_events(receiver: Receiver) -> list[str]:
    return [a["event_id"] for r in receiver.delivered() for a in r.json()["alerts"]]


def silence_of(api: TestClient, event_id: str) -> int | None:
    (event,) = [
        e
        for e in api.get("/api/v1/alerts", params={"project": "proj"}).json()
        if e["id"] == event_id
    ]
    return event["silence_id"]


def test_bad_silences_are_refused_naming_the_field(api: TestClient) -> None:
    assert (
        api.post("/api/v1/projects/proj/webhooks", json={"url": "http://127.0.0.1:9/h"}).status_code
        == 201
    )
    r = api.post(BASE, json={"run": "x"})
    assert r.status_code == 422 and "exactly one of ends_at and duration_s" in r.text
    r = api.post(
        BASE, json={"starts_at": "2030-01-02T00:00:00Z", "ends_at": "2030-01-01T00:00:00Z"}
    )
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "ends_at"]
    r = api.post(BASE, json={"duration_s": 60, "severity": "loud"})
    assert r.status_code == 422 and "severity" in str(r.json()["detail"][0]["loc"])
    assert api.post("/api/v1/projects/nope/silences", json={"duration_s": 60}).status_code == 404
    assert api.delete(f"{BASE}/99").status_code == 404
    assert api.get(BASE).json() == []


def test_a_silenced_run_is_recorded_and_not_delivered_until_the_silence_goes(
    api: TestClient, capsys: Any
) -> None:
    with Receiver() as receiver:
        r = api.post("/api/v1/projects/proj/webhooks", json={"url": receiver.url})
        receiver.secret = r.json()["secret"]
        code, out, err = cli(
            api, capsys, "create", "--run", "sweep-*", "--for", "2h", "--comment", "known bad"
        )
        assert code == 0, err
        assert out.startswith("collapsewatch: silence 1 until ")

        quiet = fire(api, "sweep-1")
        loud = fire(api, "baseline")
        receiver.wait_for(1)
        time.sleep(0.5)  # the silenced one does not follow
        assert delivered_events(receiver) == [loud]
        assert silence_of(api, quiet) == 1 and silence_of(api, loud) is None

        code, out, _ = cli(api, capsys, "list", "--active")
        _, row = out.splitlines()
        assert row.split()[:3] == ["1", "yes", "run=sweep-*"] and row.split()[-3:] == [
            "1",
            "known",
            "bad",
        ]

        code, out, _ = cli(api, capsys, "delete", "1")
        assert code == 0 and "silence 1 deleted" in out
        again = fire(api, "sweep-1")
        receiver.wait_for(2)
        assert delivered_events(receiver) == [loud, again]
        assert silence_of(api, quiet) is None  # no longer marked: the silence is gone

        # a short silence on one severity lifts itself at its end
        r = api.post(BASE, json={"severity": "critical", "duration_s": 1})
        assert r.status_code == 201 and r.json()["active"]
        muted = fire(api, "sweep-2", severity="critical")
        warned = fire(api, "sweep-2", severity="warning")
        receiver.wait_for(3)
        time.sleep(1.1)
        assert [s["active"] for s in api.get(BASE).json()] == [False]
        later = fire(api, "sweep-2", severity="critical")
        receiver.wait_for(4)
        assert delivered_events(receiver) == [loud, again, warned, later]
        assert silence_of(api, muted) == r.json()["id"]


def test_a_bad_duration_says_how_to_write_one(api: TestClient, capsys: Any) -> None:
    code, _, err = cli(api, capsys, "create", "--for", "soon")
    assert code == 1 and "write a number and a unit, like 90m, 2h or 1d" in err
