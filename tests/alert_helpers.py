"""Test helpers for alerting: batches whose indicator values are chosen point by point."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from tests.helpers import activation_stats


def _batch(
    run_id: uuid.UUID | str,
    records: list[dict[str, Any]],
    probes: list[dict[str, Any]],
    *,
    project: str,
    name: str,
    status: str | None,
) -> dict[str, Any]:
    return {
        "batch_id": str(uuid.uuid4()),
        "run": {
            "run_id": str(run_id),
            "project": project,
            "name": name,
            "started_at": datetime(2025, 1, 1, tzinfo=UTC).isoformat(),
            "probes": probes,
        },
        "records": records,
        "status": status,
    }


def scalar_batch(
    run_id: uuid.UUID | str,
    values: Sequence[float],
    *,
    start: int = 0,
    every: int = 1,
    probe: str = "metric",
    project: str = "proj",
    name: str = "run-a",
    status: str | None = None,
) -> dict[str, Any]:
    """A batch of one logged scalar (indicator ``value`` on ``probe``) at steps start, +every..."""
    records = [
        {"probe": probe, "kind": "scalar", "step": start + i * every, "stats": {"value": v}}
        for i, v in enumerate(values)
    ]
    probes = [{"name": probe, "kind": "scalar"}]
    return _batch(run_id, records, probes, project=project, name=name, status=status)


def dead_units_batch(
    run_id: uuid.UUID | str,
    dead: dict[str, Sequence[int]],
    *,
    width: int = 10,
    start: int = 0,
    project: str = "proj",
    name: str = "run-a",
) -> dict[str, Any]:
    """Activation records whose ``dead_fraction`` on probe p at step start+i is dead[p][i]/width."""
    records = [
        {
            "probe": probe,
            "kind": "activation",
            "step": start + i,
            "stats": activation_stats(width=width, dead=k),
        }
        for probe, counts in dead.items()
        for i, k in enumerate(counts)
    ]
    probes = [
        {"name": p, "kind": "activation", "module": "Linear", "order": i, "width": width}
        for i, p in enumerate(dead)
    ]
    return _batch(run_id, records, probes, project=project, name=name, status=None)


def value_rule(**fields: Any) -> dict[str, Any]:
    """A rule body on the ``value`` indicator (logged scalars): above 0.5 after 3 points."""
    return {
        "name": "metric high",
        "indicator": "value",
        "condition": "above",
        "threshold": 0.5,
        "pending_points": 3,
        **fields,
    }
