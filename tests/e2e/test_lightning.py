"""A Lightning script with only the callback added: it streams to the real app, gets the same
indicator families as a hand-written loop, counts steps as the trainer does, stops (and
checkpoints) on a critical alert, and resumes into the same run from a checkpoint."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import collapsewatch
from collapsewatch.integrations.lightning import CollapsewatchCallback
from tests.e2e.integration_support import (
    SERVER,
    always_critical,
    indicators,
    steps_of,
)

pytestmark = pytest.mark.filterwarnings(
    # Lightning's own advice on a tiny CPU run (workers, logging interval, ...)
    "ignore::UserWarning",
    "ignore::DeprecationWarning",
    "ignore::FutureWarning",
    "ignore::lightning.fabric.utilities.warnings.PossibleUserWarning",
)


class Classifier(pl.LightningModule):
    def __init__(self, pause: float = 0.0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4))
        self.pause = pause

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if self.pause:
            time.sleep(self.pause)
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05)


def data(n: int = 512) -> DataLoader[Any]:
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(n, 8, generator=gen), torch.randint(0, 4, (n,), generator=gen)
    return DataLoader(TensorDataset(x, y), batch_size=16)


def trainer(tmp_path: Path, callback: CollapsewatchCallback, **kwargs: Any) -> pl.Trainer:
    return pl.Trainer(
        callbacks=[callback],
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        **kwargs,
    )


def test_the_callback_alone_gets_the_families_of_a_hand_written_loop(
    inproc: Any, tmp_path: Path
) -> None:
    callback = CollapsewatchCallback(
        project="pl", run="callback", every=2, server=SERVER, http_client=inproc
    )
    trainer(tmp_path, callback, max_steps=12).fit(Classifier(), data())
    run_id = callback.run_id
    assert run_id is not None
    run = inproc.get(f"/api/v1/runs/{run_id}").json()
    assert (run["status"], run["last_step"]) == ("finished", 11)

    module = Classifier()  # the same module, trained by hand
    opt = module.configure_optimizers()
    monitor = collapsewatch.watch(
        module, opt, project="pl", run="by-hand", every=2, server=SERVER, http_client=inproc
    )
    for i, batch in enumerate(data()):
        if i == 12:
            break
        loss = module.training_step(batch, i)
        opt.zero_grad()
        loss.backward()
        opt.step()
    monitor.finish()
    found = indicators(inproc, run_id)
    assert found == indicators(inproc, str(monitor.run_id))
    assert {"loss", "dead_fraction", "effective_rank", "grad_norm", "nc1"} <= found


def test_steps_are_the_trainers_with_gradient_accumulation(inproc: Any, tmp_path: Path) -> None:
    callback = CollapsewatchCallback(project="pl", every=1, server=SERVER, http_client=inproc)
    fit = trainer(tmp_path, callback, max_steps=6, accumulate_grad_batches=2)
    fit.fit(Classifier(), data())
    assert fit.global_step == 6
    run_id = str(callback.run_id)
    assert steps_of(inproc, run_id, "grad_norm", "net.0.weight") == list(range(6))
    # the loss as the training step returned it (before Lightning's division by 2): two
    # batches per step, each a cross-entropy of 4 classes near log(4)
    loss = inproc.get(f"/api/v1/runs/{run_id}/series/loss", params={"probe": "loss"}).json()
    assert all(1.0 < v < 2.0 for v in loss["values"])


def test_a_critical_alert_stops_the_run_and_saves_a_checkpoint(inproc: Any, tmp_path: Path) -> None:
    always_critical(inproc, "pl-stop")
    seen: list[str] = []
    callback = CollapsewatchCallback(
        project="pl-stop",
        every=1,
        stop_on="critical",
        checkpoint_on="critical",
        on_alert=lambda alert: seen.append(alert.rule),
        server=SERVER,
        http_client=inproc,
    )
    fit = trainer(tmp_path, callback, max_steps=3000)
    fit.fit(Classifier(pause=0.003), data(100_000))
    assert seen == ["loss seen"]
    assert fit.global_step < 3000, "the alert stopped training"
    saved = list((tmp_path / "collapsewatch").glob("collapsewatch-step*.ckpt"))
    assert len(saved) == 1
    run = inproc.get(f"/api/v1/runs/{callback.run_id}").json()
    assert run["status"] == "finished" and run["open_alerts"] == 1


def test_a_restart_from_a_checkpoint_resumes_into_the_same_run(inproc: Any, tmp_path: Path) -> None:
    first = CollapsewatchCallback(project="pl", every=2, server=SERVER, http_client=inproc)
    fit = trainer(tmp_path, first, max_steps=10)
    fit.fit(Classifier(), data())
    checkpoint = tmp_path / "step10.ckpt"
    fit.save_checkpoint(checkpoint)
    run_id = first.run_id
    assert run_id is not None

    # a new process would build everything anew: a fresh callback that knows no run id
    again = CollapsewatchCallback(project="pl", every=2, server=SERVER, http_client=inproc)
    trainer(tmp_path, again, max_steps=20).fit(Classifier(), data(), ckpt_path=checkpoint)
    assert again.run_id == run_id
    steps = steps_of(inproc, run_id, "grad_norm", "net.0.weight")
    assert steps == sorted(set(steps)) and steps[0] == 0 and steps[-1] == 19
    assert {s for s in steps if s >= 10} == {10, 12, 14, 16, 18, 19}
    runs = inproc.get("/api/v1/runs", params={"project": "pl"}).json()
    assert [r["run_id"] for r in runs] == [run_id]
    run = inproc.get(f"/api/v1/runs/{run_id}").json()
    assert run["config"]["collapsewatch.resumed"] == [10] and run["status"] == "finished"
    # the run page's chart marks the resume and breaks its lines there
    chart = inproc.get(f"/api/v1/runs/{run_id}/figures/grad_norm").json()["lines"]
    assert any(s.get("name") == "resumed" and s["x0"] == 10 for s in chart["layout"]["shapes"])
    assert None in chart["data"][0]["y"]
