"""`collapsewatch demo` against the real server: the collapse run's dead units rise far above
the control's, as the dashboard will show them."""

from __future__ import annotations

import subprocess
import sys

import httpx

from tests.e2e.conftest import LiveServer


def peak(server: str, run_id: str, indicator: str, probe: str) -> float:
    pts = httpx.get(
        f"{server}/api/v1/runs/{run_id}/series/{indicator}", params={"probe": probe}
    ).json()
    return max(v for v in pts["values"] if v is not None)


def test_demo_collapse_run_kills_units_and_control_does_not(live_server: LiveServer) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "collapsewatch_server.cli", "demo", "--server", live_server.url],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"{live_server.url}/runs/" in out.stdout  # the run pages are printed

    runs = {r["name"]: r for r in httpx.get(f"{live_server.url}/api/v1/runs?project=demo").json()}
    assert set(runs) == {"relu-lr0.1", "relu-lr0.001"}
    assert all(r["status"] == "finished" for r in runs.values())

    collapse = runs["relu-lr0.1"]["run_id"]
    control = runs["relu-lr0.001"]["run_id"]
    assert peak(live_server.url, collapse, "dead_fraction", "fc2") > 0.5
    assert peak(live_server.url, control, "dead_fraction", "fc2") < 0.05
    # the first layer keeps its units in both: the dashboard points at fc2, not everywhere
    assert peak(live_server.url, collapse, "dead_fraction", "fc1") < 0.05


def test_demo_starts_its_own_server_on_sqlite(tmp_path: object) -> None:
    """What `make run` does, minus waiting for Ctrl-C (--exit)."""
    from collapsewatch_server.db import make_engine
    from collapsewatch_server.store import Store
    from tests.helpers import free_port

    db_url = f"sqlite:///{tmp_path}/demo.db"
    port = free_port()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "collapsewatch_server.cli",
            "demo",
            "--exit",
            "--steps",
            "60",
            "--port",
            str(port),
            "--db",
            db_url,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"dashboard at http://127.0.0.1:{port}/" in out.stdout
    engine = make_engine(db_url)
    runs = Store(engine).list_runs("demo")
    engine.dispose()
    assert sorted((r.name, r.status.value, r.last_step) for r in runs) == [
        ("relu-lr0.001", "finished", 59),
        ("relu-lr0.1", "finished", 59),
    ]
