"""Alert rules through the HTTP API on SQLite and Postgres: CRUD, the default pack, bad input."""

from __future__ import annotations

import uuid
from typing import Any

from collapsewatch_server import errors
from collapsewatch_server.alerts.default_rules import DEFAULT_RULE_NAME
from collapsewatch_server.indicators import CATALOGUE
from collapsewatch_web.api_schemas.alerts import (
    RULE_BAND_ORDER,
    RULE_NEEDS_BAND,
    RULE_NEEDS_PERCENT,
    RULE_NEEDS_THRESHOLD,
    RULE_ONE_PENDING,
    RULE_RECOVERY_BAND,
    RULE_RECOVERY_SIDE,
)
from tests.alert_helpers import scalar_batch, value_rule
from tests.helpers import JSON

RULES = "/api/v1/projects/proj/rules"


def new_project(client: Any, project: str = "proj") -> None:
    r = client.post("/api/v1/ingest", json=scalar_batch(uuid.uuid4(), [0.1], project=project))
    assert r.status_code == 202, r.text


def expected_default_pack() -> dict[str, tuple[str, float, str]]:
    """name -> (condition, threshold, severity), straight from the catalogue."""
    out = {}
    for ind in CATALOGUE.values():
        if ind.direction == "info" or (ind.warn is None and ind.critical is None):
            continue
        condition = "below" if ind.direction == "low_is_bad" else "above"
        if ind.critical is not None:
            out[DEFAULT_RULE_NAME.format(indicator=ind.name)] = (
                condition,
                ind.critical,
                ind.rule_severity or "critical",
            )
        else:
            severity = ind.rule_severity or "warning"
            out[DEFAULT_RULE_NAME.format(indicator=ind.name)] = (condition, ind.warn, severity)
    return out


def test_new_project_gets_the_default_pack_which_is_editable(client: Any) -> None:
    new_project(client)
    everything = client.get(RULES).json()
    # relative rules (a drop from the run's peak) ship disabled, healthy training moves those
    # indicators too, except where the catalogue says healthy runs hold them (validation
    # perplexity, sample diversity); the absolute ones ship enabled
    relative = [r for r in everything if r["condition"] in ("drop", "rise")]
    rules = [r for r in everything if r not in relative]
    pack = expected_default_pack()
    assert {r["name"]: (r["condition"], r["threshold"], r["severity"]) for r in rules} == pack
    assert "default: dead_fraction" in pack and pack["default: dead_fraction"][1] == 0.5
    assert all(r["is_default"] for r in rules)
    # enabled unless the catalogue says the indicator only means something for some networks
    assert all(r["enabled"] == CATALOGUE[r["indicator"]].rule_enabled for r in rules)
    assert next(r for r in rules if r["indicator"] == "vicreg_variance")["enabled"] is False
    assert all(r["pending_points"] == CATALOGUE[r["indicator"]].pending_points for r in rules)
    assert all(r["indicator"] in CATALOGUE and r["probe"] == "*" for r in everything)
    assert {r["indicator"] for r in relative} == {
        name for name, ind in CATALOGUE.items() if ind.relative is not None
    }
    assert all(r["is_default"] for r in relative)
    assert all(r["enabled"] == CATALOGUE[r["indicator"]].relative.enabled for r in relative)
    ratio = next(r for r in relative if r["indicator"] == "effective_rank_ratio")
    assert (ratio["condition"], ratio["percent"], ratio["reference"]) == ("drop", 50.0, "peak")
    assert ratio["enabled"] is False
    ppl = next(r for r in relative if r["indicator"] == "eval_perplexity")
    assert (ppl["condition"], ppl["percent"], ppl["reference"]) == ("rise", 10.0, "baseline")
    assert ppl["baseline_points"] == 1 and ppl["enabled"] is True
    assert ppl["name"] == "default: eval_perplexity rise from baseline"

    dead = next(r for r in rules if r["indicator"] == "dead_fraction")
    r = client.put(f"{RULES}/{dead['id']}", json={"threshold": 0.3, "pending_points": 5})
    assert r.status_code == 200, r.text
    assert (r.json()["threshold"], r.json()["pending_points"]) == (0.3, 5)
    assert r.json()["is_default"] is True and r.json()["severity"] == "critical"
    r = client.post(f"{RULES}/{dead['id']}/disable", headers=JSON)
    assert r.status_code == 200 and r.json()["enabled"] is False
    assert client.get(f"{RULES}/{dead['id']}").json()["enabled"] is False
    # a second batch of the same project does not add the pack again
    new_project(client)
    assert len(client.get(RULES).json()) == len(everything)


def test_rule_crud(client: Any) -> None:
    new_project(client)
    before = len(client.get(RULES).json())
    body = value_rule(probe="loss*", run="exp-*", recovery=0.4, repeat_interval_s=600)
    r = client.post(RULES, json=body)
    assert r.status_code == 201, r.text
    rule = r.json()
    assert {k: rule[k] for k in body} == body
    assert rule["project"] == "proj" and rule["is_default"] is False and rule["enabled"] is True
    assert client.get(f"{RULES}/{rule['id']}").json() == rule
    assert len(client.get(RULES).json()) == before + 1

    r = client.put(f"{RULES}/{rule['id']}", json={"pending_points": 5, "recovery": None})
    assert r.status_code == 200, r.text
    changed = r.json()
    assert changed["pending_points"] == 5 and changed["recovery"] is None
    assert changed["threshold"] == 0.5 and changed["probe"] == "loss*"  # the rest stays
    assert changed["updated_at"] >= rule["updated_at"]

    assert client.post(f"{RULES}/{rule['id']}/disable", headers=JSON).json()["enabled"] is False
    assert client.post(f"{RULES}/{rule['id']}/enable", headers=JSON).json()["enabled"] is True

    r = client.delete(f"{RULES}/{rule['id']}")
    assert r.status_code == 204 and r.content == b""
    assert client.get(f"{RULES}/{rule['id']}").status_code == 404
    assert len(client.get(RULES).json()) == before


