"""The sender on its own, with hand-made records: its queue and batches, spooling and sending
the spool again, pacing by the server's answers, what it sets aside, and closing. The server is
a fake at the edge (``httpx.MockTransport``)."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import loss_record
from tests.sdk.helpers import Ingest, as_records, decode, sender, wait_for


def test_spooled_batches_go_first_once_the_server_is_back(tmp_path: Path) -> None:
    ingest = Ingest(responses=[httpx.ConnectError("down")] * 4)  # every retry of batch one
    transport = sender(tmp_path, ingest.client(), batch_records=1, offline_retry=0.0)
    transport.submit([loss_record(0)])
    wait_for(lambda: transport.counters()["spooled"] == 1)
    transport.submit([loss_record(1)])
    transport.close("finished", timeout=10)
    delivered = [decode(r.content) for r in ingest.requests[4:]]
    assert [r.step for b in delivered for r in b.records] == [0, 1]  # the spooled one first
    assert delivered[-1].status == "finished" and transport.spool.pending() == []
    assert transport.counters()["stored"] == 2


def test_a_full_queue_spools_instead_of_dropping(tmp_path: Path) -> None:
    release = threading.Event()

    def slow(request: httpx.Request) -> httpx.Response:
        ingest.requests.append(request)
        release.wait(10)
        return httpx.Response(202)

    ingest = Ingest()
    client = httpx.Client(transport=httpx.MockTransport(slow))
    # room for about three scalar records in memory
    transport = sender(tmp_path, client, queue_bytes=1300, batch_records=1)
    transport.submit([loss_record(0)])
    wait_for(lambda: len(ingest.requests) == 1)  # the sender is busy with the first batch
    for step in range(1, 11):
        transport.submit([loss_record(step)])  # the queue overflows: to the spool, not dropped
    assert transport.counters()["spooled"] > 0 and transport.counters()["dropped"] == 0
    release.set()
    transport.close("finished", timeout=10)
    counts = transport.counters()
    assert (counts["stored"], counts["spooled"], counts["dropped"], counts["pending"]) == (
        11, 0, 0, 0
    )  # fmt: skip
    assert sorted(r.step for r in ingest.records()) == list(range(11))


def test_many_float_scalars_share_one_queue_entry(tmp_path: Path) -> None:
    """2,000 single-record submits are one batch, not 2,000 queue slots."""
    ingest = Ingest()
    transport = sender(tmp_path, ingest.client(), batch_seconds=60.0)
    for step in range(2000):
        transport.submit([{"probe": "x", "kind": "scalar", "step": step, "stats": {"value": 1.0}}])
    transport.close("finished", timeout=10)
    assert len(as_records(ingest.batches[0])) == 2000, "one batch, not one request per call"
    assert [r.step for r in ingest.records()] == list(range(2000))
    counts = transport.counters()
    assert (counts["stored"], counts["dropped"]) == (2000, 0)


def test_a_batch_takes_a_hundred_scalars_where_it_takes_one_record(tmp_path: Path) -> None:
    ingest = Ingest()
    transport = sender(tmp_path, ingest.client(), batch_records=2, batch_seconds=60.0)
    scalars = [
        {"probe": "s", "kind": "scalar", "step": i, "stats": {"value": 1.0}} for i in range(150)
    ]
    transport.submit([*scalars, loss_record(0), loss_record(1), loss_record(2)])
    transport.close("finished", timeout=10)
    assert [(len(as_records(b)), len(b.records)) for b in ingest.batches] == [
        (150, 0),
        (0, 2),
        (0, 1),
    ]
    assert transport.counters()["stored"] == 153


def test_a_busy_server_holds_sending_and_nothing_is_dropped(tmp_path: Path) -> None:
    """429 with Retry-After: the batch is spooled, the sender waits, then sends in order."""
    busy = httpx.Response(429, headers={"Retry-After": "1"}, json={"detail": "queue deep"})
    ingest = Ingest(responses=[busy])
    transport = sender(tmp_path, ingest.client(), batch_records=1)
    transport.submit([loss_record(0)])
    wait_for(lambda: transport.counters()["spooled"] == 1)
    transport.submit([loss_record(1)])  # during the pause: spooled without a request
    wait_for(lambda: transport.counters()["spooled"] == 2)
    assert len(ingest.requests) == 1
    transport.close("finished", timeout=10)  # the pause ends before the deadline: waited out
    assert [r.step for r in ingest.records()] == [0, 1]
    counts = transport.counters()
    assert (counts["stored"], counts["spooled"], counts["dropped"]) == (2, 0, 0)


def test_records_logged_after_finish_are_counted_as_dropped(tmp_path: Path) -> None:
    transport = sender(tmp_path, Ingest().client())
    transport.close("finished", timeout=5)
    transport.submit([loss_record(0)])
    assert transport.counters()["dropped"] == 1
    assert transport.ledger.drop_reasons == {"logged after finish": 1}


def test_a_batch_that_keeps_failing_is_set_aside_and_never_blocks_the_others(
    tmp_path: Path,
) -> None:
    """The server answers 500 to one batch and stores the others: after three failures of
    its own the batch goes to rejected/, and every batch after it is stored meanwhile."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json={"status": "ok"})
        batch = decode(request.content)
        ingest.requests.append(request)
        if any(r.step == 0 for r in batch.records):
            return httpx.Response(500, text="Internal Server Error")
        return httpx.Response(202, json={"duplicate": False})

    ingest = Ingest()
    client = httpx.Client(transport=httpx.MockTransport(handler))
    transport = sender(tmp_path, client, batch_records=1, offline_retry=0.0)
    transport.submit([loss_record(0)])
    wait_for(lambda: transport.counters()["spooled"] == 1)
    for step in range(1, 6):
        transport.submit([loss_record(step)])
    transport.close("finished", timeout=60)
    counts = transport.counters()
    assert (counts["stored"], counts["rejected"], counts["spooled"], counts["dropped"]) == (
        5, 1, 0, 0
    )  # fmt: skip
    failed = [r for r in ingest.requests if any(x.step == 0 for x in decode(r.content).records)]
    assert len(failed) == 3 * 4, "three rounds of four attempts each"
    note = json.loads(next((tmp_path / "run" / "rejected").glob("*.answer.json")).read_text())
    assert note["status"] == 500 and "3 times" in note["why"]


