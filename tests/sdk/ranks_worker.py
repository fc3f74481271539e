"""One rank of the data-parallel tests (tests/sdk/test_distributed.py), run in a spawned process.

Each rank trains the same MLP on its own batches (DDP, gloo on the CPU) and writes what the
test compares: its layer-0 outputs at every step (the brute force), and on rank 0 the records
the SDK sent and the SDK's log lines.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

import collapsewatch
from tests.sdk.helpers import SERVER, Ingest

STEPS = 6
EVERY = 2


def batch(rank: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank 0's inputs are negative in feature 0, rank 1's positive: units that only fire on
    one rank's batches look dead to that rank alone."""
    gen = torch.Generator().manual_seed(1000 * rank + step)
    x = torch.randn(16, 8, generator=gen)
    x[:, 0] = 4.0 if rank else -4.0
    return x, torch.randint(0, 4, (16,), generator=gen)


def model() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4))
    with torch.no_grad():  # half the units follow feature 0, half its opposite, bias below 0
        net[0].weight[:, 0] = torch.where(torch.arange(32) % 2 == 0, 1.0, -1.0)
        net[0].bias.fill_(-2.0)
    return net


def run(rank: int, world: int, port: int, out: str, mode: str) -> None:
    torch.set_num_threads(1)
    for name in list(os.environ):
        if name.startswith("COLLAPSEWATCH_"):
            del os.environ[name]
    os.environ["COLLAPSEWATCH_SPOOL_DIR"] = str(Path(out) / f"spool{rank}")
    log = Path(out) / f"log{rank}.txt"
    handler = logging.FileHandler(log)
    logging.getLogger("collapsewatch").addHandler(handler)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        net = model()
        if mode == "fsdp":
            from torch.distributed.fsdp import fully_shard

            fully_shard(net)
            trained: nn.Module = net
        else:
            trained = nn.parallel.DistributedDataParallel(net)
        opt = torch.optim.SGD(trained.parameters(), lr=0.05)
        crit = nn.CrossEntropyLoss()
        ingest = Ingest()
        monitor = collapsewatch.watch(
            net,
            opt,
            crit,
            every=EVERY,
            ranks="zero" if mode == "zero" else "merge",
            server=SERVER,
            http_client=ingest.client(),
            project="ddp",
            run="gloo",
        )
        brute: list[dict[str, Any]] = []
        for step in range(STEPS):
            x, y = batch(rank, step)
            with torch.no_grad():  # not through the module: its hooks would count this
                weight, bias = (_whole(t) for t in (net[0].weight, net[0].bias))
                h = torch.nn.functional.linear(x, weight, bias)
            brute.append({"step": step, "h": h.tolist()})
            loss = crit(trained(x), y)
            brute[-1]["loss"] = loss.item()
            opt.zero_grad()
            loss.backward()
            opt.step()
        monitor.finish()
        (Path(out) / f"brute{rank}.json").write_text(json.dumps(brute))
        records = [r.model_dump(mode="json") for r in ingest.records()]
        (Path(out) / f"records{rank}.json").write_text(json.dumps(records))
    finally:
        handler.close()
        dist.destroy_process_group()


def _whole(t: torch.Tensor) -> torch.Tensor:
    """A parameter as a plain tensor (FSDP's DTensor gathered: both ranks call this)."""
    full = getattr(t, "full_tensor", None)
    return full() if callable(full) else t
