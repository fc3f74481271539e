"""Alembic owns the schema: migrations run on empty SQLite and Postgres and match the models."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from collapsewatch_server.db import alembic_config, make_engine, migrate
from collapsewatch_server.tables import Base


def test_migrations_up_down_up_and_match_models(db_url: str) -> None:
    engine = make_engine(db_url)
    migrate(engine)
    assert {"runs", "points", "series", "stat_records", "tokens"} <= set(
        inspect(engine).get_table_names()
    )
    command.downgrade(alembic_config(engine), "base")
    assert "runs" not in inspect(engine).get_table_names()
    migrate(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == [], diff
    engine.dispose()


def test_counters_and_rollups_are_built_for_points_stored_before(db_url: str) -> None:
    from datetime import UTC, datetime

    from sqlalchemy import text

    engine = make_engine(db_url)
    migrate(engine, "0004")
    now = datetime.now(UTC)
    run = "5f1a3c2e-0000-4000-8000-000000000001"
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO projects (id, name, created_at) VALUES (1, 'p', :t)"), {"t": now}
        )
        conn.execute(
            text(
                "INSERT INTO runs (id, project_id, name, status, config, host, torch_version, "
                "sdk_version, started_at, last_seen_at) VALUES (:r, 1, 'r', 'running', '{}', '', "
                "'', '', :t, :t)"
            ),
            {"r": run, "t": now},
        )
        conn.execute(
            text(
                'INSERT INTO probes (id, run_id, name, kind, module, "order", params) '
                "VALUES (1, :r, 'fc', 'scalar', '', 0, 0)"
            ),
            {"r": run},
        )
        conn.execute(
            text("INSERT INTO series (id, run_id, probe_id, indicator) VALUES (1, :r, 1, 'value')"),
            {"r": run},
        )
        conn.execute(
            text("INSERT INTO points (series_id, step, value) VALUES (1, :s, :v)"),
            [{"s": s, "v": None if s == 70 else float(s % 50)} for s in range(0, 300, 2)],
        )
    migrate(engine)
    with engine.connect() as conn:
        counters = conn.execute(
            text("SELECT points, first_step, last_step, last_value FROM series")
        ).one()
        level0 = conn.execute(
            text(
                "SELECT bin, count, nonfinite, low, high, high_step FROM point_rollups "
                "WHERE level = 0 ORDER BY bin"
            )
        ).all()
    assert tuple(counters) == (150, 0, 298, 48.0)
    assert len(level0) == 19  # bins of 16 steps over steps 0..298
    assert sum(r[1] for r in level0) == 150
    assert [tuple(r) for r in level0 if r[2]] == [(4, 8, 1, 14.0, 28.0, 78)]
    engine.dispose()


def test_each_delivery_made_before_grouping_carries_its_event_under_the_same_id(
    db_url: str,
) -> None:
    """0006: a delivery of 0005 becomes a notification carrying its one event, whose id stays
    the ``webhook-id`` (a receiver deduplicating on it sees nothing new)."""
    from datetime import UTC, datetime

    from sqlalchemy import text

    engine = make_engine(db_url)
    migrate(engine, "0005")
    now = datetime.now(UTC)
    run, event = "5f1a3c2e-0000-4000-8000-000000000002", "9a0e6a1c-3f1b-4f7e-8a55-1c2d3e4f5a6b"
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO projects (id, name, created_at) VALUES (1, 'p', :t)"), {"t": now}
        )
        conn.execute(
            text(
                "INSERT INTO runs (id, project_id, name, status, config, host, torch_version, "
                "sdk_version, started_at, last_seen_at) VALUES (:r, 1, 'r', 'running', '{}', '', "
                "'', '', :t, :t)"
            ),
            {"r": run, "t": now},
        )
        conn.execute(
            text(
                "INSERT INTO alert_events (id, project_id, run_id, status, severity, reminder, "
                "message, created_at) VALUES (:e, 1, :r, 'firing', 'critical', false, '', :t)"
            ),
            {"e": event, "r": run, "t": now},
        )
        conn.execute(
            text(
                "INSERT INTO webhooks (id, project_id, name, url, format, severities, secret, "
                "enabled, created_at, updated_at) VALUES (1, 1, '', 'http://x/', 'generic', "
                "'[\"critical\"]', 'whsec_x', true, :t, :t)"
            ),
            {"t": now},
        )
        conn.execute(
            text(
                "INSERT INTO deliveries (id, webhook_id, event_id, status, attempts, "
                "next_attempt_at, created_at) VALUES (1, 1, :e, 'pending', 2, :t, :t)"
            ),
            {"e": event, "t": now},
        )
    migrate(engine)
    with engine.connect() as conn:
        delivery = conn.execute(
            text("SELECT uid, status, attempts, sealed_at IS NOT NULL FROM deliveries")
        ).one()
        members = conn.execute(text("SELECT delivery_id, event_id FROM delivery_events")).all()
    assert tuple(delivery) == (event, "pending", 2, True)
    assert [tuple(m) for m in members] == [(1, event)]
    engine.dispose()


def test_coarse_levels_are_complete_again_after_a_downgrade_and_marked_after_an_upgrade(
    db_url: str,
) -> None:
    """0008: a series' coarse rollup levels lag behind its end (only the finest level is
    written per batch). Down to 0007 they are built whole from the finest bins; up again,
    the mark goes past the last step (every level complete)."""
    import json
    import math

    import numpy as np
    from sqlalchemy import text

    from collapsewatch_server import rollups
    from collapsewatch_server.config import Settings
    from collapsewatch_server.db import Database
    from collapsewatch_server.services.context import ServiceContext
    from collapsewatch_server.services.ingest import ingest_batch
    from tests.alert_helpers import scalar_batch

    engine = make_engine(db_url)
    migrate(engine)
    ctx = ServiceContext(Database(engine), Settings(db_url=db_url))
    run = "5f1a3c2e-0000-4000-8000-000000000003"
    steps = np.arange(0, 2500, 2)
    values = np.sin(steps / 90.0)
    values[100] = math.nan
    for i in range(0, steps.size, 100):
        batch = scalar_batch(run, values[i : i + 100].tolist(), start=int(steps[i]), every=2)
        ingest_batch(ctx, json.dumps(batch).encode())
    query = text(
        "SELECT level, bin, count, nonfinite, first_step, last_step, low, high "
        "FROM point_rollups WHERE level > 0 ORDER BY level, bin"
    )
    with engine.connect() as conn:
        mark = conn.execute(text("SELECT coarse_until FROM series")).scalar_one()
        lagging = conn.execute(query).all()
    assert 0 < mark < 2498
    command.downgrade(alembic_config(engine), "0007_data")
    with engine.connect() as conn:
        whole = conn.execute(query).all()
    assert whole != lagging
    sid = 1
    expected = [
        (
            level,
            int(b.first_step[i]) // width,
            int(b.count[i]),
            int(b.nonfinite[i]),
            int(b.first_step[i]),
            int(b.last_step[i]),
            float(b.low[i]),
            float(b.high[i]),
        )
        for level, (b, width) in enumerate(
            zip(
                rollups.levels_of(rollups.of_points(np.full(steps.size, sid), steps, values)),
                rollups.LEVELS,
                strict=True,
            )
        )
        if level > 0
        for i in range(len(b))
    ]
    assert [tuple(r) for r in whole] == expected
    migrate(engine)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT coarse_until FROM series")).scalar_one() == 2512
    engine.dispose()


def test_blocks_of_points_become_single_points_after_a_downgrade(db_url: str) -> None:
    """0009: a scalar column is stored as one row holding a block of points. Down to 0008
    each of its points is a row of its own (NaN as NULL); up again, reads are the same."""
    import json
    import uuid
    from datetime import UTC, datetime

    from sqlalchemy import text

    from collapsewatch_server.config import Settings
    from collapsewatch_server.db import Database
    from collapsewatch_server.repositories import points
    from collapsewatch_server.services.context import ServiceContext
    from collapsewatch_server.services.ingest import ingest_batch

    engine = make_engine(db_url)
    migrate(engine)
    ctx = ServiceContext(Database(engine), Settings(db_url=db_url))
    run = {
        "run_id": str(uuid.uuid4()),
        "project": "p",
        "name": "blocks",
        "started_at": datetime.now(UTC).isoformat(),
    }
    column = {"probe": "lr", "steps": [0, 3, 6], "values": [0.5, float("nan"), 0.25]}
    batch = {"batch_id": str(uuid.uuid4()), "run": run, "scalars": [column]}
    ingest_batch(ctx, json.dumps(batch).encode())
    with ctx.db.read() as s:
        (sid,) = s.execute(text("SELECT id FROM series")).scalars().all()
        before = points.of_series(s, sid)
    command.downgrade(alembic_config(engine), "0008_coarse")
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT step, value FROM points ORDER BY step")).all()
    assert [tuple(r) for r in rows] == [(0, 0.5), (3, None), (6, 0.25)]
    migrate(engine)
    with ctx.db.read() as s:
        after = points.of_series(s, sid)
    assert before[0].tolist() == after[0].tolist() == [0, 3, 6]
    assert str(before[1].tolist()) == str(after[1].tolist()) == "[0.5, nan, 0.25]"
    engine.dispose()
