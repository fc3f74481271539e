"""Helpers of the SDK tests: a fake ingest endpoint and a tiny training loop.

The fake is an ``httpx.MockTransport``: the edge of the world for the SDK. Tests of the SDK
against the real server live with the server.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import torch
from torch import nn

import collapsewatch
from collapsewatch.pipeline.sender import Sender
from collapsewatch.pipeline.spool import Spool
from collapsewatch.schemas import IngestBatch, ProbeKind, StatRecord

SERVER = "http://testserver"


@dataclass
class Ingest:
    """Captures what the SDK posts; ``responses`` scripts the answers (then 202 forever)."""

    responses: list[httpx.Response | Exception] = field(default_factory=list)
    requests: list[httpx.Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET":  # /healthz, asked when a batch keeps failing
            return httpx.Response(200, json={"status": "ok", "store": "ok"})
        with self.lock:
            self.requests.append(request)
            answer = self.responses.pop(0) if self.responses else None
        if isinstance(answer, Exception):
            raise answer
        return answer or httpx.Response(202, json={"ok": True})

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self.handle))

    @property
    def batches(self) -> list[IngestBatch]:
        return [decode(r.content) for r in self.requests]

    def records(self, kind: str | None = None, probe: str | None = None) -> list[StatRecord]:
        """Records of the accepted batches, without the duplicates of retried ones."""
        seen: set[str] = set()
        out: list[StatRecord] = []
        for batch in self.batches:
            if str(batch.batch_id) in seen:
                continue
            seen.add(str(batch.batch_id))
            out += [
                r
                for r in [*batch.records, *as_records(batch)]
                if (kind is None or r.kind == kind) and (probe is None or r.probe == probe)
            ]
        return out


def as_records(batch: IngestBatch) -> list[StatRecord]:
    """A batch's scalar columns as the ``scalar`` records they stand for."""
    return [
        StatRecord(probe=c.probe, kind=ProbeKind.scalar, step=step, stats={"value": value})
        for c in batch.scalars
        for step, value in zip(c.steps, c.values, strict=True)
    ]


def decode(body: bytes) -> IngestBatch:
    """A posted or spooled body, validated with the wire schema."""
    return IngestBatch.model_validate_json(gzip.decompress(body))


def mlp(width: int = 32) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, width), nn.ReLU(), nn.Linear(width, 4))


def train(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    steps: int,
    after_step: Callable[[torch.Tensor], None] | None = None,
) -> list[float]:
    """A plain classification loop; returns the losses (the test may sync, the SDK may not)."""
    gen = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(steps):
        x = torch.randn(16, 8, generator=gen)
        y = torch.randint(0, 4, (16,), generator=gen)
        loss = criterion(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if after_step is not None:
            after_step(loss)
        losses.append(loss.item())
    return losses


def watched(
    ingest: Ingest, every: int = 4
) -> tuple[nn.Module, torch.optim.Optimizer, collapsewatch.Monitor]:
    """The MLP with SGD, watched with a fixed sampling interval, sending to ``ingest``."""
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    monitor = collapsewatch.watch(
        model, optimizer, server=SERVER, http_client=ingest.client(), every=every
    )
    return model, optimizer, monitor


def one_step(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """One training step of ``watched``'s MLP on a random batch."""
    loss = model(torch.randn(8, 8)).square().mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


#: The run of hand-made records (``sender``).
RUN = {
    "run_id": "6f1c1d2e-8a4b-4c5d-9e6f-7a8b9c0d1e2f",
    "project": "p",
    "name": "r",
    "started_at": "2024-01-01T00:00:00Z",
}


def sender(tmp_path: Path, client: httpx.Client, **kwargs: Any) -> Sender:
    """A sender of hand-made records to ``client``, spooling to ``tmp_path/run``."""
    return Sender(
        server=SERVER, token=None, spool=Spool(tmp_path / "run"), run=lambda: RUN, client=client,
        **kwargs,
    )  # fmt: skip


def wait_for(condition: Any, timeout: float = 10.0) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
