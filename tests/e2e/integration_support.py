"""What the integration tests read of a run on the real app, and the alert they act on."""

from __future__ import annotations

from typing import Any

from tests.helpers import make_batch

SERVER = "http://testserver"


def indicators(client: Any, run_id: str) -> set[str]:
    """The indicators a run has series of."""
    return {s["indicator"] for s in client.get(f"/api/v1/runs/{run_id}/series").json()}


def steps_of(client: Any, run_id: str, indicator: str, probe: str) -> list[int]:
    pts = client.get(
        f"/api/v1/runs/{run_id}/series/{indicator}", params={"probe": probe, "max_points": 100000}
    ).json()
    return list(pts["steps"])


def always_critical(client: Any, project: str) -> None:
    """A rule that fires at the first loss point: the alert a run must act on (the project is
    made by a first batch, as ingest makes projects)."""
    made = client.post("/api/v1/ingest", json=make_batch(project=project, name="setup"))
    assert made.status_code == 202, made.text
    r = client.post(
        f"/api/v1/projects/{project}/rules",
        json={
            "name": "loss seen",
            "indicator": "loss",
            "condition": "above",
            "threshold": -1e9,
            "pending_points": 1,
            "severity": "critical",
        },
    )
    assert r.status_code == 201, r.text
