"""The webhook outbox through the deliveries and webhooks services: grouping into
notifications, atomic claims, leases, the attempt log, the release of a recovered receiver's
backlog, webhook CRUD (SQLite and Postgres)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest

from collapsewatch_server import errors
from collapsewatch_server.config import Settings
from collapsewatch_server.db import Database, make_engine, migrate
from collapsewatch_server.services import alerts, deliveries, projects, silences, webhooks
from collapsewatch_server.services.context import ServiceContext
from collapsewatch_server.tables import utcnow
from collapsewatch_server.webhooks.deliverer import Attempt, DeliveryJob
from collapsewatch_web.api_schemas.silences import SilenceCreate
from collapsewatch_web.api_schemas.webhooks import WebhookCreate, WebhookUpdate
from tests.webhook_support import put_events

URL = "http://127.0.0.1:9/hook"
RUN = uuid.UUID("00000000-0000-4000-8000-00000000000a")


@pytest.fixture
def ctx(db_url: str) -> Iterator[ServiceContext]:
    engine = make_engine(db_url)
    migrate(engine)
    settings = Settings(
        db_url=db_url,
        public_url="http://dash",
        notify_group_wait_s=0,
        notify_group_interval_s=0,
        webhook_release_per_s=10,
    )
    yield ServiceContext(Database(engine), settings)
    engine.dispose()


def hook(ctx: ServiceContext, project: str = "p", **fields: Any) -> int:
    return webhooks.create_webhook(ctx, project, WebhookCreate(url=URL, **fields)).id


def record(ctx: ServiceContext, job: DeliveryJob, **attempt: Any) -> bool:
    return deliveries.record_attempt(ctx, job, Attempt(**attempt))


def test_claims_are_exclusive_and_carry_what_sending_needs(ctx: ServiceContext) -> None:
    wid = hook(ctx, format="slack")
    events = put_events(ctx, "p", 5, run_name="run-x", one_run=False)
    first = deliveries.claim_due(ctx, 3, lease_s=30)
    rest = deliveries.claim_due(ctx, 10, lease_s=30)
    assert (len(first), len(rest)) == (3, 2)
    assert deliveries.claim_due(ctx, 10, lease_s=30) == []
    carried = [e for j in first + rest for e in j.notification.events]
    assert sorted(str(e.id) for e in carried) == sorted(events)
    job = first[0]
    assert job.target.id == wid and job.target.format == "slack" and job.target.url == URL
    assert job.target.secret.startswith("whsec_")
    (event,) = job.notification.events
    assert job.notification.project == "p" and event.run_name.startswith("run-x-")
    assert event.url == f"http://dash/runs/{event.run_id}?step={event.step}"
    assert job.attempts == 0


def test_events_of_one_run_and_family_go_out_as_one_notification(ctx: ServiceContext) -> None:
    wid = hook(ctx)
    fired = [put_events(ctx, "p", 1, probe=f"layer{i}", run_id=RUN)[0] for i in range(24)]
    resolved = put_events(ctx, "p", 24, status="resolved", run_id=RUN)
    other_run = put_events(ctx, "p", 1)
    jobs = deliveries.claim_due(ctx, 10, lease_s=30)
    carried = sorted(sorted(str(e.id) for e in j.notification.events) for j in jobs)
    assert carried == sorted([sorted(fired), sorted(resolved), other_run])
    firing = next(
        j
        for j in jobs
        if len(j.notification.events) == 24 and j.notification.events[0].status == "firing"
    )
    assert firing.notification.group_key == f"status=firing|run={RUN}|family=scalars"
    # sealed by the claim: an event raised now opens the next notification of the group
    late = put_events(ctx, "p", 1, run_id=RUN)
    (next_job,) = deliveries.claim_due(ctx, 10, lease_s=30)
    assert [str(e.id) for e in next_job.notification.events] == late
    assert next_job.notification.id != firing.notification.id
    log = webhooks.list_deliveries(ctx, "p", wid)
    assert sorted(len(d.event_ids) for d in log) == [1, 1, 24, 24]
    assert len({d.group["run"] for d in log}) == 2 and all(not d.test for d in log)


def test_a_group_waits_and_keeps_its_interval(db_url: str) -> None:
    engine = make_engine(db_url)
    migrate(engine)
    settings = Settings(db_url=db_url, notify_group_wait_s=5, notify_group_interval_s=60)
    ctx = ServiceContext(Database(engine), settings)
    hook(ctx)
    start = utcnow()
    put_events(ctx, "p", 1, run_id=RUN)
    assert deliveries.claim_due(ctx, 5, lease_s=30, now=start) == []  # the group wait
    put_events(ctx, "p", 2, run_id=RUN)  # joins the open group
    (job,) = deliveries.claim_due(ctx, 5, lease_s=30, now=start + timedelta(seconds=6))
    assert len(job.notification.events) == 3
    record(ctx, job, attempted_at=start, status="delivered", status_code=200)
    put_events(ctx, "p", 1, run_id=RUN)
    soon = start + timedelta(seconds=30)
    assert deliveries.claim_due(ctx, 5, lease_s=30, now=soon) == []  # the group interval
    (after,) = deliveries.claim_due(ctx, 5, lease_s=30, now=start + timedelta(seconds=67))
    assert len(after.notification.events) == 1
    engine.dispose()


def test_a_receiver_that_answers_again_gets_its_backlog_at_once_in_order(
    ctx: ServiceContext,
) -> None:
    hook(ctx)
    put_events(ctx, "p", 6, one_run=False)
    now = utcnow()
    jobs = deliveries.claim_due(ctx, 10, lease_s=30, now=now)
    far = now + timedelta(minutes=10)
    for i, job in enumerate(jobs):  # the receiver is down: every delivery waits for a retry
        retry = far + timedelta(minutes=10 if i else 0)
        record(ctx, job, attempted_at=now, status="pending", error="refused", next_attempt_at=retry)
    assert deliveries.claim_due(ctx, 10, lease_s=30, now=now + timedelta(seconds=1)) == []
    (probe,) = deliveries.claim_due(ctx, 1, lease_s=30, now=far)  # the first retry works
    record(ctx, probe, attempted_at=far, status="delivered", status_code=200)
    # the other five are due at once, 0.1 s apart, in the order they were made
    got = []
    for i in range(5):
        (job,) = deliveries.claim_due(ctx, 10, lease_s=30, now=far + timedelta(seconds=i * 0.1))
        got.append(job.delivery_id)
    assert got == sorted(j.delivery_id for j in jobs if j.delivery_id != probe.delivery_id)


def test_an_expired_lease_makes_the_delivery_due_again(ctx: ServiceContext) -> None:
    hook(ctx)
    put_events(ctx, "p", 1)
    now = utcnow()
    (stale,) = deliveries.claim_due(ctx, 5, lease_s=10, now=now)
    assert deliveries.claim_due(ctx, 5, lease_s=10, now=now + timedelta(seconds=9)) == []
    (fresh,) = deliveries.claim_due(ctx, 5, lease_s=10, now=now + timedelta(seconds=11))
    assert fresh.delivery_id == stale.delivery_id
    # the first sender comes back late: its attempt is logged, the row stays the new claim's
    assert not record(ctx, stale, attempted_at=now, status="delivered", status_code=200)
    assert record(ctx, fresh, attempted_at=utcnow(), status="delivered", status_code=200)
    (delivery,) = webhooks.list_deliveries(ctx, "p", stale.target.id)
    assert delivery.status == "delivered" and delivery.attempts == 2 and len(delivery.log) == 2


def test_record_attempt_schedules_retries_and_logs_each_attempt(ctx: ServiceContext) -> None:
    wid = hook(ctx)
    put_events(ctx, "p", 1)
    (job,) = deliveries.claim_due(ctx, 1, lease_s=30)
    later = utcnow() + timedelta(seconds=60)
    assert record(
        ctx,
        job,
        attempted_at=utcnow(),
        status="pending",
        status_code=503,
        latency_ms=12.5,
        error="HTTP 503",
        next_attempt_at=later,
    )
    assert deliveries.claim_due(ctx, 1, lease_s=30) == []  # not due yet
    assert deliveries.next_due_at(ctx) == later
    (delivery,) = webhooks.list_deliveries(ctx, "p", wid)
    assert delivery.status == "pending" and delivery.next_attempt_at == later
    assert (delivery.last_status_code, delivery.last_error) == (503, "HTTP 503")
    assert [(a.status_code, a.latency_ms, a.error) for a in delivery.log] == [
        (503, 12.5, "HTTP 503")
    ]
    (again,) = deliveries.claim_due(ctx, 1, lease_s=30, now=later)
    assert again.attempts == 1


def test_released_claims_are_due_at_once(ctx: ServiceContext) -> None:
    hook(ctx)
    put_events(ctx, "p", 2, one_run=False)
    jobs = deliveries.claim_due(ctx, 5, lease_s=300)
    deliveries.release_claims(ctx, jobs)
    assert len(deliveries.claim_due(ctx, 5, lease_s=300)) == 2


def test_concurrent_claimers_never_share_a_delivery(ctx: ServiceContext) -> None:
    """Many claimers at once (threads here; processes in the e2e test): each row once."""
    hook(ctx)
    hook(ctx)
    put_events(ctx, "p", 40, one_run=False)  # 80 deliveries

    def claim_all(_: int) -> list[int]:
        got: list[int] = []
        while jobs := deliveries.claim_due(ctx, 3, lease_s=60):
            got += [j.delivery_id for j in jobs]
        return got

    with ThreadPoolExecutor(8) as pool:
        claimed = [d for part in pool.map(claim_all, range(8)) for d in part]
    assert len(claimed) == 80 and len(set(claimed)) == 80


def test_severities_choose_which_webhooks_get_an_event(ctx: ServiceContext) -> None:
    critical_only = hook(ctx, severities=["critical"])
    everything = hook(ctx)
    put_events(ctx, "p", 1, severity="warning")
    assert webhooks.list_deliveries(ctx, "p", critical_only) == []
    assert len(webhooks.list_deliveries(ctx, "p", everything)) == 1
    disabled = hook(ctx, enabled=False)
    put_events(ctx, "p", 1, severity="critical")
    assert webhooks.list_deliveries(ctx, "p", disabled) == []
    assert len(webhooks.list_deliveries(ctx, "p", critical_only)) == 1


def test_crud_and_not_found(ctx: ServiceContext) -> None:
    created = webhooks.create_webhook(ctx, "new-project", WebhookCreate(url=URL, name="ops"))
    assert created.secret.startswith("whsec_") and created.secret_hint.endswith("...")
    assert "new-project" in [p.name for p in projects.list_projects(ctx)]
    updated = webhooks.update_webhook(
        ctx, "new-project", created.id, WebhookUpdate(format="discord", enabled=False)
    )
    assert (updated.format, updated.enabled, updated.name, updated.url) == (
        "discord",
        False,
        "ops",
        URL,
    )
    assert webhooks.get_webhook(ctx, "new-project", created.id) == updated
    with pytest.raises(errors.NotFound, match="webhook 999 not found"):
        webhooks.get_webhook(ctx, "new-project", 999)
    with pytest.raises(errors.NotFound, match="project 'nope' not found"):
        webhooks.list_webhooks(ctx, "nope")
    with pytest.raises(errors.NotFound):
        webhooks.get_webhook(ctx, "p-other", created.id)


def test_deleting_a_webhook_deletes_its_deliveries(ctx: ServiceContext) -> None:
    wid = hook(ctx)
    put_events(ctx, "p", 2, one_run=False)
    (job, _) = deliveries.claim_due(ctx, 5, lease_s=30)
    record(ctx, job, attempted_at=utcnow(), status="pending", error="HTTP 503")
    webhooks.delete_webhook(ctx, "p", wid)
    assert webhooks.list_webhooks(ctx, "p") == []
    # a send that was in flight records nothing
    assert not record(ctx, job, attempted_at=utcnow(), status="delivered")
    assert deliveries.claim_due(ctx, 5, lease_s=30, now=utcnow() + timedelta(hours=1)) == []


def test_a_silence_made_during_the_group_wait_holds_back_the_events_it_matches(
    db_url: str,
) -> None:
    engine = make_engine(db_url)
    migrate(engine)
    ctx = ServiceContext(Database(engine), Settings(db_url=db_url, notify_group_wait_s=5))
    wid = hook(ctx)
    start = utcnow()
    quiet = put_events(ctx, "p", 3, probe="fc1", run_name="sweep-1", run_id=RUN)
    loud = put_events(ctx, "p", 1, probe="fc2", run_id=RUN)
    other = put_events(ctx, "p", 2, run_name="sweep-2")
    silences.create_silence(ctx, "p", SilenceCreate(run="sweep-*", probe="fc1", duration_s=60))
    silences.create_silence(ctx, "p", SilenceCreate(run="sweep-2", duration_s=60))
    (job,) = deliveries.claim_due(ctx, 5, lease_s=30, now=start + timedelta(seconds=6))
    assert [str(e.id) for e in job.notification.events] == loud
    log = {d.id: d for d in webhooks.list_deliveries(ctx, "p", wid)}
    assert log[job.delivery_id].event_ids == [uuid.UUID(e) for e in loud]
    (held,) = [d for i, d in log.items() if i != job.delivery_id]
    assert held.status == "silenced" and held.event_ids == []
    marked = {str(e.id): e.silence_id for e in alerts.list_alerts(ctx, "p")}
    assert [marked[e] for e in quiet] == [1, 1, 1] and [marked[e] for e in other] == [2, 2]
    assert marked[loud[0]] is None
    record(ctx, job, attempted_at=utcnow(), status="delivered", status_code=200)
    assert deliveries.claim_due(ctx, 5, lease_s=30, now=start + timedelta(minutes=5)) == []
    engine.dispose()


def test_events_joining_a_group_while_it_is_claimed_each_go_out_exactly_once(
    ctx: ServiceContext,
) -> None:
    """One writer keeps adding events to one group while a sender claims and seals it: every
    event ends up in exactly one claimed notification (none joins a sealed one unseen)."""
    hook(ctx)
    written: list[str] = []
    sent: list[str] = []
    done = False

    def write() -> None:
        nonlocal done
        for _ in range(60):
            written.extend(put_events(ctx, "p", 1, run_id=RUN))
        done = True

    def send() -> None:
        while True:
            finished = done
            for job in deliveries.claim_due(ctx, 10, lease_s=60):
                sent.extend(str(e.id) for e in job.notification.events)
                record(ctx, job, attempted_at=utcnow(), status="delivered", status_code=200)
            if finished:
                return

    with ThreadPoolExecutor(2) as pool:
        for future in [pool.submit(write), pool.submit(send)]:
            future.result()
    assert sorted(sent) == sorted(written) and len(set(sent)) == 60
