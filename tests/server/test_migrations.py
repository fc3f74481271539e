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
