"""What the browser tests share: Debian's chromium driven by Playwright, tabs that record
console errors, synthetic runs ingested through the real API, and waits that respect the
dashboard's Content-Security-Policy."""

from __future__ import annotations

import math
import os
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

if TYPE_CHECKING:  # conftest imports this module
    from tests.e2e.conftest import LiveServer

CHROMIUM = Path("/usr/bin/chromium")
#: Screenshots are taken only when asked (UPDATE_SCREENSHOTS=1), so a test run leaves the
#: work tree clean.
DOCS_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


UPDATE_SCREENSHOTS = os.environ.get("UPDATE_SCREENSHOTS") == "1"


LIVE_TIMEOUT_MS = 5_000

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists() and not os.environ.get("CI"),
        reason=f"no chromium at {CHROMIUM} (apt-get install chromium); required when CI is set",
    ),
]

PROBES = ("fc1", "fc2", "fc3", "out")
WIDTH = 64


def layer_stats(dead: int, spread: float, rank_decay: float, n: int = 256) -> dict[str, Any]:
    """Activation statistics of a ``WIDTH``-unit layer: ``dead`` units never positive, mean unit
    vector of norm ``1 - spread`` and a spectrum decaying by ``rank_decay`` per eigenvalue."""
    unit = (1.0 - spread) * n / math.sqrt(WIDTH)
    return {
        "n": float(n),
        "width": float(WIDTH),
        "sum": [1.0] * WIDTH,
        "sumsq": [2.0 * n] * WIDTH,  # unit variance 2: no VICReg variance hinge
        "pos": [0.0] * dead + [n / 2] * (WIDTH - dead),
        "unit_sum": [unit] * WIDTH,
        "eig": [rank_decay**i for i in range(WIDTH)],
        "cov_n": float(n),
    }


def dead_units(probe: str, step: int) -> int:
    """fc2 loses most of its units in the first steps (the demo's recipe), the rest stay alive."""
    if probe == "fc2":
        return min(46, 8 * step) if step < 6 else 46 + min(3, step // 40)
    return {"fc3": 2}.get(probe, 0)


def batch(
    run_id: str,
    steps: range,
    *,
    name: str = "relu-lr0.1",
    project: str = "demo",
    probes: tuple[str, ...] = PROBES,
    status: str | None = None,
    started_at: datetime | None = None,
) -> dict[str, Any]:
    records: list[dict[str, Any]] = []
    for step in steps:
        for probe in probes:
            stats = layer_stats(
                dead_units(probe, step), 0.9 - 0.002 * step, 0.8 + 0.05 * (probe == "fc2")
            )
            records.append({"probe": probe, "kind": "activation", "step": step, "stats": stats})
        loss = 1.2 * math.exp(-step / 80) + 0.15
        records.append(
            {
                "probe": "loss",
                "kind": "loss",
                "step": step,
                "stats": {"mean": loss, "max": loss * 1.3, "count": 10.0},
            }
        )
    return {
        "batch_id": str(uuid.uuid4()),
        "run": {
            "run_id": run_id,
            "project": project,
            "name": name,
            "host": "gpu-node-07",
            "torch_version": "2.5.1",
            "sdk_version": "0.1.0",
            "config": {"lr": 0.1, "batch_size": 64, "optimizer": "SGD"},
            "started_at": (started_at or datetime.now(UTC)).isoformat(),
            "probes": [
                {"name": p, "kind": "activation", "module": "Linear", "order": i, "width": WIDTH}
                for i, p in enumerate(probes)
            ],
        },
        "records": records,
        "status": status,
    }


def ingest(server: LiveServer, body: dict[str, Any]) -> None:
    r = httpx.post(f"{server.url}/api/v1/ingest", json=body, timeout=30)
    assert r.status_code == 202, r.text


@dataclass
class Tab:
    """A browser page and every console error or uncaught exception it has shown."""

    page: Any
    problems: list[str]


def series_indicators(server: LiveServer, run_id: str) -> set[str]:
    series = httpx.get(f"{server.url}/api/v1/runs/{run_id}/series", timeout=10).json()
    return {s["indicator"] for s in series}


def wait_until(page: Any, expression: str, timeout_ms: int) -> None:
    """Poll a JS expression until it is true. Not ``page.wait_for_function``: that evaluates a
    string inside the page, which the dashboard's Content-Security-Policy rightly forbids."""
    deadline = time.monotonic() + timeout_ms / 1000
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"still false after {timeout_ms} ms: {expression}"
        page.wait_for_timeout(100)


def trace_names(page: Any, dom_id: str) -> list[str]:
    """Names of a chart's layer lines (not its alert markers)."""
    return page.evaluate(
        f"document.getElementById('{dom_id}').data.filter(t => t.uid !== 'alerts').map(t => t.name)"
    )


def chart_ready(dom_id: str) -> str:
    return f"document.getElementById('{dom_id}-card').dataset.state === 'ready'"
