"""Alembic environment: the engine comes from the caller (db.migrate), never from a global."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine, create_engine

from collapsewatch_server.db import normalise_url
from collapsewatch_server.tables import Base

config = context.config
target_metadata = Base.metadata


def _engine() -> Engine:
    engine = config.attributes.get("engine")
    if engine is not None:
        return engine
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no engine given and no sqlalchemy.url set")
    return create_engine(normalise_url(url))


def run_migrations_online() -> None:
    with _engine().connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            # Batch migrations rebuild a table (copy, drop, rename): with foreign keys on, the
            # drop would cascade to the rows of every table referring to it. The pragma only
            # takes outside a transaction, so it is set and committed first, and restored.
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.commit()
        try:
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                render_as_batch=sqlite,
            )
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
        finally:
            if sqlite:
                connection.rollback()
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")
                connection.commit()


run_migrations_online()
