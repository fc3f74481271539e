"""The monitor on real (tiny) trainings, sending to a fake ingest endpoint."""

from __future__ import annotations

import re
import uuid

import pytest
import torch
from torch import nn

import collapsewatch
from collapsewatch.sampling import Sampler
from collapsewatch.schemas import ProbeKind
from tests.sdk.helpers import SERVER, Ingest, mlp, train


def watch(
    ingest: Ingest, model: nn.Module, *args: object, **kwargs: object
) -> collapsewatch.Monitor:
    return collapsewatch.watch(
        model,
        *args,
        server=SERVER,
        http_client=ingest.client(),
        **kwargs,  # type: ignore[arg-type]
    )


def test_training_with_optimizer_and_criterion(ingest: Ingest) -> None:
    model, criterion = mlp(), nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = watch(ingest, model, optimizer, criterion, every=5, config={"seed": 0})
    losses = train(model, optimizer, criterion, steps=30)
    monitor.finish()

    batches = ingest.batches
    assert len({b.batch_id for b in batches}) == len(batches), "batch ids must be unique"
    assert [b.status for b in batches][-1] == "finished"
    assert all(b.status is None for b in batches[:-1])
    run = batches[0].run
    assert run.run_id == monitor.run_id and run.project == "default"
    assert run.config["seed"] == 0 and run.config["optimizer"] == "SGD"
    probes = {p.name: p for p in run.probes}
    assert probes["0"].kind == ProbeKind.activation and probes["0"].width == 32
    assert probes["0.weight"].kind == ProbeKind.parameter and probes["0.weight"].params == 256
    assert probes["loss"].kind == ProbeKind.loss
    assert [p.order for p in run.probes] == list(range(len(run.probes)))

    sampled = [0, 5, 10, 15, 20, 25]
    for layer, width in (("0", 32), ("2", 4)):
        records = ingest.records("activation", layer)
        assert [r.step for r in records] == sampled
        stats = records[0].stats
        assert stats["n"] == 16 and stats["width"] == width and stats["cov_n"] == 16
        assert all(len(stats[k]) == width for k in ("sum", "sumsq", "pos", "unit_sum", "eig"))

    params = [r for r in ingest.records("parameter") if r.probe != "(global)"]  # sparsity sums
    assert {r.step for r in params} == set(sampled)
    assert {r.probe for r in params} == {"0.weight", "0.bias", "2.weight", "2.bias"}
    for record in params:
        assert record.stats["update_norm"] > 0 and record.stats["grad_norm"] > 0
        # plain SGD: the update is lr times the gradient
        assert record.stats["update_norm"] == pytest.approx(0.1 * record.stats["grad_norm"])

    loss = ingest.records("loss")
    assert [r.step for r in loss] == [*sampled, 29]
    windows = [(0, 1), (1, 6), (6, 11), (11, 16), (16, 21), (21, 26), (26, 30)]
    for record, (start, stop) in zip(loss, windows, strict=True):
        window = losses[start:stop]
        assert record.stats["count"] == len(window)
        assert record.stats["mean"] == pytest.approx(sum(window) / len(window), rel=1e-5)
        assert record.stats["max"] == pytest.approx(max(window), rel=1e-5)

    stats = monitor.stats
    assert stats["sampled_steps"] == 6 and stats["step"] == 30
    assert stats["records"] == len(ingest.records()) and stats["batches_sent"] == len(batches)
    assert stats["dropped"] == stats["spooled"] == stats["failures"] == 0


def test_manual_steps_without_optimizer(ingest: Ingest) -> None:
    model, criterion = mlp(), nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = watch(ingest, model, every=2)
    train(model, optimizer, criterion, steps=5, after_step=lambda loss: monitor.step(loss=loss))
    monitor.finish()
    assert [r.step for r in ingest.records("activation", "0")] == [0, 2, 4]
    params = ingest.records("parameter", "0.weight")
    assert [r.step for r in params] == [0, 2, 4]
    assert "update_norm" not in params[0].stats and params[0].stats["grad_norm"] > 0
    assert [r.stats["count"] for r in ingest.records("loss")] == [1, 2, 2]
    assert any(p.name == "loss" for p in ingest.batches[-1].run.probes)


def test_functional_loss_passed_to_step_with_an_optimizer(ingest: Ingest) -> None:
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = watch(ingest, model, optimizer, every=5)
    criterion = nn.CrossEntropyLoss()  # not given to watch(): the loop passes the loss
    train(model, optimizer, criterion, steps=10, after_step=lambda loss: monitor.step(loss=loss))
    monitor.finish()
    assert monitor.stats["step"] == 10, "steps come from the optimizer, not from step()"
    loss = ingest.records("loss")
    assert [(r.step, r.stats["count"]) for r in loss] == [(5, 5), (9, 5)]


def test_several_forwards_add_up_and_eval_forwards_are_ignored(ingest: Ingest) -> None:
    model = mlp()
    monitor = watch(ingest, model, every=1)
    model.train()
    model(torch.randn(16, 8))
    model(torch.randn(16, 8))  # a second view on the same step
    model.eval()
    model(torch.randn(100, 8))
    model.train()
    monitor.step()
    monitor.finish()
    (record,) = ingest.records("activation", "0")
    assert record.stats["n"] == 32


