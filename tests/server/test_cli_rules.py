"""``collapsewatch rules ...`` against the real app (its TestClient is the CLI's HTTP client)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from collapsewatch_server import create_app
from collapsewatch_server.cli import build_parser
from collapsewatch_server.cli_rules import cmd_rules
from collapsewatch_server.config import Settings
from tests.alert_helpers import scalar_batch


@pytest.fixture
def api(sqlite_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(db_url=sqlite_url))) as client:
        r = client.post("/api/v1/ingest", json=scalar_batch(uuid.uuid4(), [0.1]))
        assert r.status_code == 202
        yield client


def cli(api: TestClient, capsys: Any, *argv: str) -> tuple[int, str, str]:
    args = build_parser().parse_args(["rules", *argv, "--project", "proj"])
    code = cmd_rules(args, api)
    out, err = capsys.readouterr()
    return code, out, err


def as_fields(out: str) -> dict[str, str]:
    """``collapsewatch rules show`` output: a field and its value a line."""
    return dict(line.split(None, 1) for line in out.splitlines())


def test_list_create_show_update_disable_delete(
    api: TestClient, capsys: Any, tmp_path: Path
) -> None:
    code, out, _ = cli(api, capsys, "list")
    assert code == 0
    header, *lines = out.splitlines()
    assert header.split() == [
        "ID",
        "NAME",
        "INDICATOR",
        "PROBE",
        "CONDITION",
        "PENDING",
        "WARM-UP",
        "SEVERITY",
        "ENABLED",
    ]
    dead = next(line for line in lines if "default: dead_fraction" in line)
    assert "> 0.5" in dead and "3 pts" in dead and "critical" in dead and dead.endswith("yes")

    code, out, _ = cli(
        api,
        capsys,
        "create",
        "--name",
        "loss spike",
        "--indicator",
        "value",
        "--condition",
        "rise",
        "--percent",
        "50",
        "--reference",
        "baseline",
        "--probe",
        "metric",
        "--pending-steps",
        "20",
        "--severity",
        "critical",
    )
    assert code == 0, out
    fields = as_fields(out)
    rule_id = fields["id"]
    assert (fields["condition"], fields["percent"], fields["pending_steps"]) == (
        "rise",
        "50.0",
        "20",
    )

    spec = tmp_path / "rule.json"
    spec.write_text(json.dumps({"name": "band", "indicator": "value", "condition": "outside",
                                "low": 0.1, "high": 0.9}))  # fmt: skip
    code, out, _ = cli(api, capsys, "create", "--json", str(spec), "--disabled")
    assert code == 0 and as_fields(out)["enabled"] == "no"
    assert (as_fields(out)["low"], as_fields(out)["high"]) == ("0.1", "0.9")

    code, out, _ = cli(api, capsys, "update", rule_id, "--percent", "25", "--recovery", "1.1")
    assert code == 0
    assert (as_fields(out)["percent"], as_fields(out)["recovery"]) == ("25.0", "1.1")
    code, out, _ = cli(api, capsys, "show", rule_id)
    assert code == 0 and as_fields(out)["name"] == "loss spike"
    assert as_fields(out)["probe"] == "metric" and as_fields(out)["is_default"] == "no"

    code, out, _ = cli(api, capsys, "disable", rule_id)
    assert (code, out.strip()) == (0, f"collapsewatch: rule {rule_id} (loss spike) disabled")
    code, out, _ = cli(api, capsys, "list")
    line = next(x for x in out.splitlines() if "loss spike" in x)
    assert "rise 25% from baseline, recover at 1.1" in line and "20 steps" in line
    assert line.endswith("no")
    code, out, _ = cli(api, capsys, "enable", rule_id)
    assert code == 0

    code, out, _ = cli(api, capsys, "delete", rule_id)
    assert (code, out.strip()) == (0, f"collapsewatch: rule {rule_id} deleted")
    code, _, err = cli(api, capsys, "show", rule_id)
    assert code == 1 and f"rule {rule_id} not found in project 'proj' (HTTP 404)" in err


def test_errors_exit_1_with_the_servers_detail(api: TestClient, capsys: Any) -> None:
    code, out, err = cli(
        api, capsys, "create", "--name", "x", "--indicator", "nope", "--condition", "above",
        "--threshold", "1",
    )  # fmt: skip
    assert (code, out) == (1, "")
    assert err.strip() == (
        "collapsewatch: indicator: unknown indicator 'nope'; GET /api/v1/indicators lists them"
    )
    code, _, err = cli(api, capsys, "create", "--name", "x", "--indicator", "value",
                       "--condition", "outside", "--low", "2", "--high", "1")  # fmt: skip
    assert code == 1 and "rule: Value error, 'low' must not be greater than 'high'" in err
    code, _, err = cli(api, capsys, "update", "1")
    assert code == 1 and "nothing to update" in err


def test_unreachable_server_exits_1(capsys: Any) -> None:
    args = build_parser().parse_args(
        ["rules", "list", "--project", "p", "--server", "http://127.0.0.1:9"]
    )
    assert cmd_rules(args) == 1
    assert "cannot reach the server" in capsys.readouterr().err


def test_list_shows_each_rules_warm_up(api: TestClient, capsys: Any) -> None:
    for name, condition, extra in (
        ("early dead", "above", ["--threshold", "0.5"]),
        ("late drop", "drop", ["--percent", "50"]),
    ):
        code, _, err = cli(
            api, capsys, "create", "--name", name, "--indicator", "value",
            "--condition", condition, *extra, "--warmup-steps", "200",
        )  # fmt: skip
        assert code == 0, err
    _, out, _ = cli(api, capsys, "list")
    lines = out.splitlines()
    assert "<200 or healthy" in next(line for line in lines if "early dead" in line)
    assert ">=200" in next(line for line in lines if "late drop" in line)
