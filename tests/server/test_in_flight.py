"""The processor gives way to ingest requests being accepted, for a bounded time."""

from __future__ import annotations

import asyncio
import threading
import time

from collapsewatch_server.in_flight import InFlight


def test_give_way_waits_until_the_requests_are_accepted() -> None:
    in_flight = InFlight()
    entered, leave = threading.Event(), threading.Event()

    def request() -> None:
        with in_flight.accepting():
            entered.set()
            leave.wait(10)

    thread = threading.Thread(target=request)
    thread.start()
    assert entered.wait(10) and len(in_flight) == 1
    threading.Timer(0.3, leave.set).start()
    started = time.monotonic()
    in_flight.give_way(10)
    waited = time.monotonic() - started
    thread.join()
    assert 0.2 < waited < 5 and len(in_flight) == 0


def test_give_way_returns_at_once_when_nothing_is_accepted() -> None:
    started = time.monotonic()
    InFlight().give_way(10)
    assert time.monotonic() - started < 0.1


def test_a_courtesy_waits_its_budget_in_all_then_no_more() -> None:
    in_flight = InFlight()
    with in_flight.accepting():  # a request that never ends
        give_way = in_flight.courtesy(0.3)
        started = time.monotonic()
        for _ in range(5):
            give_way()
        waited = time.monotonic() - started
    assert 0.25 < waited < 2


def test_an_answer_waits_for_its_points_until_other_batches_arrive() -> None:
    from collapsewatch_server.processor import Processor

    async def wait(points_after: float, company_after: float) -> tuple[int | None, float]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        company = [False]
        loop.call_later(points_after, future.set_result, 7)
        loop.call_later(company_after, company.__setitem__, 0, True)
        started = time.monotonic()
        got = await Processor.wait(future, 10, lambda: company[0])
        return got, time.monotonic() - started

    got, waited = asyncio.run(wait(points_after=0.1, company_after=5))
    assert got == 7 and waited < 2
    got, waited = asyncio.run(wait(points_after=5, company_after=0.2))
    assert got is None and 0.15 < waited < 2
