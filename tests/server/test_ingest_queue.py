"""Ingest answers at once and processes right after, on SQLite and Postgres: re-used batch ids
with other content, a deep queue answered 429 with Retry-After, and a batch nobody can process
set aside without blocking the run's later batches."""

from __future__ import annotations

import json
import time
import uuid
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient

from collapsewatch.schemas import IngestBatch
from collapsewatch_server import create_app, errors
from collapsewatch_server.config import Settings
from collapsewatch_server.db import Database, make_engine, migrate
from collapsewatch_server.repositories import ingest_queue
from collapsewatch_server.services import runs
from collapsewatch_server.services.context import ServiceContext
from collapsewatch_server.services.ingest import accept_batch
from collapsewatch_server.services.parsed_batches import ParsedBatches
from collapsewatch_server.services.processing import process_next
from collapsewatch_server.tables import QueuedBatch, utcnow
from tests.alert_helpers import scalar_batch
from tests.helpers import make_batch, scrape


def post(client: Any, batch: dict[str, Any]) -> Any:
    body = json.dumps(batch)
    return client.post("/api/v1/ingest", content=body, headers={"content-type": "application/json"})


def test_a_batch_id_reused_with_other_content_is_409(client: Any) -> None:
    batch = make_batch(steps=range(2))
    first = post(client, batch)
    assert first.status_code == 202 and first.json()["queued"] is False
    again = post(client, {**batch, "sent_at": "2030-01-01T00:00:00Z"})  # re-sent later
    assert again.status_code == 202 and again.json()["duplicate"] is True
    other = make_batch(steps=range(5), project="elsewhere")
    r = post(client, {**other, "batch_id": batch["batch_id"]})
    assert r.status_code == 409
    assert r.json()["detail"] == errors.BATCH_ID_REUSED.format(batch_id=batch["batch_id"])
    assert client.get("/api/v1/runs", params={"project": "elsewhere"}).status_code == 404


def hold_a_batch(settings: Settings, records: int) -> None:
    """Another server process holds a queued batch of ``records`` records for an hour."""

    engine = make_engine(settings.db_url)
    ctx = ServiceContext(Database(engine), settings)
    body = json.dumps(scalar_batch(uuid.uuid4(), [0.5] * records, name="held")).encode()
    accept_batch(ctx, IngestBatch.model_validate_json(body), body)
    with ctx.db.write() as s:
        assert ingest_queue.claim(s, utcnow(), utcnow() + timedelta(hours=1))
    engine.dispose()


def test_a_deep_queue_is_answered_429_with_retry_after(settings: Settings) -> None:
    busy = settings.model_copy(update={"ingest_queue_max_records": 50, "ingest_retry_after_s": 3})
    with TestClient(create_app(busy)) as client:
        hold_a_batch(busy, 40)
        small = scalar_batch(uuid.uuid4(), [0.1] * 10)
        assert post(client, small).status_code == 202, "40 + 10 records fit"
        r = post(client, scalar_batch(uuid.uuid4(), [0.1] * 11))
        assert r.status_code == 429  # throttled, not a 5xx: nothing is wrong with the server
        assert r.headers["retry-after"] == "3"
        # 40 held, and the 10 of the small batch unless the processor has taken them already
        waiting = {errors.INGEST_BUSY.format(records=n, retry_after=3) for n in (40, 50)}
        assert r.json()["detail"] in waiting
        # a re-send of a stored batch is still acknowledged: it adds nothing to the queue
        assert post(client, small).json()["duplicate"] is True
        rejected = scrape(client)[("collapsewatch_ingest_rejected_total", (("reason", "busy"),))]
        assert rejected == 1


def queue_broken(ctx: ServiceContext, batch: dict[str, Any]) -> None:
    """Queue ``batch`` stored broken (a bug, a disk error): its payload is not gzip."""
    with ctx.db.write() as s:
        s.add(
            QueuedBatch(
                batch_id=batch["batch_id"],
                run_id=str(batch["run"]["run_id"]),
                records=len(batch["records"]),
                payload=b"\x1f\x8b not gzip",
                received_at=utcnow(),
            )
        )


def test_a_batch_that_cannot_be_processed_is_set_aside(settings: Settings) -> None:
    tries = settings.model_copy(update={"ingest_max_attempts": 2})
    with TestClient(create_app(tries)) as client:
        ctx = client.app.state.context
        run = uuid.uuid4()
        bad = scalar_batch(run, [0.1, 0.2])
        post(client, scalar_batch(run, [0.0], start=100))
        queue_broken(ctx, bad)
        later = scalar_batch(run, [0.3], start=200)
        assert post(client, later).status_code == 202
        # The app's own processor runs beside this loop and may hold a batch it claimed: wait
        # until only the set-aside batch is left, instead of counting on four calls.
        deadline = time.monotonic() + 30
        while True:
            process_next(ctx)
            with ctx.db.read() as s:
                left = s.query(QueuedBatch).all()
            if len(left) == 1 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        with ctx.db.read() as s:
            (row,) = s.query(QueuedBatch).all()
            assert (row.batch_id, row.attempts) == (bad["batch_id"], 2)
            assert row.failed_at is not None and "BadGzipFile" in (row.error or "")
        (series,) = runs.list_series(ctx, run)
        assert (series.points, series.last_step) == (2, 200), "the later batch was processed"


