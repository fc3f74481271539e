"""Delivery when the world misbehaves: a server that is down, flaky, refusing, or broken,
and SDK errors that must never reach the training loop."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from torch import nn

import collapsewatch
from collapsewatch import monitor as monitor_module
from collapsewatch.pipeline.packing import StepPack
from collapsewatch.spool import Spool, batch_id
from collapsewatch.sync import sync
from collapsewatch.transport import Transport
from tests.sdk.helpers import SERVER, Ingest, decode, mlp, train


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def training(ingest: Ingest | None = None, steps: int = 30, **kwargs: Any) -> Any:
    """Train the tiny MLP under a monitor and finish; returns the monitor."""
    model, criterion = mlp(), nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    if ingest is not None:
        kwargs = {"server": SERVER, "http_client": ingest.client(), **kwargs}
    monitor = collapsewatch.watch(model, optimizer, criterion, every=5, **kwargs)
    train(model, optimizer, criterion, steps=steps)
    monitor.finish()
    return monitor


def test_server_down_spools_then_sync_uploads(tmp_path: Path) -> None:
    spool_root = tmp_path / "spool"
    with pytest.warns(RuntimeWarning) as caught:
        monitor = training(server=f"http://127.0.0.1:{unused_port()}")
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1, f"expected exactly one warning, got {messages}"
    assert "unreachable" in messages[0] and "collapsewatch sync" in messages[0]

    run_dir = spool_root / str(monitor.run_id)
    files = sorted(run_dir.glob("*.json.gz"))
    assert files and monitor.stats["spooled"] == len(files)
    assert str(run_dir) in messages[0]
    spooled = [decode(f.read_bytes()) for f in files]
    assert [str(b.batch_id) for b in spooled] == [batch_id(f) for f in files]
    assert spooled[-1].status == "finished"
    assert {r.step for b in spooled for r in b.records if r.kind == "activation"} == {
        0, 5, 10, 15, 20, 25
    }  # fmt: skip

    ingest = Ingest()
    assert sync(run_dir, server=SERVER, http_client=ingest.client()) == (len(files), 0)
    assert [str(b.batch_id) for b in ingest.batches] == [batch_id(f) for f in files]
    assert list(run_dir.iterdir()) == []


def test_sync_keeps_files_while_the_server_is_down(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "run")
    for i in range(3):
        spool.write(f"00000000-0000-4000-8000-00000000000{i}", b"not sent")
    down = Ingest(responses=[httpx.ConnectError("refused")] * 10)
    # the first file fails after retries, the rest are not tried
    assert sync(tmp_path, server=SERVER, http_client=down.client()) == (0, 3)
    assert len(spool.pending()) == 3


def test_a_503_then_200_delivers_the_batch_once() -> None:
    ingest = Ingest(responses=[httpx.Response(503, headers={"Retry-After": "0"})])
    monitor = training(ingest)
    first, second = ingest.batches
    assert first.batch_id == second.batch_id, "a retry resends the same batch"
    assert monitor.stats["batches_sent"] == 1 and monitor.stats["spooled"] == 0


def test_a_rejected_batch_is_dropped_and_counted() -> None:
    ingest = Ingest(responses=[httpx.Response(422, json={"detail": "bad"})])
    with pytest.warns(RuntimeWarning, match="rejected"):
        monitor = training(ingest)
    assert len(ingest.requests) == 1, "a 4xx is permanent: no retry"
    stats = monitor.stats
    assert stats["dropped"] == stats["records"] > 0 and stats["failures"] == 1


def test_a_transport_that_raises_never_reaches_the_loop(tmp_path: Path) -> None:
    ingest = Ingest(responses=[RuntimeError("broken transport")] * 5)
    with pytest.warns(RuntimeWarning, match="RuntimeError"):
        monitor = training(ingest)
    assert monitor.stats["spooled"] >= 1
    assert list((tmp_path / "spool" / str(monitor.run_id)).glob("*.json.gz"))


class DictLinear(nn.Linear):
    """A layer the SDK cannot read: its output is a dict, not a tensor."""

    def forward(self, x: torch.Tensor) -> Any:  # type: ignore[override]
        return {"out": super().forward(x)}


class Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.odd = DictLinear(8, 16)
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.odd(x)["out"])


def test_a_layer_the_sdk_cannot_read_is_skipped(
    ingest: Ingest, caplog: pytest.LogCaptureFixture
) -> None:
    model, criterion = Model(), nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = collapsewatch.watch(
        model, optimizer, criterion, every=1, server=SERVER, http_client=ingest.client()
    )
    with caplog.at_level(logging.WARNING, logger="collapsewatch"):
        train(model, optimizer, criterion, steps=3)
    monitor.finish()
    problems = [r for r in caplog.records if "odd" in r.getMessage()]
    assert len(problems) == 1, "logged once, not once per step"
    assert ingest.records("activation", "odd") == []
    assert [r.step for r in ingest.records("activation", "head")] == [0, 1, 2]


def test_an_error_in_step_logic_disables_the_sdk_not_training(
    ingest: Ingest, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    class BrokenPack(StepPack):
        def copy(self) -> Any:
            raise RuntimeError("host copy failed")

    monkeypatch.setattr(monitor_module, "StepPack", BrokenPack)
    with caplog.at_level(logging.WARNING, logger="collapsewatch"):
        monitor = training(ingest, steps=12)
    assert monitor.stats["step"] == 0 and not monitor.enabled
    assert sum("host copy failed" in r.getMessage() for r in caplog.records) == 1
    assert ingest.batches[-1].status == "finished", "the run is still closed properly"


def test_finish_spools_what_a_hung_server_did_not_take(tmp_path: Path) -> None:
    def hang(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    client = httpx.Client(transport=httpx.MockTransport(hang))
    model = mlp()
    monitor = collapsewatch.watch(model, server=SERVER, http_client=client, every=1)
    model(torch.randn(4, 8))
    monitor.step()
    with pytest.warns(RuntimeWarning, match="spooled to"):
        monitor.finish(timeout=0.2)
    files = sorted((tmp_path / "spool" / str(monitor.run_id)).glob("*.json.gz"))
    batches = [decode(f.read_bytes()) for f in files]
    assert batches[-1].status == "finished"
    assert any(r.kind == "activation" for b in batches for r in b.records)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_the_sender_restarts_in_a_forked_child(ingest: Ingest, tmp_path: Path) -> None:
    record = {"probe": "x", "kind": "scalar", "step": 0, "stats": {"value": 1.0}}
    transport = Transport(
        server=SERVER,
        token=None,
        spool=Spool(tmp_path / "run"),
        run=lambda: {},
        client=ingest.client(),
    )
    transport.submit([record])  # starts the parent's thread
    read, write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads, on 3.12+
        pid = os.fork()
    if pid == 0:  # the child: the parent's thread did not survive the fork
        code = 1
        try:
            ingest.requests.clear()
            transport.submit([record])
            transport.close("finished", timeout=5)
            code = 0 if len(ingest.requests) == 1 and transport.batches_sent == 1 else 2
        finally:
            os.write(write, bytes([code]))
            os._exit(0)
    os.close(write)
    answer = os.read(read, 1)
    os.waitpid(pid, 0)
    transport.close("finished", timeout=5)
    assert answer == b"\x00", "the child could not send"
    assert transport.batches_sent == 1


EXIT_SCRIPT = """
import atexit, gzip, json, sys
import httpx, torch, collapsewatch

