"""The monitor on real (tiny) trainings, sending to a fake ingest endpoint."""

from __future__ import annotations

import dataclasses
import json
import re
import uuid

import httpx
import pytest
import torch
from torch import nn

import collapsewatch
from collapsewatch.pipeline import wire
from collapsewatch.pipeline.sampling import Sampler, floor_every
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
        assert all(len(stats[k]) == width for k in ("sum", "sumsq", "unit_sum", "eig"))
        # positive counts (dead units) only before a ReLU: "0" feeds one, the output not
        assert ("pos" in stats) == (layer == "0")

    params = [r for r in ingest.records("parameter") if r.probe != "(global)"]  # sparsity sums
    assert {r.step for r in params} == {*sampled, 29}, "and the weights as the run ends"
    assert {r.probe for r in params} == {"0.weight", "0.bias", "2.weight", "2.bias"}
    final = [r for r in params if r.step == 29]
    assert len(final) == 4 and all("update_norm" not in r.stats for r in final)
    for record in (r for r in params if r.step != 29):
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
    # step 0's loss was seen being backpropagated before the first loss passed by hand
    assert [(r.step, r.stats["count"]) for r in loss] == [(0, 1), (5, 5), (9, 5)]


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


def test_scalars_travel_as_one_column_per_probe(ingest: Ingest) -> None:
    monitor = watch(ingest, mlp(), every=10)
    for step in range(5):
        monitor.log_scalar("lr", 0.1 * step)
        monitor.log_scalar("grad_norm", float("nan") if step == 2 else 1.0 + step)
        monitor.step()
    monitor.finish()
    batches = [b for b in ingest.batches if b.scalars]
    assert batches, "no batch had scalar columns"
    assert not [r for b in ingest.batches for r in b.records if r.kind == ProbeKind.scalar]
    columns = {c.probe: c for b in batches for c in b.scalars}
    assert columns["lr"].steps == [0, 1, 2, 3, 4]
    assert columns["lr"].values == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    assert columns["grad_norm"].values[2] != columns["grad_norm"].values[2]  # NaN kept


def test_a_server_older_than_columns_gets_records(ingest: Ingest) -> None:
    # what a server before scalar columns answers (pydantic's extra_forbidden on the field)
    refusal = {"detail": [{"type": "extra_forbidden", "loc": ["scalars"], "msg": "Extra inputs"}]}
    ingest.responses.append(httpx.Response(422, json=refusal))
    monitor = watch(ingest, mlp(), every=1)
    monitor.log_scalar("lr", 0.5)
    monitor.step()
    monitor.finish()
    first, again = ingest.batches
    assert first.scalars and not [r for r in first.records if r.kind == ProbeKind.scalar]
    assert again.batch_id == first.batch_id and not again.scalars
    assert [(r.step, r.stats["value"]) for r in again.records if r.kind == ProbeKind.scalar] == [
        (0, 0.5)
    ]
    # the endpoint remembers: a later batch goes as records at once
    endpoint = wire.Endpoint(SERVER, None, ingest.client())
    ingest.responses.append(httpx.Response(422, json=refusal))
    run = first.run.model_dump(mode="json")
    records = [{"probe": "lr", "kind": "scalar", "step": 1, "stats": {"value": 0.25}}]
    assert endpoint.post(wire.encode(run, records, None)[1]).outcome == wire.Outcome.STORED
    assert endpoint.post(wire.encode(run, records, None)[1]).outcome == wire.Outcome.STORED
    assert [bool(b.scalars) for b in ingest.batches[2:]] == [True, False, False]
    # a broken column refused by a server that takes columns is not taken for an old server
    inside = {"detail": [{"type": "extra_forbidden", "loc": ["scalars", 0, "kind"]}]}
    answer = wire.Answer(wire.Outcome.REJECTED, 422, "HTTP 422", json.dumps(inside))
    assert not wire.refuses_columns(answer)
    assert wire.refuses_columns(dataclasses.replace(answer, detail=json.dumps(refusal)))


def test_context_manager_marks_a_crash(ingest: Ingest) -> None:
    model = mlp()
    with pytest.raises(RuntimeError, match="diverged"), watch(ingest, model) as monitor:
        model(torch.randn(4, 8))
        monitor.step()
        raise RuntimeError("diverged")
    assert ingest.batches[-1].status == "crashed"
    assert not monitor.enabled
    assert not model[0]._forward_hooks, "hooks are removed"


def test_context_manager_finishes_a_run_left_normally(ingest: Ingest) -> None:
    model = mlp()
    with watch(ingest, model) as monitor:
        assert isinstance(monitor, collapsewatch.Monitor)
        model(torch.randn(4, 8))
        monitor.step()
    assert ingest.batches[-1].status == "finished"
    assert not monitor.enabled


