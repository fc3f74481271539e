"""Delivery when the world misbehaves: a server that is down, flaky, refusing, busy or broken,
and SDK errors that must never reach the training loop. The server here is a fake at the edge
(``httpx.MockTransport``); the same guarantees against the real app are in
``tests/e2e/test_delivery_guarantee.py``."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from torch import nn

import collapsewatch
from collapsewatch import step_cycle
from collapsewatch.pipeline.packing import StepPack
from collapsewatch.pipeline.replay import sync
from collapsewatch.pipeline.spool import Spool, batch_id
from tests.helpers import loss_record
from tests.sdk.helpers import SERVER, Ingest, decode, mlp, sender, train, wait_for


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


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_server_down_spools_then_sync_uploads(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool_root = tmp_path / "spool"
    with caplog.at_level(logging.INFO, logger="collapsewatch"):
        monitor = training(server=f"http://127.0.0.1:{unused_port()}")
    away, account = warnings_of(caplog)  # said once, then the account at finish
    run_dir = spool_root / str(monitor.run_id)
    assert "unreachable" in away and f"collapsewatch sync {run_dir}" in away
    stats = monitor.stats
    assert stats["spooled"] == stats["records"] > 0 and stats["pending"] == 0
    assert f"of {stats['records']} records, 0 stored; {stats['records']} spooled" in account

    files = sorted(run_dir.glob("*.json.gz"))
    assert files and stats["batches_spooled"] == len(files)
    spooled = [decode(f.read_bytes()) for f in files]
    assert [str(b.batch_id) for b in spooled] == [batch_id(f) for f in files]
    assert spooled[-1].status == "finished"
    assert {r.step for b in spooled for r in b.records if r.kind == "activation"} == {
        0, 5, 10, 15, 20, 25
    }  # fmt: skip

    ingest = Ingest()
    report = sync(run_dir, server=SERVER, http_client=ingest.client())
    assert (report.sent, report.duplicate, report.rejected, report.kept) == (len(files), 0, 0, 0)
    assert [str(b.batch_id) for b in ingest.batches] == [batch_id(f) for f in files]
    assert len(ingest.records()) == stats["records"]
    assert list(run_dir.iterdir()) == []


def test_sync_keeps_files_while_the_server_is_down(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "run")
    for i in range(3):
        spool.write(f"00000000-0000-4000-8000-00000000000{i}", b"not sent")
    down = Ingest(responses=[httpx.ConnectError("refused")] * 10)
    report = sync(tmp_path, server=SERVER, http_client=down.client())
    assert (report.sent, report.rejected, report.kept) == (0, 0, 3)
    assert len(down.requests) == 4, "the first file, retried; the rest not tried"
    assert len(spool.pending()) == 3 and "ConnectError" in report.problems[-1]


def test_a_503_then_200_delivers_the_batch_once() -> None:
    ingest = Ingest(responses=[httpx.Response(503, headers={"Retry-After": "0"})])
    monitor = training(ingest)
    first, second = ingest.batches
    assert first.batch_id == second.batch_id, "a retry resends the same batch"
    stats = monitor.stats
    assert stats["batches_sent"] == 1 and stats["spooled"] == 0
    assert stats["stored"] == stats["records"] > 0


def test_a_rejected_batch_is_set_aside_with_the_answer_and_later_ones_go_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ingest = Ingest(responses=[httpx.Response(422, json={"detail": "bad step"})])
    transport = sender(tmp_path, ingest.client(), batch_records=1)
    transport.submit([loss_record(0)])
    wait_for(lambda: transport.counters()["rejected"] == 1)
    for step in range(1, 4):
        transport.submit([loss_record(step)])
    with caplog.at_level(logging.WARNING, logger="collapsewatch"):
        transport.close("finished", timeout=10)
    refused, *accepted = ingest.batches
    assert [r.step for r in refused.records] == [0]
    assert [r.step for b in accepted for r in b.records] == [1, 2, 3], "a 422 is not repeated"
    assert accepted[-1].status == "finished"
    counts = transport.counters()
    assert (counts["stored"], counts["rejected"], counts["spooled"], counts["dropped"]) == (
        3, 1, 0, 0
    )  # fmt: skip
    rejected = tmp_path / "run" / "rejected"
    (batch,) = rejected.glob("*.json.gz")
    assert [r.step for r in decode(batch.read_bytes()).records] == [0]
    (note,) = rejected.glob("*.answer.json")
    assert json.loads(note.read_text())["status"] == 422 and "bad step" in note.read_text()
    assert transport.spool.pending() == [], "replays skip the rejected folder"
    notice, account = warnings_of(caplog)
    assert "rejected a batch (HTTP 422" in notice and str(rejected) in notice
    assert f"of 4 records, 3 stored; 1 set aside in {rejected}" in account


def test_a_transport_that_raises_never_reaches_the_loop(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ingest = Ingest(responses=[RuntimeError("broken transport")] * 5)
    with caplog.at_level(logging.WARNING, logger="collapsewatch"):
        monitor = training(ingest)
    assert "RuntimeError" in warnings_of(caplog)[0]
    assert monitor.stats["spooled"] == monitor.stats["records"] > 0
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

    monkeypatch.setattr(step_cycle, "StepPack", BrokenPack)
    with caplog.at_level(logging.WARNING, logger="collapsewatch"):
        monitor = training(ingest, steps=12)
    assert monitor.stats["step"] == 0 and not monitor.enabled
    assert sum("host copy failed" in r.getMessage() for r in caplog.records) == 1
    assert ingest.batches[-1].status == "finished", "the run is still closed properly"


def test_finish_spools_what_a_hung_server_did_not_take(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def hang(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    client = httpx.Client(transport=httpx.MockTransport(hang))
    model = mlp()
    monitor = collapsewatch.watch(model, server=SERVER, http_client=client, every=1)
    model(torch.randn(4, 8))
    monitor.step()
    with caplog.at_level(logging.WARNING, logger="collapsewatch"):
        monitor.finish(timeout=0.2)
    assert "spooled to" in warnings_of(caplog)[-1]
    files = sorted((tmp_path / "spool" / str(monitor.run_id)).glob("*.json.gz"))
    batches = [decode(f.read_bytes()) for f in files]
    assert batches[-1].status == "finished"
    assert any(r.kind == "activation" for b in batches for r in b.records)
    stats = monitor.stats
    assert stats["spooled"] == sum(len(b.records) for b in batches) == stats["records"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_the_sender_restarts_in_a_forked_child(ingest: Ingest, tmp_path: Path) -> None:
    transport = sender(tmp_path, ingest.client())
    transport.submit([loss_record(0)])  # starts the parent's thread
    read, write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads, on 3.12+
        pid = os.fork()
    if pid == 0:  # the child: the parent's thread did not survive the fork
        code = 1
        try:
            ingest.requests.clear()
            transport.submit([loss_record(0)])
            transport.close("finished", timeout=5)
            sent = transport.counters()["batches_sent"]
            code = 0 if len(ingest.requests) == 1 and sent == 1 else 2
        finally:
            os.write(write, bytes([code]))
            os._exit(0)
    os.close(write)
    answer = os.read(read, 1)
    os.waitpid(pid, 0)
    transport.close("finished", timeout=5)
    assert answer == b"\x00", "the child could not send"
    assert transport.counters()["batches_sent"] == 1


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