def test_log_scalar_numbers_and_tensors(ingest: Ingest) -> None:
    monitor = watch(ingest, mlp(), every=10)
    monitor.log_scalar("lr", 0.5)
    monitor.step()
    monitor.log_scalar("acc", torch.tensor(0.25))
    monitor.finish()
    values = {(r.probe, r.step): r.stats["value"] for r in ingest.records("scalar")}
    assert values == {("lr", 0): 0.5, ("acc", 1): 0.25}
    kinds = {p.name: p.kind for p in ingest.batches[-1].run.probes}
    assert kinds["lr"] == kinds["acc"] == ProbeKind.scalar


def test_context_manager_marks_a_crash(ingest: Ingest) -> None:
    model = mlp()
    with pytest.raises(RuntimeError, match="diverged"), watch(ingest, model) as monitor:
        model(torch.randn(4, 8))
        monitor.step()
        raise RuntimeError("diverged")
    assert ingest.batches[-1].status == "crashed"
    assert not monitor.enabled
    assert not model[0]._forward_hooks, "hooks are removed"


def test_remove_detaches_every_hook(ingest: Ingest) -> None:
    model, criterion = mlp(), nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = watch(ingest, model, optimizer, criterion)
    monitor.remove()
    assert not model[0]._forward_hooks and not criterion._forward_hooks
    assert not optimizer._optimizer_step_pre_hooks and not optimizer._optimizer_step_post_hooks
    train(model, optimizer, criterion, steps=2)
    monitor.finish()
    assert monitor.stats["step"] == 0 and ingest.records() == []


@pytest.mark.parametrize(
    ("kwargs", "env"),
    [({"enabled": False}, {}), ({}, {"COLLAPSEWATCH_DISABLED": "1"}), ({}, {"RANK": "1"})],
)
def test_null_monitor_does_nothing(
    ingest: Ingest, monkeypatch: pytest.MonkeyPatch, kwargs: dict[str, object], env: dict[str, str]
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    model, criterion = mlp(), nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = watch(ingest, model, optimizer, criterion, **kwargs)
    train(model, optimizer, criterion, steps=3, after_step=lambda loss: monitor.step(loss=loss))
    monitor.log_scalar("x", 1.0)
    with monitor:
        pass
    monitor.finish()
    assert not monitor.enabled and ingest.requests == []
    assert not model[0]._forward_hooks
    assert monitor.stats["records"] == 0


def test_config_from_arguments_then_environment(
    ingest: Ingest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLLAPSEWATCH_PROJECT", "from-env")
    monkeypatch.setenv("COLLAPSEWATCH_RUN", "env-run")
    monkeypatch.setenv("COLLAPSEWATCH_TOKEN", "s3cret")
    monitor = watch(ingest, mlp(), run="arg-run")
    assert (monitor.project, monitor.run_name) == ("from-env", "arg-run")
    assert isinstance(monitor.run_id, uuid.UUID)
    monitor.finish()
    assert ingest.requests[0].headers["authorization"] == "Bearer s3cret"
    assert ingest.requests[0].headers["content-encoding"] == "gzip"
    assert str(ingest.requests[0].url) == f"{SERVER}/api/v1/ingest"

    monkeypatch.delenv("COLLAPSEWATCH_RUN")
    generated = watch(ingest, mlp(), enabled=True)
    assert re.fullmatch(r"run-\d{8}-\d{6}", generated.run_name)
    generated.finish()


def test_invalid_names_fail_before_training() -> None:
    with pytest.raises(ValueError, match="invalid project name"):
        collapsewatch.watch(mlp(), project="my project")
    with pytest.raises(ValueError, match="invalid run name"):
        collapsewatch.watch(mlp(), run="-x")


def test_module_level_finish_ends_every_live_monitor(ingest: Ingest) -> None:
    first, second = watch(ingest, mlp()), watch(ingest, mlp())
    collapsewatch.finish()
    assert not first.enabled and not second.enabled
    finished = {b.run.run_id for b in ingest.batches if b.status == "finished"}
    assert finished == {first.run_id, second.run_id}


def test_adaptive_interval_doubles_when_over_budget() -> None:
    sampler = Sampler(None)
    assert sampler.every == 10 and sampler.sampled(0) and not sampler.sampled(5)
    for _ in range(9):
        sampler.observe(False, wall=0.010, overhead=0.0)
    sampler.observe(True, wall=0.2, overhead=0.1)  # 100 ms of SDK work per 10 ms steps
    assert sampler.every == 640 and sampler.share(0.1) <= 0.03
    cheap = Sampler(None)
    cheap.observe(False, wall=0.010, overhead=0.0)
    cheap.observe(True, wall=0.010, overhead=0.001)  # 1% of the time: keep the interval
    assert cheap.every == 10
    fixed = Sampler(5)
    fixed.observe(False, wall=0.010, overhead=0.0)
    fixed.observe(True, wall=1.0, overhead=1.0)
    assert fixed.every == 5


def test_adaptive_sampling_backs_off_on_a_cheap_model(ingest: Ingest) -> None:
    """Tiny steps make the SDK's own work large in comparison: the interval must widen."""
    model, criterion = mlp(width=512), nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    monitor = watch(ingest, model, optimizer, criterion)
    train(model, optimizer, criterion, steps=40)
    monitor.finish()
    every = monitor.stats["every"]
    assert every > 10, "the SDK costs more than 3% of such steps"
    steps = [r.step for r in ingest.records("activation", "0")]
    assert steps[:2] == [0, 10] and all(s % 10 == 0 for s in steps)
