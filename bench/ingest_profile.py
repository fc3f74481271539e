"""Where ingest's CPU goes, per point: prints a profile, asserts nothing.

Accepts and processes batches in this process (``services.ingest.ingest_batch``: the accepting
half, then the processor's), on a fresh SQLite file or the Postgres given, under cProfile with
the process's CPU time as its clock (the machine is shared: wall time measures the neighbours).
Batches are built as ``bench/ingest.py`` builds them: ``--probes`` scalar probes x
``--batch-steps`` steps. The first ``--warm`` batches are not profiled.

    python bench/ingest_profile.py                                 # 100 probes x 20 steps
    python bench/ingest_profile.py --probes 1000 --batch-steps 2   # a trainer's shape
    python bench/ingest_profile.py --db postgresql://postgres@127.0.0.1/cw_profile
    python bench/ingest_profile.py --plain         # CPU per point without the profiler's cost
"""

from __future__ import annotations

import argparse
import cProfile
import gzip
import pstats
import shutil
import tempfile
import time
from pathlib import Path

from ingest import bodies

from collapsewatch_server.config import Settings
from collapsewatch_server.db import Database, make_engine, migrate
from collapsewatch_server.services.context import ServiceContext
from collapsewatch_server.services.ingest import ingest_batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--probes", type=int, default=100)
    parser.add_argument("--batch-steps", type=int, default=20)
    parser.add_argument("--warm", type=int, default=5, help="batches before the profile")
    parser.add_argument("--db", help="a database URL (default: a fresh SQLite file)")
    parser.add_argument("--top", type=int, default=30, help="functions printed")
    parser.add_argument("--plain", action="store_true", help="time only, no profile")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cw-bench-profile-"))
    try:
        url = args.db or f"sqlite:///{tmp}/profile.db"
        engine = make_engine(url)
        migrate(engine)
        ctx = ServiceContext(Database(engine), Settings(db_url=url))
        _, batches = bodies(0, args.points, args.probes, args.batch_steps)
        raw = [gzip.decompress(b) for b in batches]
        for body in raw[: args.warm]:
            ingest_batch(ctx, body)
        profile = cProfile.Profile(time.process_time)
        cpu0 = time.process_time()
        if not args.plain:
            profile.enable()
        for body in raw[args.warm :]:
            ingest_batch(ctx, body)
        profile.disable()
        cpu = time.process_time() - cpu0
        points = (len(raw) - args.warm) * args.probes * args.batch_steps
        how = "not profiled" if args.plain else "profiled"
        print(f"{points:,} points, {cpu * 1e6 / max(1, points):.1f} us of CPU a point ({how})")
        if not args.plain:
            stats = pstats.Stats(profile)
            stats.sort_stats("cumulative").print_stats(args.top)
            stats.sort_stats("tottime").print_stats(args.top)
        engine.dispose()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
