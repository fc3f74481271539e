"""The turns of one process's SQLite writers: urgent ones first, the others not starved, a
turn taken at the transaction's first statement."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from sqlalchemy import text

from collapsewatch_server.db import Database, make_engine, migrate
from collapsewatch_server.write_gate import URGENT_IN_A_ROW, WriteGate


def queue_up(gate: WriteGate, urgent: bool, order: list[str], name: str) -> threading.Thread:
    """A thread waiting for its turn that notes ``name`` when it gets it."""

    def run() -> None:
        with gate.hold(urgent):
            order.append(name)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def wait_waiting(gate: WriteGate, urgent: int, others: int) -> None:
    deadline = time.monotonic() + 10
    while gate._waiting != {True: urgent, False: others}:
        assert time.monotonic() < deadline, gate._waiting
        time.sleep(0.001)


def test_an_urgent_writer_goes_before_one_that_waited_longer() -> None:
    gate, order = WriteGate(), list[str]()
    with gate.hold():
        slow = queue_up(gate, False, order, "processor")
        wait_waiting(gate, 0, 1)
        fast = queue_up(gate, True, order, "accept")
        wait_waiting(gate, 1, 1)
    slow.join()
    fast.join()
    assert order == ["accept", "processor"]


def test_a_stream_of_urgent_writers_lets_a_waiting_other_one_through() -> None:
    gate, order = WriteGate(), list[str]()
    urgent = URGENT_IN_A_ROW + 4
    with gate.hold(urgent=True):
        threads = [queue_up(gate, False, order, "processor")]
        wait_waiting(gate, 0, 1)
        for i in range(urgent):
            threads.append(queue_up(gate, True, order, f"accept-{i}"))
        wait_waiting(gate, urgent, 1)
    for thread in threads:
        thread.join()
    # the one holding the gate was the first urgent turn of the streak
    assert order.index("processor") == URGENT_IN_A_ROW - 1
    assert len(order) == urgent + 1


def test_a_write_transaction_takes_its_turn_at_its_first_statement(tmp_path: Path) -> None:
    """A block that has run no statement yet holds no turn (nor SQLite's lock): another
    thread's write goes through meanwhile; the block's own statements then wait for theirs."""
    engine = make_engine(f"sqlite:///{tmp_path / 'gate.db'}")
    migrate(engine)
    db = Database(engine)
    done = threading.Event()

    def other(name: str) -> None:
        with db.write(urgent=True) as s:
            s.execute(
                text("INSERT INTO projects (name, created_at) VALUES (:n, '2026-01-01')"),
                {"n": name},
            )
        done.set()

    with db.write() as s:
        thread = threading.Thread(target=other, args=("b",))
        thread.start()
        assert done.wait(10), "the other writer waited for a block that wrote nothing"
        s.execute(text("INSERT INTO projects (name, created_at) VALUES ('a', '2026-01-01')"))
        blocked = threading.Thread(target=other, args=("c",))
        done.clear()
        blocked.start()
        assert not done.wait(0.3), "a second writer went while this one held its turn"
    assert done.wait(10)
    thread.join()
    blocked.join()
    with db.read() as s:
        assert s.execute(text("SELECT count(*) FROM projects")).scalar_one() == 3
    engine.dispose()
