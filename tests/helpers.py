"""Test helpers: build JSON-ready ingest batches and find free ports."""

from __future__ import annotations

import socket
import uuid
from datetime import UTC, datetime
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

#: Headers of a bodyless POST: the server takes state-changing requests only declared JSON.
JSON = {"content-type": "application/json"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def activation_stats(width: int = 4, dead: int = 1, n: int = 8) -> dict[str, Any]:
    """Plausible activation statistics of one layer with ``dead`` never-positive units."""
    return {
        "n": float(n),
        "width": float(width),
        "sum": [1.0] * width,
        "sumsq": [2.0] * width,
        "pos": [0.0] * dead + [float(n)] * (width - dead),
        "unit_sum": [0.5] * width,
        "eig": [float(width - i) for i in range(width)],
        "cov_n": float(n),
    }


def make_batch(
    run_id: uuid.UUID | str | None = None,
    *,
    project: str = "proj",
    name: str = "run-a",
    steps: range = range(3),
    probes: tuple[str, ...] = ("fc1", "fc2"),
    status: str | None = None,
    started_at: datetime | None = None,
) -> dict[str, Any]:
    """An ingest batch as the SDK sends it (JSON-ready dict)."""
    run_id = str(run_id or uuid.uuid4())
    return {
        "batch_id": str(uuid.uuid4()),
        "run": {
            "run_id": run_id,
            "project": project,
            "name": name,
            "started_at": (started_at or datetime.now(UTC)).isoformat(),
            "probes": [
                {"name": p, "kind": "activation", "module": "Linear", "order": i, "width": 4}
                for i, p in enumerate(probes)
            ],
        },
        "records": [
            {"probe": p, "kind": "activation", "step": s, "stats": activation_stats(dead=i + 1)}
            for s in steps
            for i, p in enumerate(probes)
        ]
        + [
            {
                "probe": "loss",
                "kind": "loss",
                "step": s,
                "stats": {"mean": 1.0 / (s + 1), "max": 2.0, "count": 1.0},
            }
            for s in steps
        ],
        "status": status,
    }


def add_half_dead_rule(client: Any, project: str = "proj") -> None:
    """A rule firing at once on a layer with more than 30 % dead units (``make_batch``'s fc2
    has half of them dead)."""
    rule = {"name": "half dead", "indicator": "dead_fraction", "condition": "above"}
    r = client.post(
        f"/api/v1/projects/{project}/rules", json={**rule, "threshold": 0.3, "pending_points": 1}
    )
    assert r.status_code == 201, r.text


def loss_record(step: int) -> dict[str, Any]:
    """A small SDK record (a dict, as the sender queues it) that is a batch's whole weight: a
    scalar would travel in a column, and a batch takes a hundred of them (``footprint.load``)."""
    value = float(step)
    return {
        "probe": "x",
        "kind": "loss",
        "step": step,
        "stats": {"mean": value, "max": value, "count": 1.0},
    }


def stored_records(db_url: str, run_id: str | uuid.UUID) -> list[tuple[int, int]]:
    """(probe id, step) of every record of a run the server stored: its raw records, and
    each value of its scalar columns (kept as blocks of points, with no raw record)."""
    import sqlalchemy as sa

    from collapsewatch_server.codec import unpack_points
    from collapsewatch_server.db import normalise_url
    from collapsewatch_server.tables import Point, Series, StatRecordRow

    engine = sa.create_engine(normalise_url(db_url))
    try:
        with engine.connect() as conn:
            out = [
                (int(pid), int(step))
                for pid, step in conn.execute(
                    sa.select(StatRecordRow.probe_id, StatRecordRow.step).where(
                        StatRecordRow.run_id == str(run_id)
                    )
                )
            ]
            blocks = conn.execute(
                sa.select(Series.probe_id, Point.packed)
                .join(Series, Series.id == Point.series_id)
                .where(Series.run_id == str(run_id), Point.packed.is_not(None))
            )
            for pid, packed in blocks:
                steps, _ = unpack_points(packed)
                out += [(int(pid), step) for step in steps.tolist()]
            return out
    finally:
        engine.dispose()


def scrape(client: Any, **kw: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``GET /metrics`` read by prometheus_client's own parser: ``{(name, labels): value}``."""
    r = client.get("/metrics", **kw)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(r.text)
        for sample in family.samples
    }
