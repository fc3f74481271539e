"""Every scenario through `collapsewatch demo --scenario NAME` against the real server: the
collapse run crosses its indicator's default threshold (or its relative default, for
indicators judged against the run's own first points) and fires the default alert; the
control does neither. Fast scenarios run always; all of them with `make validate`
(COLLAPSEWATCH_VALIDATE=1). Run with -s to see the values per scenario."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import httpx
import pytest

from collapsewatch_demo.scenarios import SCENARIOS
from collapsewatch_server.indicators import CATALOGUE
from tests.e2e.conftest import LiveServer

ALL = os.environ.get("COLLAPSEWATCH_VALIDATE") == "1"
CHOSEN = [name for name, sc in SCENARIOS.items() if sc.fast or ALL]


def default_limit(indicator: str, series: list[float]) -> tuple[float, str, list[float]]:
    """The level the default rule holds ``series`` (finite values in step order) to, the side
    that is bad ('above'/'below'), and the points judged against it: the threshold and every
    point, or for an indicator whose default is relative (shipped enabled, no threshold) the
    limit from the series' own first points, judged on the points after them."""
    info = CATALOGUE[indicator]
    limit = info.critical if info.critical is not None else info.warn
    side = "above" if info.direction == "high_is_bad" else "below"
    if limit is not None:
        return limit, side, series
    rel = info.relative
    assert rel is not None and rel.enabled, f"{indicator} has no default threshold"
    assert rel.reference == "baseline" and info.warmup_steps == 0, "only baselines are judged"
    n = rel.baseline_points
    ref = sum(series[:n]) / n
    margin = abs(ref) * rel.percent / 100.0
    if rel.condition == "drop":
        return ref - margin, "below", series[n:]
    return ref + margin, "above", series[n:]


def values(server: str, run_id: str, indicator: str, probe: str) -> list[float]:
    """The finite points of a series that its default rule judges (after the warm-up)."""
    r = httpx.get(
        f"{server}/api/v1/runs/{run_id}/series/{indicator}",
        params={"probe": probe, "max_points": 100_000},
    )
    assert r.status_code == 200, r.text
    warm = CATALOGUE[indicator].warmup_steps  # the default rule does not judge earlier points
    points = r.json()
    return [
        v
        for s, v in zip(points["steps"], points["values"], strict=True)
        if v is not None and s >= warm
    ]


def firing(server: str, run_id: str, indicator: str | None = None) -> list[dict[str, Any]]:
    """The run's firing events, of one indicator or of all."""
    events = httpx.get(
        f"{server}/api/v1/alerts", params={"run_id": run_id, "state": "firing"}
    ).json()
    return [e for e in events if indicator is None or e["indicator"] == indicator]


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

    judged = [(sc.indicator, sc.probe, sc.also_fires)]
    judged += [(indicator, probe, ()) for indicator, probe in sc.also_indicators]
    for indicator, probe, also_fires in judged:
        got, limits = {}, {}
        for run, rid in (("collapse", collapse), ("control", control)):
            series = values(live_server.url, rid, indicator, probe)
            limit, bad_side, got[run] = default_limit(indicator, series)
            limits[run] = limit
        worst = max if bad_side == "above" else min
        level = f"{limits['collapse']:.4g}"
        if limits["control"] != limits["collapse"]:  # relative: each run has its own
            level += f" / {limits['control']:.4g} (collapse / control)"
        print(
            f"\n{name}: {indicator} on {probe}, default {bad_side} {level}: "
            f"collapse worst {worst(got['collapse']):.4g} (last {got['collapse'][-1]:.4g}), "
            f"control worst {worst(got['control']):.4g} (last {got['control'][-1]:.4g})"
        )
        for run, crosses in (("collapse", True), ("control", False)):
            beyond = [v > limits[run] if bad_side == "above" else v < limits[run] for v in got[run]]
            assert any(beyond) == crosses, (indicator, run, limits[run], got[run])

        alerts = firing(live_server.url, collapse, indicator)
        fired = sorted(a["probe"] for a in alerts if not a["reminder"])
        assert fired == sorted([probe, *also_fires]), alerts
        assert firing(live_server.url, control, indicator) == []

    # the control is healthy for the whole family, not only for the scenario's indicator
    family = CATALOGUE[sc.indicator].family
    false_alarms = [
        e for e in firing(live_server.url, control) if CATALOGUE[e["indicator"]].family == family
    ]
    assert false_alarms == [], false_alarms