def test_bad_rules_are_422_saying_which_field_and_store_nothing(client: Any) -> None:
    new_project(client)
    before = client.get(RULES).json()
    cases: list[tuple[dict[str, Any], list[str], str]] = [
        (value_rule(indicator="nope"), ["body", "indicator"], "unknown indicator 'nope'"),
        (
            value_rule(condition="outside", low=0.9, high=0.1),
            ["body"],
            RULE_BAND_ORDER,
        ),
        (value_rule(condition="outside"), ["body"], RULE_NEEDS_BAND),
        (value_rule(pending_points=-1), ["body", "pending_points"], "greater than or equal"),
        (value_rule(pending_steps=-5), ["body", "pending_steps"], "greater than or equal"),
        (value_rule(threshold=None), ["body"], RULE_NEEDS_THRESHOLD.format(condition="above")),
        (value_rule(condition="drop"), ["body"], RULE_NEEDS_PERCENT.format(condition="drop")),
        (value_rule(pending_steps=10), ["body"], RULE_ONE_PENDING),
        (value_rule(recovery=0.9), ["body"], RULE_RECOVERY_SIDE.format(condition="above")),
        (
            value_rule(condition="outside", low=0.1, high=0.9, recovery=0.5),
            ["body"],
            RULE_RECOVERY_BAND,
        ),
        (value_rule(severity="fatal"), ["body", "severity"], "'info', 'warning' or 'critical'"),
        (value_rule(colour="red"), ["body", "colour"], "Extra inputs"),
        (value_rule(name=""), ["body", "name"], "at least 1 character"),
        (value_rule(percent=0), ["body", "percent"], "greater than 0"),
    ]
    for body, loc, msg in cases:
        r = client.post(RULES, json=body)
        assert r.status_code == 422, (body, r.text)
        problems = r.json()["detail"]
        assert any(p["loc"] == loc and msg in p["msg"] for p in problems), (body, problems)
    assert client.get(RULES).json() == before


def test_unknown_project_unknown_rule_and_duplicate_name(client: Any) -> None:
    r = client.post("/api/v1/projects/ghost/rules", json=value_rule())
    assert r.status_code == 404
    assert r.json()["detail"] == errors.PROJECT_NOT_FOUND.format(project="ghost")
    assert client.get("/api/v1/projects/ghost/rules").status_code == 404

    new_project(client)
    for method, path in [
        ("GET", f"{RULES}/999"),
        ("PUT", f"{RULES}/999"),
        ("DELETE", f"{RULES}/999"),
        ("POST", f"{RULES}/999/enable"),
        ("POST", f"{RULES}/999/disable"),
    ]:
        body = {"threshold": 1.0} if method == "PUT" else None
        r = client.request(method, path, json=body, headers=JSON)
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["detail"] == errors.RULE_NOT_FOUND.format(rule_id=999, project="proj")
    # a rule of another project is unknown here
    new_project(client, "other")
    other = client.post("/api/v1/projects/other/rules", json=value_rule()).json()
    assert client.get(f"{RULES}/{other['id']}").status_code == 404

    assert client.post(RULES, json=value_rule()).status_code == 201
    r = client.post(RULES, json=value_rule(threshold=0.9))
    assert r.status_code == 409
    assert r.json()["detail"] == errors.RULE_NAME_TAKEN.format(project="proj", name="metric high")


def test_put_merges_then_validates_the_whole_and_stores_nothing_on_error(client: Any) -> None:
    new_project(client)
    rule = client.post(RULES, json=value_rule()).json()
    client.post(RULES, json=value_rule(name="second"))
    url = f"{RULES}/{rule['id']}"

    r = client.put(url, json={"condition": "outside"})  # the merged rule lacks a band
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body"]
    assert RULE_NEEDS_BAND in r.json()["detail"][0]["msg"]
    r = client.put(url, json={"threshold": None})
    assert r.status_code == 422
    assert RULE_NEEDS_THRESHOLD.format(condition="above") in r.json()["detail"][0]["msg"]
    r = client.put(url, json={"pending_steps": 4})  # pending_points is already set
    assert r.status_code == 422 and RULE_ONE_PENDING in r.json()["detail"][0]["msg"]
    r = client.put(url, json={"indicator": "nope"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "indicator"]
    r = client.put(url, json={"pending_points": 0})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "pending_points"]
    r = client.put(url, json={"name": "second"})
    assert r.status_code == 409
    assert client.get(url).json() == rule

    r = client.put(url, json={"condition": "outside", "low": 0.1, "high": 0.9})
    assert r.status_code == 200, r.text
    assert r.json()["condition"] == "outside" and r.json()["threshold"] == 0.5
    r = client.put(url, json={"name": rule["name"]})  # its own name is not a conflict
    assert r.status_code == 200
