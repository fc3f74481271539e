"""Every scenario through `collapsewatch demo --scenario NAME` against the real server: the
collapse run crosses its indicator's default threshold and fires the default alert; the
control does neither. Fast scenarios run always; all of them with `make validate`
(COLLAPSEWATCH_VALIDATE=1). Run with -s to see the values per scenario."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import httpx
import pytest

from collapsewatch_server.indicators import CATALOGUE
from collapsewatch_server.scenarios import SCENARIOS
from tests.e2e.conftest import LiveServer

ALL = os.environ.get("COLLAPSEWATCH_VALIDATE") == "1"
CHOSEN = [name for name, sc in SCENARIOS.items() if sc.fast or ALL]


def default_limit(indicator: str) -> tuple[float, str]:
    """The threshold the default rule uses and the side that is bad ('above'/'below')."""
    info = CATALOGUE[indicator]
    limit = info.critical if info.critical is not None else info.warn
    assert limit is not None, f"{indicator} has no default threshold"
    return limit, "above" if info.direction == "high_is_bad" else "below"


def values(server: str, run_id: str, indicator: str, probe: str) -> list[float]:
    r = httpx.get(
        f"{server}/api/v1/runs/{run_id}/series/{indicator}",
        params={"probe": probe, "max_points": 100_000},
    )
    assert r.status_code == 200, r.text
    return [v for v in r.json()["values"] if v is not None]


def firing(server: str, run_id: str, indicator: str) -> list[dict[str, Any]]:
    events = httpx.get(
        f"{server}/api/v1/alerts", params={"run_id": run_id, "state": "firing"}
    ).json()
    return [e for e in events if e["indicator"] == indicator]


@pytest.mark.parametrize("name", CHOSEN)
def test_scenario_collapse_crosses_and_control_does_not(live_server: LiveServer, name: str) -> None:
    sc = SCENARIOS[name]
    project = f"scenario-{name}".replace("_", "-")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "collapsewatch_server.cli",
            "demo",
            "--scenario",
            name,
            "--server",
            live_server.url,
            "--project",
            project,
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    runs = {
        r["name"]: r
        for r in httpx.get(f"{live_server.url}/api/v1/runs", params={"project": project}).json()
    }
    collapse, control = (runs[n]["run_id"] for n in sc.runs)

    limit, bad_side = default_limit(sc.indicator)
    worst = max if bad_side == "above" else min
    crossed = (lambda v: v > limit) if bad_side == "above" else (lambda v: v < limit)
    got = {
        run: values(live_server.url, rid, sc.indicator, sc.probe)
        for run, rid in (("collapse", collapse), ("control", control))
    }
    print(
        f"\n{name}: {sc.indicator} on {sc.probe}, default {bad_side} {limit:g}: "
        f"collapse worst {worst(got['collapse']):.4g} (last {got['collapse'][-1]:.4g}), "
        f"control worst {worst(got['control']):.4g} (last {got['control'][-1]:.4g})"
    )
    assert any(crossed(v) for v in got["collapse"]), got["collapse"]
    assert not any(crossed(v) for v in got["control"]), got["control"]

    alerts = firing(live_server.url, collapse, sc.indicator)
    fired = sorted(a["probe"] for a in alerts if not a["reminder"])
    assert fired == sorted([sc.probe, *sc.also_fires]), alerts
    assert firing(live_server.url, control, sc.indicator) == []
