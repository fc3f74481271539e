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