statuses = []
atexit.register(lambda: print("statuses", statuses))  # registered first, so it runs last


def handler(request):
    statuses.append(json.loads(gzip.decompress(request.content)).get("status"))
    return httpx.Response(202)


client = httpx.Client(transport=httpx.MockTransport(handler))
collapsewatch.watch(torch.nn.Linear(2, 2), server="http://testserver", http_client=client)
if sys.argv[1] == "crash":
    raise RuntimeError("training diverged")
"""


@pytest.mark.parametrize(("how", "status"), [("exit", "finished"), ("crash", "crashed")])
def test_runs_are_closed_at_interpreter_exit(how: str, status: str) -> None:
    """No finish() in the script: atexit sends the final status, crashed if an exception
    ended the program."""
    package_parent = str(Path(collapsewatch.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([package_parent, *sys.path])}
    result = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT, how], env=env, capture_output=True, text=True
    )
    assert f"statuses ['{status}']" in result.stdout, result.stdout + result.stderr


RUN = {
    "run_id": "6f1c1d2e-8a4b-4c5d-9e6f-7a8b9c0d1e2f",
    "project": "p",
    "name": "r",
    "started_at": "2024-01-01T00:00:00Z",
}


def scalar(step: int) -> dict[str, Any]:
    return {"probe": "x", "kind": "scalar", "step": step, "stats": {"value": float(step)}}


def wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_spooled_batches_go_first_once_the_server_is_back(tmp_path: Path) -> None:
    ingest = Ingest(responses=[httpx.ConnectError("down")] * 4)  # every retry of batch one
    spool = Spool(tmp_path / "run")
    transport = Transport(
        server=SERVER, token=None, spool=spool, run=lambda: RUN, client=ingest.client(),
        batch_records=1, offline_retry=0.0,
    )  # fmt: skip
    with pytest.warns(RuntimeWarning, match="unreachable"):
        transport.submit([scalar(0)])
        wait_for(lambda: transport.spooled == 1)
    transport.submit([scalar(1)])
    transport.close("finished", timeout=10)
    delivered = [decode(r.content) for r in ingest.requests[4:]]
    assert [[r.step for r in b.records] for b in delivered] == [[0], [1], []]
    assert delivered[-1].status == "finished" and spool.pending() == []


def test_a_full_queue_drops_and_counts(tmp_path: Path) -> None:
    release = threading.Event()

    def slow(request: httpx.Request) -> httpx.Response:
        ingest.requests.append(request)
        release.wait(10)
        return httpx.Response(202)

    ingest = Ingest()
    transport = Transport(
        server=SERVER, token=None, spool=Spool(tmp_path / "run"), run=lambda: RUN,
        client=httpx.Client(transport=httpx.MockTransport(slow)), queue_size=1, batch_records=1,
    )  # fmt: skip
    transport.submit([scalar(0)])
    wait_for(lambda: len(ingest.requests) == 1)  # the sender is busy with the first batch
    for step in range(1, 5):
        transport.submit([scalar(step)])  # one fits in the queue, three do not
    assert transport.dropped == 3
    release.set()
    transport.close("finished", timeout=10)
    assert transport.batches_sent == 3 and transport.records_sent == 2
