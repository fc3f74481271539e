"""End to end: a real training script -> the real CLI server process -> SQLite -> the API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.e2e.conftest import LiveServer, start_server
from tests.helpers import free_port, make_batch

SCRIPT = Path(__file__).with_name("train_mlp.py")


def train(
    server: str, project: str, run: str, tmp_path: Path, steps: int = 40
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "COLLAPSEWATCH_SERVER": server,
        "COLLAPSEWATCH_PROJECT": project,
        "COLLAPSEWATCH_RUN": run,
        "COLLAPSEWATCH_SPOOL_DIR": str(tmp_path / "spool"),
        "PYTHONWARNINGS": "default",
    }
    return subprocess.run(
        [sys.executable, str(SCRIPT), "0.01", str(steps)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_training_streams_into_the_server(live_server: LiveServer, tmp_path: Path) -> None:
    done = train(live_server.url, "e2e", "mlp", tmp_path)
    assert done.returncode == 0, done.stderr
    assert "training done" in done.stdout
    # no warning when all goes well: only the summary of what is watched
    said = done.stderr.splitlines()
    assert said[0].startswith("collapsewatch: run mlp watched for dead units"), done.stderr
    assert not [line for line in said if "arning" in line or "rror" in line], done.stderr

    runs = httpx.get(f"{live_server.url}/api/v1/runs", params={"project": "e2e"}).json()
    assert [(r["name"], r["status"]) for r in runs] == [("mlp", "finished")]
    run_id = runs[0]["run_id"]
    assert runs[0]["last_step"] >= 35

    series = httpx.get(f"{live_server.url}/api/v1/runs/{run_id}/series").json()
    pairs = {(s["indicator"], s["probe"]) for s in series}
    for layer in ("0", "2", "4"):
        assert ("effective_rank", layer) in pairs
        # dead units where a ReLU follows: not after the output layer
        assert (("dead_fraction", layer) in pairs) == (layer != "4")
    assert ("loss", "loss") in pairs
    assert ("update_ratio", "0.weight") in pairs
    run = httpx.get(f"{live_server.url}/api/v1/runs/{run_id}").json()
    assert run["coverage"]["dead_units"] == {
        "watched": True,
        "detail": "2 layers before a ReLU, 0 Tanh/Sigmoid",
    }
    assert run["coverage"]["codebook"]["watched"] is False
    assert run["sampling"] == [{"step": 0, "every": 5}]

    loss = httpx.get(
        f"{live_server.url}/api/v1/runs/{run_id}/series/loss", params={"probe": "loss"}
    ).json()
    assert loss["total"] >= 7  # every=5 over 40 steps
    assert all(v is not None and v > 0 for v in loss["values"])
    ratio = httpx.get(
        f"{live_server.url}/api/v1/runs/{run_id}/series/update_ratio", params={"probe": "0.weight"}
    ).json()
    assert all(0 < v < 1 for v in ratio["values"])


def test_server_down_training_completes_then_sync_uploads(tmp_path: Path) -> None:
    port = free_port()  # nothing listens here during the training
    done = train(f"http://127.0.0.1:{port}", "offline", "mlp-offline", tmp_path)
    assert done.returncode == 0, done.stderr
    assert "training done" in done.stdout
    said = [line for line in done.stderr.splitlines() if "collapsewatch" in line]
    assert sum("unreachable" in line for line in said) == 1, done.stderr  # once, one line
    assert not any("Warning" in line for line in said), done.stderr  # not again as a warning
    assert "records, 0 stored;" in said[-1], "the account at exit says where everything is"
    spooled = sorted((tmp_path / "spool").rglob("*.json.gz"))
    assert spooled, "nothing was spooled"

    server = start_server(f"sqlite:///{tmp_path}/later.db", port=port)
    try:
        sync = subprocess.run(
            [
                sys.executable,
                "-m",
                "collapsewatch_server.cli",
                "sync",
                str(tmp_path / "spool"),
                "--server",
                server.url,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert sync.returncode == 0, sync.stdout + sync.stderr
        assert not list((tmp_path / "spool").rglob("*.json.gz"))
        runs = httpx.get(f"{server.url}/api/v1/runs", params={"project": "offline"}).json()
        assert [(r["name"], r["status"]) for r in runs] == [("mlp-offline", "finished")]
        assert runs[0]["last_step"] >= 35
    finally:
        server.stop()


def test_live_events_stream_new_points(live_server: LiveServer) -> None:
    batch = make_batch(steps=range(2), probes=("fc1",))
    run_id = batch["run"]["run_id"]
    assert httpx.post(f"{live_server.url}/api/v1/ingest", json=batch).status_code == 202

    url = f"{live_server.url}/api/v1/runs/{run_id}/events"
    with httpx.stream("GET", url, params={"after": 0}, timeout=20) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        first = _next_event(lines, "points")
        assert {p["step"] for p in first["points"]} == {0, 1}
        later = make_batch(run_id, steps=range(7, 8), probes=("fc1",))
        assert httpx.post(f"{live_server.url}/api/v1/ingest", json=later).status_code == 202
        second = _next_event(lines, "points")
        assert {p["step"] for p in second["points"]} == {7}
        assert {p["indicator"] for p in second["points"]} >= {"dead_fraction", "loss"}
        # judged by the server against the thresholds in force (the page only shows it)
        judged = {(p["indicator"], p["probe"]): p for p in second["points"]}
        assert judged[("loss", "loss")]["judgement"] == "none", "no threshold on the loss"
        dead = judged[("dead_fraction", "fc1")]
        assert dead["judgement"] in ("ok", "warn", "critical") and "margin" in dead


def _next_event(lines: object, name: str) -> dict[str, object]:
    event = None
    for line in lines:  # type: ignore[attr-defined]
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: ") and event == name:
            return json.loads(line.removeprefix("data: "))
    raise AssertionError(f"stream ended before a {name!r} event")