def test_read_client_as_a_context_manager_closes_its_own_http_client() -> None:
    with collapsewatch.Api(server=SERVER) as api:
        assert isinstance(api, collapsewatch.Api)
    with pytest.raises(RuntimeError, match="closed"):
        api.projects()


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


def test_the_density_floor_caps_the_interval_by_the_step() -> None:
    assert [floor_every(s) for s in (0, 127, 255, 256, 511, 512, 1023, 1024)] == [
        8, 8, 8, 16, 16, 32, 32, 64,
    ]  # fmt: skip
    assert floor_every(10**9) == 1024
    # what the floor alone gives a run: every step that is a multiple of the cap then
    sampled = [s for s in range(1000) if s % floor_every(s) == 0]
    assert len([s for s in sampled if s < 300]) >= 35 and len(sampled) >= 60


def fed(sampler: Sampler, step: int, wall: float, cost: float, unsampled: int = 20) -> None:
    """``unsampled`` steps of ``wall`` seconds, then one sampled step costing ``cost``."""
    for _ in range(unsampled):
        sampler.observe(step, False, wall=wall, cost=0.0)
    sampler.observe(step, True, wall=wall + cost, cost=cost)


def test_the_interval_keeps_the_budget_and_narrows_again_when_sampling_is_cheap() -> None:
    sampler = Sampler(None)
    assert sampler.every == 8 and sampler.sampled(0) and not sampler.sampled(5)
    fed(sampler, 5000, wall=0.010, cost=0.010)  # a sampled step costs a whole step
    assert sampler.every == 64, "the smallest power of two within 3%: 1/64 < 0.03 < 1/32"
    assert sampler.share() <= 0.03
    for _ in range(5):  # now sampling is cheap: 0.1% of a step
        fed(sampler, 5000, wall=0.010, cost=0.00001)
    assert sampler.every == 16, "at most 10 sampled steps a second: 16 x 10 ms > 0.1 s"
    fed(sampler, 5000, wall=0.010, cost=1.0)
    assert sampler.every == 16, "one slow sampled step moves the median of five not at all"


def test_the_floor_wins_over_the_budget_early_in_a_run() -> None:
    sampler = Sampler(None)
    fed(sampler, 100, wall=0.0005, cost=0.01)  # a tiny model: sampling costs 20 steps
    assert sampler.every == 8
    fed(sampler, 700, wall=0.0005, cost=0.01)
    assert sampler.every == 32


def test_a_long_pause_between_sampled_steps_samples_the_next_step() -> None:
    sampler = Sampler(None)
    fed(sampler, 5000, wall=0.001, cost=1.0)
    assert sampler.every == 256 and not sampler.sampled(5001)
    for step in range(5001, 5005):
        sampler.observe(step, False, wall=2.0, cost=0.0)  # slow steps: 8 s since the sample
    assert sampler.sampled(5005), "no more than 5 s of training without a sampled step"


def test_a_fixed_interval_never_changes() -> None:
    fixed = Sampler(5)
    fed(fixed, 100, wall=0.010, cost=1.0)
    assert fixed.every == 5 and fixed.sampled(10) and not fixed.sampled(11)


def test_a_short_run_with_the_two_lines_is_sampled_densely(ingest: Ingest) -> None:
    """A newcomer's 300-step, 4-layer ReLU MLP: tiny steps make sampling expensive in
    comparison, but the density floor still gives every layer 30+ sampled steps."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
        nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4),
    )  # fmt: skip
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    monitor = watch(ingest, model, optimizer, criterion)
    train(model, optimizer, criterion, steps=300)
    monitor.finish()
    for layer in ("0", "2", "4", "6"):
        steps = [r.step for r in ingest.records("activation", layer)]
        assert len(steps) >= 30, (layer, steps)
        assert steps[-1] >= 280, "the charts reach the end of the run"


def test_the_update_norm_of_a_large_weight_is_estimated_from_a_sample(ingest: Ingest) -> None:
    """A weight past UPDATE_SAMPLE elements is read through a strided sample: with plain SGD
    the estimate must still match lr times the gradient norm (computed in full)."""
    from collapsewatch.probes.parameters import UPDATE_SAMPLE

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(400, 300), nn.ReLU(), nn.Linear(300, 4))
    assert model[0].weight.numel() > UPDATE_SAMPLE
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = watch(ingest, model, optimizer, nn.CrossEntropyLoss(), every=2)
    for _ in range(6):
        optimizer.zero_grad()
        loss = nn.CrossEntropyLoss()(model(torch.randn(32, 400)), torch.randint(0, 4, (32,)))
        loss.backward()
        optimizer.step()
        monitor.step()
    monitor.finish()
    records = [r for r in ingest.records("parameter", "0.weight") if "update_norm" in r.stats]
    assert len(records) >= 2
    for record in records:
        expected = 0.1 * record.stats["grad_norm"]
        assert record.stats["update_norm"] == pytest.approx(expected, rel=0.1)