def test_the_processor_takes_the_batch_parsed_or_parses_the_queued_one(settings: Settings) -> None:
    """A batch accepted by this process is processed from its parsed copy; one accepted by
    another process (or pushed out of the bounded memory) from the queue: the same points."""
    engine = make_engine(settings.db_url)
    migrate(engine)
    here = ServiceContext(Database(engine), settings, parsed=ParsedBatches(max_bytes=10_000))
    elsewhere = ServiceContext(Database(engine), settings)
    run = uuid.uuid4()
    mine = json.dumps(scalar_batch(run, [0.1, 0.2, 0.3])).encode()
    accept_batch(here, IngestBatch.model_validate_json(mine), mine)
    assert len(here.parsed) == 1
    done = process_next(here)
    assert done is not None and done.points == 3 and len(here.parsed) == 0

    theirs = json.dumps(scalar_batch(run, [0.4, float("nan")], start=3)).encode()
    accept_batch(elsewhere, IngestBatch.model_validate_json(theirs), theirs)
    done = process_next(here)
    assert done is not None and done.points == 2, "parsed from the queue"

    # bounded: a batch over the bound is not kept
    big = json.dumps(scalar_batch(run, [0.5] * 400, start=5)).encode()
    assert len(big) > 10_000
    accept_batch(here, IngestBatch.model_validate_json(big), big)
    assert len(here.parsed) == 0
    done = process_next(here)
    assert done is not None and done.points == 400
    (series,) = runs.list_series(here, run)
    assert (series.points, series.last_step) == (405, 404)
    engine.dispose()


def queue(ctx: ServiceContext, *batches: dict[str, Any]) -> None:
    for batch in batches:
        body = json.dumps(batch).encode()
        accept_batch(ctx, IngestBatch.model_validate_json(body), body)


def test_a_runs_queued_batches_are_processed_together(settings: Settings) -> None:
    """A server that fell behind takes a run's queued batches in one claim (up to its record
    budget, other runs' batches left alone) and stores what one-by-one processing would: the
    first of a repeated step, each batch's own count of new points, the last one's status."""
    engine = make_engine(settings.db_url)
    migrate(engine)
    ctx = ServiceContext(Database(engine), settings.model_copy(update={"ingest_claim_records": 9}))
    run, other = uuid.uuid4(), uuid.uuid4()
    queue(
        ctx,
        scalar_batch(run, [0.1, 0.2, 0.3]),
        scalar_batch(other, [9.0]),
        scalar_batch(run, [0.4, 0.5], start=3),
        scalar_batch(run, [7.0, 0.6], start=4),  # step 4 again: the first value stays
        scalar_batch(run, [0.7, 0.8, 0.9], start=6, status="finished"),  # over the budget
    )
    done = process_next(ctx)
    assert done is not None and not done.failed
    assert list(done.batches.values()) == [3, 2, 1], "three batches of 3 + 2 + 2 records"
    assert done.points == 6
    with ctx.db.read() as s:
        assert len(s.query(QueuedBatch).all()) == 2
    done = process_next(ctx)
    assert done is not None and done.run_id == str(other) and done.points == 1
    done = process_next(ctx)
    assert done is not None and list(done.batches.values()) == [3]
    (series,) = runs.list_series(ctx, run)
    assert (series.points, series.last_step) == (9, 8)
    points = runs.get_points(ctx, run, "value", probe="metric", max_points=100)
    assert points.steps == list(range(9)) and points.values[4] == 0.5, "the first value sent"
    assert runs.get_run(ctx, run).status.value == "finished"
    engine.dispose()


def test_a_bad_batch_among_a_claim_fails_alone(settings: Settings) -> None:
    """A claim of several batches that fails is processed one batch at a time: those before
    the bad one are stored, it goes back to the queue (its attempt counted), and those after it
    go back untried; the run's later batches are stored once it is set aside."""
    engine = make_engine(settings.db_url)
    migrate(engine)
    ctx = ServiceContext(Database(engine), settings.model_copy(update={"ingest_max_attempts": 2}))
    run = uuid.uuid4()
    queue(ctx, scalar_batch(run, [0.1, 0.2]))
    bad = scalar_batch(run, [0.3], start=2)
    queue_broken(ctx, bad)
    after = scalar_batch(run, [0.4, 0.5], start=3)
    queue(ctx, after)

    done = process_next(ctx)
    assert done is not None and done.failed and done.points == 2
    with ctx.db.read() as s:
        left = {row.batch_id: row.attempts for row in s.query(QueuedBatch).all()}
    assert left == {bad["batch_id"]: 1, after["batch_id"]: 0}, "the one after: untried"

    done = process_next(ctx)  # the bad one, alone: its second and last attempt
    assert done is not None and done.failed and done.batches == {}
    done = process_next(ctx)
    assert done is not None and done.batches == {after["batch_id"]: 2}
    with ctx.db.read() as s:
        (row,) = s.query(QueuedBatch).all()
    assert row.batch_id == bad["batch_id"] and row.failed_at is not None
    (series,) = runs.list_series(ctx, run)
    assert (series.points, series.last_step) == (4, 4)
    engine.dispose()
