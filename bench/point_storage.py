"""Rows per point against chunks of points: prints numbers, asserts nothing.

The question behind the ``points`` table's shape: one row per (series, step) written with the
database's bulk path, or one row per series per block of steps with the values packed (float64
and int64 arrays in two blobs). Both are measured here on bare tables (no server), on a SQLite
file and on a fresh Postgres database, with batches as the server writes them: ``--series``
series x ``--steps`` steps per batch, ``--batches`` batches.

Writes, in microseconds per point:

* rows, Core ``insert()`` with a list of dicts (SQLAlchemy builds every row's parameters);
* rows, the driver's bulk path: ``executemany`` of tuples on SQLite, ``COPY`` on Postgres;
* chunks: one row per series per batch (a block of ``--steps`` steps), same bulk path.

Reads: one whole series (``--batches x --steps`` points) in step order, and the bytes on disk.

    python bench/point_storage.py                     # SQLite and Postgres
    python bench/point_storage.py --backend sqlite --series 100 --steps 20 --batches 500
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
from servers import database, machine_load
from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    UniqueConstraint,
    create_engine,
    insert,
    select,
    text,
)

from collapsewatch_server.db import make_engine

META = MetaData()
ROWS = Table(
    "bench_points",
    META,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True),
    Column("series_id", Integer, nullable=False),
    Column("step", BigInteger, nullable=False),
    Column("value", Float),
    UniqueConstraint("series_id", "step"),
)
CHUNKS = Table(
    "bench_chunks",
    META,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True),
    Column("series_id", Integer, nullable=False),
    Column("first_step", BigInteger, nullable=False),
    Column("last_step", BigInteger, nullable=False),
    Column("steps", LargeBinary, nullable=False),
    Column("values", LargeBinary, nullable=False),
    UniqueConstraint("series_id", "first_step"),
)


def batch(i: int, series: int, steps: int) -> list[tuple[int, int, float]]:
    return [(sid, i * steps + k, 0.5 + k * 1e-3) for sid in range(series) for k in range(steps)]


def rows_core(engine: Engine, b: list[tuple[int, int, float]]) -> None:
    with engine.begin() as conn:
        conn.execute(insert(ROWS), [{"series_id": s, "step": t, "value": v} for s, t, v in b])


def rows_bulk(engine: Engine, b: list[tuple[int, int, float]]) -> None:
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            with cur.copy("COPY bench_points (series_id, step, value) FROM STDIN") as copy:
                for row in b:
                    copy.write_row(row)
        else:
            conn.exec_driver_sql(
                "INSERT INTO bench_points (series_id, step, value) VALUES (?, ?, ?)", b
            )


def chunks_bulk(engine: Engine, b: list[tuple[int, int, float]]) -> None:
    arr = np.array(b, dtype=np.float64)
    sids = arr[:, 0].astype(np.int64)
    order = np.argsort(sids, kind="stable")
    sids, arr = sids[order], arr[order]
    cut = np.flatnonzero(np.diff(sids)) + 1
    out = []
    for part_s, part in zip(np.split(sids, cut), np.split(arr, cut), strict=True):
        st = part[:, 1].astype(np.int64)
        out.append((int(part_s[0]), int(st[0]), int(st[-1]), st.tobytes(), part[:, 2].tobytes()))
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            cols = 'series_id, first_step, last_step, steps, "values"'
            with cur.copy(f"COPY bench_chunks ({cols}) FROM STDIN") as copy:
                for row in out:
                    copy.write_row(row)
        else:
            conn.exec_driver_sql(
                'INSERT INTO bench_chunks (series_id, first_step, last_step, steps, "values") '
                "VALUES (?, ?, ?, ?, ?)",
                out,
            )


def read_rows(engine: Engine) -> int:
    with engine.connect() as conn:
        got = conn.execute(
            select(ROWS.c.step, ROWS.c.value).where(ROWS.c.series_id == 7).order_by(ROWS.c.step)
        ).all()
    return len(got)


def read_chunks(engine: Engine) -> int:
    with engine.connect() as conn:
        got = conn.execute(
            select(CHUNKS.c.steps, CHUNKS.c["values"])
            .where(CHUNKS.c.series_id == 7)
            .order_by(CHUNKS.c.first_step)
        ).all()
    steps = np.concatenate([np.frombuffer(s, dtype=np.int64) for s, _ in got])
    values = np.concatenate([np.frombuffer(v, dtype=np.float64) for _, v in got])
    return int(min(steps.size, values.size))


def size_of(engine: Engine, table: str) -> float:
    """MiB the table takes with its indexes."""
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            return conn.scalar(text(f"SELECT pg_total_relation_size('{table}')")) / 2**20
        names = [table] + [r[0] for r in conn.exec_driver_sql(f"PRAGMA index_list({table})").all()]
        try:
            total = sum(
                conn.exec_driver_sql("SELECT sum(pgsize) FROM dbstat WHERE name = ?", (n,)).scalar()
                or 0
                for n in names
            )
        except Exception:
            return float("nan")  # SQLite built without the dbstat table
        return total / 2**20


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres"], action="append")
    parser.add_argument("--series", type=int, default=100)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batches", type=int, default=200)
    args = parser.parse_args()
    n = args.series * args.steps * args.batches
    print(f"{n:,} points: {args.batches} batches of {args.series} series x {args.steps} steps; "
          f"{machine_load()}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="cw-bench-storage-", ignore_cleanup_errors=True) as d:
        tmp = Path(d)
        for backend in args.backend or ["sqlite", "postgres"]:
            for name, write, table in (
                ("rows, Core insert of dicts", rows_core, "bench_points"),
                ("rows, bulk path", rows_bulk, "bench_points"),
                ("chunks, bulk path", chunks_bulk, "bench_chunks"),
            ):
                with database(backend, tmp) as url:
                    engine = (
                        make_engine(url)
                        if backend == "sqlite"
                        else create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
                    )
                    META.create_all(engine)
                    batches = [batch(i, args.series, args.steps) for i in range(args.batches)]
                    took = sum(timed(partial(write, engine, b)) for b in batches)
                    reader = read_chunks if table == "bench_chunks" else read_rows
                    read_s = min(timed(partial(reader, engine)) for _ in range(3))
                    got = reader(engine)
                    mib = size_of(engine, table)
                    engine.dispose()
                print(
                    f"{backend:<9} {name:<28} write {took / n * 1e6:6.2f} us/point"
                    f"   read one series ({got:,} points) {read_s * 1000:7.1f} ms"
                    f"   {mib:7.1f} MiB",
                    flush=True,
                )


if __name__ == "__main__":
    main()
