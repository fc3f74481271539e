"""The outbox in the store: atomic claims, leases, the attempt log (SQLite and Postgres)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest

from collapsewatch_server import errors
from collapsewatch_server.db import make_engine, migrate
from collapsewatch_server.models import utcnow
from collapsewatch_server.store import Store
from collapsewatch_web.api_schemas.webhooks import WebhookCreate, WebhookUpdate
from tests.webhook_support import put_events

URL = "http://127.0.0.1:9/hook"


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    engine = make_engine(db_url)
    migrate(engine)
    yield Store(engine, base_url="http://dash")
    engine.dispose()


def hook(store: Store, project: str = "p", **fields: Any) -> int:
    return store.create_webhook(project, WebhookCreate(url=URL, **fields)).id


def test_claims_are_exclusive_and_carry_what_sending_needs(store: Store) -> None:
    wid = hook(store, format="slack")
    events = put_events(store, "p", 5, run_name="run-x")
    first = store.claim_due_deliveries(3, lease_s=30)
    rest = store.claim_due_deliveries(10, lease_s=30)
    assert (len(first), len(rest)) == (3, 2)
    assert store.claim_due_deliveries(10, lease_s=30) == []
    assert sorted(str(j.event.id) for j in first + rest) == sorted(events)
    job = first[0]
    assert job.target.id == wid and job.target.format == "slack" and job.target.url == URL
    assert job.target.secret.startswith("whsec_")
    assert job.event.project == "p" and job.event.run_name == "run-x"
    assert job.event.url == f"http://dash/runs/{job.event.run_id}?step={job.event.step}"
    assert job.attempts == 0


def test_an_expired_lease_makes_the_delivery_due_again(store: Store) -> None:
    hook(store)
    put_events(store, "p", 1)
    now = utcnow()
    (stale,) = store.claim_due_deliveries(5, lease_s=10, now=now)
    assert store.claim_due_deliveries(5, lease_s=10, now=now + timedelta(seconds=9)) == []
    (fresh,) = store.claim_due_deliveries(5, lease_s=10, now=now + timedelta(seconds=11))
    assert fresh.delivery_id == stale.delivery_id
    # the first sender comes back late: its attempt is logged, the row stays the new claim's
    assert not store.record_attempt(stale, attempted_at=now, status="delivered", status_code=200)
    assert store.record_attempt(fresh, attempted_at=utcnow(), status="delivered", status_code=200)
    (delivery,) = store.list_deliveries("p", stale.target.id)
    assert delivery.status == "delivered" and delivery.attempts == 2 and len(delivery.log) == 2


def test_record_attempt_schedules_retries_and_logs_each_attempt(store: Store) -> None:
    wid = hook(store)
    put_events(store, "p", 1)
    (job,) = store.claim_due_deliveries(1, lease_s=30)
    later = utcnow() + timedelta(seconds=60)
    assert store.record_attempt(
        job,
        attempted_at=utcnow(),
        status="pending",
        status_code=503,
        latency_ms=12.5,
        error="HTTP 503",
        next_attempt_at=later,
    )
    assert store.claim_due_deliveries(1, lease_s=30) == []  # not due yet
    assert store.next_due_at() == later
    (delivery,) = store.list_deliveries("p", wid)
    assert delivery.status == "pending" and delivery.next_attempt_at == later
    assert (delivery.last_status_code, delivery.last_error) == (503, "HTTP 503")
    assert [(a.status_code, a.latency_ms, a.error) for a in delivery.log] == [
        (503, 12.5, "HTTP 503")
    ]
    (again,) = store.claim_due_deliveries(1, lease_s=30, now=later)
    assert again.attempts == 1


def test_released_claims_are_due_at_once(store: Store) -> None:
    hook(store)
    put_events(store, "p", 2)
    jobs = store.claim_due_deliveries(5, lease_s=300)
    store.release_claims(jobs)
    assert len(store.claim_due_deliveries(5, lease_s=300)) == 2


def test_concurrent_claimers_never_share_a_delivery(store: Store) -> None:
    """Many claimers at once (threads here; processes in the e2e test): each row once."""
    hook(store)
    hook(store)
    put_events(store, "p", 40)  # 80 deliveries

    def claim_all(_: int) -> list[int]:
        got: list[int] = []
        while jobs := store.claim_due_deliveries(3, lease_s=60):
            got += [j.delivery_id for j in jobs]
        return got

    with ThreadPoolExecutor(8) as pool:
        claimed = [d for part in pool.map(claim_all, range(8)) for d in part]
    assert len(claimed) == 80 and len(set(claimed)) == 80


def test_severities_choose_which_webhooks_get_an_event(store: Store) -> None:
    critical_only = hook(store, severities=["critical"])
    everything = hook(store)
    put_events(store, "p", 1, severity="warning")
    assert store.list_deliveries("p", critical_only) == []
    assert len(store.list_deliveries("p", everything)) == 1
    disabled = hook(store, enabled=False)
    put_events(store, "p", 1, severity="critical")
    assert store.list_deliveries("p", disabled) == []
    assert len(store.list_deliveries("p", critical_only)) == 1


def test_crud_and_not_found(store: Store) -> None:
    created = store.create_webhook("new-project", WebhookCreate(url=URL, name="ops"))
    assert created.secret.startswith("whsec_") and created.secret_hint.endswith("...")
    assert "new-project" in [p.name for p in store.list_projects()]
    updated = store.update_webhook(
        "new-project", created.id, WebhookUpdate(format="discord", enabled=False)
    )
    assert (updated.format, updated.enabled, updated.name, updated.url) == (
        "discord",
        False,
        "ops",
        URL,
    )
    assert store.get_webhook("new-project", created.id) == updated
    with pytest.raises(errors.NotFound, match="webhook 999 not found"):
        store.get_webhook("new-project", 999)
    with pytest.raises(errors.NotFound, match="project 'nope' not found"):
        store.list_webhooks("nope")
    with pytest.raises(errors.NotFound):
        store.get_webhook("p-other", created.id)


def test_deleting_a_webhook_deletes_its_deliveries(store: Store) -> None:
    wid = hook(store)
    put_events(store, "p", 2)
    (job, _) = store.claim_due_deliveries(5, lease_s=30)
    store.record_attempt(job, attempted_at=utcnow(), status="pending", error="HTTP 503")
    store.delete_webhook("p", wid)
    assert store.list_webhooks("p") == []
    # a send that was in flight records nothing
    assert not store.record_attempt(job, attempted_at=utcnow(), status="delivered")
    assert store.claim_due_deliveries(5, lease_s=30, now=utcnow() + timedelta(hours=1)) == []
