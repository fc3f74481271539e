"""The real CLI server and ``collapsewatch demo``: the collapsing run fires the default
dead-unit rule once, on the layer that dies; the healthy control fires nothing."""

from __future__ import annotations

import subprocess
import sys

import httpx

from tests.e2e.conftest import LiveServer


def cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "collapsewatch_server.cli", *argv],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_demo_collapse_fires_the_default_dead_unit_rule_once(live_server: LiveServer) -> None:
    out = cli("demo", "--server", live_server.url)  # scenario dead_units, project demo
    assert out.returncode == 0, out.stdout + out.stderr

    api = f"{live_server.url}/api/v1"
    runs = {r["name"]: r for r in httpx.get(f"{api}/runs", params={"project": "demo"}).json()}
    collapse, control = runs["relu-lr0.1"], runs["relu-lr0.001"]

    events = httpx.get(f"{api}/alerts", params={"run_id": collapse["run_id"]}).json()
    dead = [e for e in events if e["rule_name"] == "default: dead_fraction"]
    assert [(e["status"], e["probe"], e["severity"]) for e in dead] == [
        ("firing", "fc2", "critical")
    ], events
    assert dead[0]["value"] > 0.5 and dead[0]["threshold"] == 0.5
    assert dead[0]["url"].startswith(f"{live_server.url}/runs/{collapse['run_id']}?step=")
    assert collapse["open_alerts"] >= 1

    assert httpx.get(f"{api}/alerts", params={"run_id": control["run_id"]}).json() == []
    assert control["open_alerts"] == 0

    states = httpx.get(f"{api}/runs/{collapse['run_id']}/alerts").json()
    assert {"rule_name": "default: dead_fraction", "probe": "fc2", "state": "firing"}.items() <= (
        next(s for s in states if s["probe"] == "fc2" and s["rule_id"] == dead[0]["rule_id"])
    ).items()

    listed = cli("rules", "list", "--project", "demo", "--server", live_server.url)
    assert listed.returncode == 0, listed.stderr
    assert "default: dead_fraction" in listed.stdout and "> 0.5" in listed.stdout
