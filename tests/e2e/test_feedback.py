"""What flows back to a plain training loop from the real app: the alerts firing on its run
(piggy-backed on the ingest answers), a resumed run's step counter, and the mirrored values
in the user's TensorBoard."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import collapsewatch
from collapsewatch.schemas import RunAlert
from tests.e2e.integration_support import SERVER, always_critical, steps_of
from tests.helpers import make_batch


def _model() -> tuple[nn.Module, torch.optim.Optimizer, nn.Module]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    return model, torch.optim.SGD(model.parameters(), lr=0.05), nn.CrossEntropyLoss()


def _step(model: nn.Module, opt: torch.optim.Optimizer, crit: nn.Module) -> None:
    loss = crit(model(torch.randn(16, 8)), torch.randint(0, 4, (16,)))
    opt.zero_grad()
    loss.backward()
    opt.step()


def test_the_ingest_answer_lists_the_runs_firing_alerts(inproc: Any) -> None:
    always_critical(inproc, "fb")
    run_id = uuid.uuid4()
    body = make_batch(run_id, project="fb", name="r", steps=range(2))  # with losses
    first = inproc.post("/api/v1/ingest", json=body).json()
    assert first["firing"] == []  # its points are judged after the answer, in the background
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # the next answers list what that batch raised
        later = make_batch(run_id, project="fb", name="r", steps=range(0))
        answer = inproc.post("/api/v1/ingest", json=later).json()
        if answer["firing"]:
            break
        time.sleep(0.1)
    assert [a["rule"] for a in answer["firing"]] == ["loss seen"]
    alert = RunAlert.model_validate(answer["firing"][0])
    assert (alert.severity, alert.indicator, alert.probe) == ("critical", "loss", "loss")
    assert alert.step in (0, 1) and alert.since is not None
    other = make_batch(project="fb", name="other", steps=range(0))  # no loss: nothing fires
    assert inproc.post("/api/v1/ingest", json=other).json()["firing"] == [], "this run's only"


def test_a_plain_loop_hears_an_alert_between_two_steps(inproc: Any) -> None:
    always_critical(inproc, "fb")
    model, opt, crit = _model()
    heard: list[tuple[int, str]] = []
    monitor = collapsewatch.watch(
        model,
        opt,
        crit,
        project="fb",
        every=1,
        server=SERVER,
        http_client=inproc,
        on_alert=lambda a: heard.append((monitor.stats["step"], a.severity)),
    )
    deadline = time.monotonic() + 30
    while not heard and time.monotonic() < deadline:
        _step(model, opt, crit)
        time.sleep(0.01)
    assert heard and heard[0][1] == "critical"
    assert [a.rule for a in monitor.firing()] == ["loss seen"]
    for _ in range(5):  # said once per firing episode, not at every answer
        _step(model, opt, crit)
    time.sleep(1.5)
    _step(model, opt, crit)
    monitor.finish()
    assert len(heard) == 1


def test_a_failing_on_alert_never_reaches_the_loop(
    inproc: Any, caplog: pytest.LogCaptureFixture
) -> None:
    always_critical(inproc, "fb")
    model, opt, crit = _model()

    def broken(alert: RunAlert) -> None:
        raise RuntimeError("user bug")

    monitor = collapsewatch.watch(
        model, opt, crit, project="fb", every=1, server=SERVER, http_client=inproc, on_alert=broken
    )
    deadline = time.monotonic() + 30
    while not monitor.firing() and time.monotonic() < deadline:
        _step(model, opt, crit)
        time.sleep(0.01)
    _step(model, opt, crit)
    _step(model, opt, crit)
    monitor.finish()
    assert sum("on_alert callback failed" in m for m in caplog.messages) == 1


def test_resume_goes_on_from_the_last_stored_step_without_duplicates(inproc: Any) -> None:
    model, opt, crit = _model()
    first = collapsewatch.watch(
        model, opt, crit, project="fb", every=3, server=SERVER, http_client=inproc
    )
    for _ in range(7):
        _step(model, opt, crit)
    first.finish()  # steps 0..6 stored: 0, 3, 6
    again = collapsewatch.watch(
        model,
        opt,
        crit,
        project="fb",
        every=3,
        server=SERVER,
        http_client=inproc,
        run_id=str(first.run_id),
        resume=True,
    )
    assert again.stats["step"] == 7
    for _ in range(5):
        _step(model, opt, crit)
    again.finish()
    steps = steps_of(inproc, str(first.run_id), "weight_norm", "0.weight")
    assert steps == [0, 3, 6, 9, 11]
    # a restart from an older checkpoint (the trainer says step 4): steps the server has
    # (up to 11) are not sampled again, the counter follows the trainer
    third = collapsewatch.watch(
        model,
        opt,
        crit,
        project="fb",
        every=3,
        server=SERVER,
        http_client=inproc,
        run_id=str(first.run_id),
        resume=True,
        start_step=4,
    )
    for _ in range(10):
        _step(model, opt, crit)
    third.finish()
    steps = steps_of(inproc, str(first.run_id), "weight_norm", "0.weight")
    assert steps == [0, 3, 6, 9, 11, 12, 13], "no step twice"
    # a restart that ends before it gets past what the server has adds nothing
    fourth = collapsewatch.watch(
        model,
        opt,
        crit,
        project="fb",
        every=3,
        server=SERVER,
        http_client=inproc,
        run_id=str(first.run_id),
        resume=True,
        start_step=2,
    )
    for _ in range(3):
        _step(model, opt, crit)
    fourth.finish()
    assert steps_of(inproc, str(first.run_id), "weight_norm", "0.weight") == steps
    assert steps_of(inproc, str(first.run_id), "loss", "loss") == [0, 3, 6, 9, 11, 12, 13]
    run = inproc.get(f"/api/v1/runs/{first.run_id}").json()
    assert run["config"]["collapsewatch.resumed"] == [7, 4, 2]


def test_resume_needs_a_run_id() -> None:
    model, opt, crit = _model()
    with pytest.raises(ValueError, match="run_id"):
        collapsewatch.watch(model, opt, crit, resume=True, server=SERVER)


def test_mirror_logs_into_the_users_tensorboard(inproc: Any, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path))
    model, opt, crit = _model()
    monitor = collapsewatch.watch(
        model, opt, crit, every=2, mirror=writer, server=SERVER, http_client=inproc
    )
    for _ in range(6):
        _step(model, opt, crit)
    monitor.finish()
    writer.close()
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"collapsewatch/loss", "collapsewatch/0/effective_rank"} <= tags
    assert "collapsewatch/0/inactive_fraction" in tags  # layer 0 feeds a ReLU
    assert [e.step for e in events.Scalars("collapsewatch/loss")] == [0, 2, 4, 5]


def test_mirror_into_wandb_and_mlflow_by_what_they_have(inproc: Any) -> None:
    class WandbRun:  # a wandb run as the mirror uses it: define_metric and log
        def __init__(self) -> None:
            self.metrics: list[tuple[str, str | None]] = []
            self.rows: list[dict[str, float]] = []

        def define_metric(self, name: str, step_metric: str | None = None) -> None:
            self.metrics.append((name, step_metric))

        def log(self, row: dict[str, float], commit: bool = True) -> None:
            assert commit is False  # our values join the user's next row
            self.rows.append(row)

    run = WandbRun()
    model, opt, crit = _model()
    monitor = collapsewatch.watch(
        model, opt, crit, every=2, mirror=run, server=SERVER, http_client=inproc
    )
    for _ in range(4):
        _step(model, opt, crit)
    monitor.finish()
    assert ("collapsewatch/*", "collapsewatch/step") in run.metrics
    assert [r["collapsewatch/step"] for r in run.rows] == [0, 2, 3]
    assert all("collapsewatch/loss" in r for r in run.rows)
    with pytest.raises(ValueError, match="mirror"):
        collapsewatch.watch(model, opt, crit, mirror="comet", server=SERVER)
