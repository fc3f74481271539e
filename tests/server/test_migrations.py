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
