"""Where ingest's CPU goes, per point: prints a profile, asserts nothing.

Accepts and processes batches in this process (``services.ingest.ingest_batch``: the accepting
half, then the processor's), on a fresh SQLite file or the Postgres given, under cProfile with
the process's CPU time as its clock (the machine is shared: wall time measures the neighbours).
Batches are built as ``bench/ingest.py --shape records`` builds them: ``--probes`` scalar probes x
``--batch-steps`` steps. The first ``--warm`` batches are not profiled.

    python bench/ingest_profile.py                                 # 100 probes x 20 steps
    python bench/ingest_profile.py --probes 1000 --batch-steps 2   # a trainer's shape
    python bench/ingest_profile.py --db postgresql://postgres@127.0.0.1/cw_profile
    python bench/ingest_profile.py --plain         # CPU per point without the profiler's cost
    python bench/ingest_profile.py --spool DIR     # a real trainer's batches (an SDK's spool)

``--spool`` takes the batches an SDK spooled (run a trainer with its server away, e.g.
``server="http://127.0.0.1:9"``): records as a training run makes them, arrays and all.
"""

from __future__ import annotations

import argparse
import cProfile
import gzip
import json
import pstats
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from ingest import bodies
from sqlalchemy import func, select

from collapsewatch.pipeline.spool import batch_files
from collapsewatch.schemas import IngestBatch
from collapsewatch_server.config import Settings
from collapsewatch_server.db import Database, make_engine, migrate
from collapsewatch_server.services.context import ServiceContext
from collapsewatch_server.services.ingest import accept_batch, ingest_batch
from collapsewatch_server.services.processing import process_next
from collapsewatch_server.tables import Point, StatRecordRow


def stored(ctx: ServiceContext) -> tuple[int, int]:
    """Records and points stored so far."""
    with ctx.db.read() as s:
        records = s.scalar(select(func.count()).select_from(StatRecordRow)) or 0
        points = s.scalar(select(func.count()).select_from(Point)) or 0
    return records, points


def split(body: bytes, size: int) -> list[bytes]:
    """A batch cut into batches of ``size`` records (new ids; the last keeps the status)."""
    doc = json.loads(body)
    records = doc["records"]
    parts = []
    for start in range(0, len(records), size):
        part = dict(doc, batch_id=str(uuid.uuid4()), records=records[start : start + size])
        if start + size < len(records):
            part.pop("status", None)
        parts.append(json.dumps(part).encode())
    return parts


def spooled(directory: Path) -> list[Path]:
    """The batch files under an SDK's spool directory (a run's or the root), in order."""
    return batch_files(directory)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--probes", type=int, default=100)
    parser.add_argument("--batch-steps", type=int, default=20)
    parser.add_argument("--warm", type=int, default=5, help="batches before the profile")
    parser.add_argument("--db", help="a database URL (default: a fresh SQLite file)")
    parser.add_argument("--top", type=int, default=30, help="functions printed")
    parser.add_argument("--plain", action="store_true", help="time only, no profile")
    parser.add_argument("--spool", type=Path, help="replay the batches an SDK spooled here")
    parser.add_argument(
        "--split",
        type=int,
        default=0,
        help="cut spooled batches into batches of this many records (a live sender's size)",
    )
    parser.add_argument(
        "--backlog",
        action="store_true",
        help="accept every batch first, then process the queue (a server that fell behind)",
    )
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cw-bench-profile-"))
    try:
        url = args.db or f"sqlite:///{tmp}/profile.db"
        engine = make_engine(url)
        migrate(engine)
        ctx = ServiceContext(Database(engine), Settings(db_url=url))
        if args.spool:
            raw = [gzip.decompress(p.read_bytes()) for p in spooled(args.spool)]
            if args.split:
                raw = [part for body in raw for part in split(body, args.split)]
        else:
            _, batches = bodies(0, args.points, args.probes, args.batch_steps, "records")
            raw = [gzip.decompress(b) for b in batches]
        for body in raw[: args.warm]:
            ingest_batch(ctx, body)
        # as a client sends them: the HTTP route hands the gzipped bytes to the queue
        gzipped = [gzip.compress(body, 1) for body in raw]
        before = stored(ctx)
        profile = cProfile.Profile(time.process_time)
        cpu0 = time.process_time()
        if not args.plain:
            profile.enable()
        if args.backlog:
            for body, sent in zip(raw[args.warm :], gzipped[args.warm :], strict=True):
                accept_batch(ctx, IngestBatch.model_validate_json(body), body, sent)
            accepted = time.process_time()
            while process_next(ctx) is not None:
                pass
        else:
            for body in raw[args.warm :]:
                ingest_batch(ctx, body)
        profile.disable()
        cpu = time.process_time() - cpu0
        records, points = (after - b for after, b in zip(stored(ctx), before, strict=True))
        how = "not profiled" if args.plain else "profiled"
        print(
            f"{records:,} records, {points:,} points in {len(raw) - args.warm} batches: "
            f"{cpu * 1e6 / max(1, records):.1f} us of CPU a record, "
            f"{cpu * 1e6 / max(1, points):.1f} us a point ({how})"
        )
        if args.backlog:
            share = (accepted - cpu0) * 1e6 / max(1, records)
            print(f"  of which accepting {share:.1f} us a record")
        if not args.plain:
            stats = pstats.Stats(profile)
            stats.sort_stats("cumulative").print_stats(args.top)
            stats.sort_stats("tottime").print_stats(args.top)
        engine.dispose()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