def test_a_server_in_trouble_does_not_get_batches_set_aside(tmp_path: Path) -> None:
    """Every batch gets 500 and /healthz says the store is down: nothing counts against the
    batches; they stay spooled for later."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json={"status": "degraded", "store": "unreachable"})
        return httpx.Response(500)

    transport = sender(
        tmp_path, httpx.Client(transport=httpx.MockTransport(handler)), batch_records=1,
        offline_retry=0.0,
    )  # fmt: skip
    for step in range(3):  # three rounds: as many as a poison batch gets
        transport.submit([loss_record(step)])
        wait_for(lambda s=step: transport.counters()["spooled"] == s + 1)
    transport.close("finished", timeout=30)
    counts = transport.counters()
    assert (counts["stored"], counts["rejected"], counts["spooled"], counts["dropped"]) == (
        0, 0, 3, 0
    )  # fmt: skip
    assert not (tmp_path / "run" / "rejected").exists()


def test_a_slow_server_gets_fewer_larger_batches(tmp_path: Path) -> None:
    """The batch window follows the server's answer time (8x, between batch_seconds and
    max_batch_seconds): a server taking 0.3 s an answer gets a batch every 2.4 s, here
    every 2 s (the most this sender waits)."""
    ingest = Ingest()
    slow = [0.3]

    def answer(request: httpx.Request) -> httpx.Response:
        time.sleep(slow[0])
        return ingest.handle(request)

    transport = sender(
        tmp_path,
        httpx.Client(transport=httpx.MockTransport(answer)),
        batch_seconds=0.2,
        max_batch_seconds=2.0,
    )
    transport.submit([loss_record(0)])
    wait_for(lambda: len(ingest.batches) == 1)
    assert transport.window == 2.0, "8 x 0.3 s, at most max_batch_seconds"
    slow[0] = 0.01
    transport.submit([loss_record(1)])
    wait_for(lambda: len(ingest.batches) == 2)
    assert transport.window == 0.2, "a fast answer: back to batch_seconds"
    transport.close("finished", timeout=10)
    assert [r.step for r in ingest.records()] == [0, 1]


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs SIGALRM")
def test_ctrl_c_during_close_stops_the_worker_and_spools_what_is_left(tmp_path: Path) -> None:
    """An interrupt while close() waits (Ctrl-C during finish()) goes through, but first the
    worker stops: left building statistics at the interpreter's exit, a daemon thread inside
    torch aborts the process."""
    ingest = Ingest()
    transport = sender(tmp_path, ingest.client(), batch_seconds=60.0)
    building, built = threading.Event(), threading.Event()

    def slow_build() -> list[dict[str, Any]]:
        building.set()
        time.sleep(0.5)  # an eigendecomposition, say
        built.set()
        return [loss_record(0)]

    transport.submit(slow_build, 1)

    def interrupt(*_: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        with pytest.raises(KeyboardInterrupt):
            transport.close("crashed", timeout=10)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert building.is_set() and built.is_set(), "the interrupt waited for the build"
    wait_for(lambda: not [t for t in threading.enumerate() if t.name == "collapsewatch-sender"])
    counts = transport.counters()
    assert counts["stored"] + counts["spooled"] == 1 and counts["dropped"] == 0, counts
