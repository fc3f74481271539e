"""Neural-collapse statistics through the monitor: the classifier is found (or given), labels
come from the criterion or ``monitor.step(labels=...)``, and nothing raises into the loop."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import nn

import collapsewatch
from collapsewatch.probes.neural_collapse import ClassAccumulator
from collapsewatch.schemas import ClassStat, Packed, ProbeKind
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


def vec(value: object) -> np.ndarray:
    """A statistic as sent: a JSON list, or packed float32 (``schemas.Packed``)."""
    if isinstance(value, Packed):
        return np.frombuffer(value.f32, dtype="<f4").astype(np.float64)
    return np.asarray(value, dtype=np.float64)


def test_classifier_found_from_the_criterion_and_statistics_sent(ingest: Ingest) -> None:
    model, criterion = mlp(), nn.CrossEntropyLoss()
    features: list[tuple[torch.Tensor, torch.Tensor]] = []
    model[2].register_forward_hook(lambda m, a, o: features.append((a[0].detach().clone(), o)))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = watch(ingest, model, optimizer, criterion, every=5)
    labels: list[torch.Tensor] = []
    gen = torch.Generator().manual_seed(1)
    for _ in range(11):
        x, y = torch.randn(16, 8, generator=gen), torch.randint(0, 4, (16,), generator=gen)
        labels.append(y)
        loss = criterion(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    monitor.finish()

    probes = [p for p in ingest.batches[-1].run.probes if p.kind == ProbeKind.classes]
    assert [(p.name, p.module, p.width) for p in probes] == [("2", "Linear", 32)]
    records = ingest.records("classes")
    assert [(r.probe, r.step) for r in records] == [("2", 0), ("2", 5), ("2", 10)]
    for record in records:
        h, y = features[record.step][0].double().numpy(), labels[record.step].numpy()
        stats = record.stats
        assert set(stats) <= set(ClassStat)
        assert stats["width"] == 32 and stats["classes"] == 4
        np.testing.assert_array_equal(vec(stats["n"]), np.bincount(y, minlength=4))
        sums = np.stack([h[y == c].sum(0) for c in range(4)])
        np.testing.assert_allclose(vec(stats["sum"]).reshape(4, 32), sums, rtol=1e-5, atol=1e-5)
        outer = vec(stats["basis_outer"]).reshape(32, 32)  # identity basis: d <= 128
        np.testing.assert_allclose(outer, h.T @ h, rtol=1e-5, atol=1e-4)
        assert stats["snapshots"] == 1 and len(vec(stats["w_gram"])) == 16
    assert "ncc_n" not in records[0].stats and records[1].stats["ncc_n"] == 16


def test_explicit_classifier_and_labels_through_step(ingest: Ingest) -> None:
    """No optimizer and no criterion module: ``monitor.step(loss=..., labels=...)``."""
    model = mlp()
    monitor = watch(ingest, model, classifier=model[2], every=2)
    gen = torch.Generator().manual_seed(2)
    for _ in range(4):
        x, y = torch.randn(16, 8, generator=gen), torch.randint(0, 4, (16,), generator=gen)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        monitor.step(loss=loss, labels=y)
    monitor.finish()
    records = ingest.records("classes", "2")
    assert [r.step for r in records] == [0, 2]
    assert vec(records[1].stats["n"]).sum() == 16


def test_language_model_logits_viewed_with_ignored_positions_and_top_k(ingest: Ingest) -> None:
    """``criterion(logits.view(-1, V), targets.view(-1))`` with padding at -100: the view is
    recognised, padded positions are skipped, and a 100-word vocabulary keeps 64 classes."""
    torch.manual_seed(0)
    vocab = 100
    model = nn.Sequential(nn.Embedding(vocab, 16), nn.Linear(16, 24), nn.ReLU())
    head = nn.Linear(24, vocab)
    criterion = nn.CrossEntropyLoss(ignore_index=-100)
    optimizer = torch.optim.SGD([*model.parameters(), *head.parameters()], lr=0.1)
    wrapper = nn.ModuleDict({"body": model, "lm_head": head})
    monitor = watch(ingest, wrapper, optimizer, criterion, every=1)
    gen = torch.Generator().manual_seed(3)
    for _ in range(3):
        tokens = torch.randint(0, vocab, (4, 10), generator=gen)
        targets = tokens.roll(-1, 1)
        targets[:, -3:] = -100
        logits = head(model(tokens))
        loss = criterion(logits.view(-1, vocab), targets.view(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    monitor.finish()
    records = ingest.records("classes", "lm_head")
    assert [r.step for r in records] == [0, 1, 2]
    stats = records[-1].stats
    assert stats["classes"] == 64 and len(vec(stats["n"])) == 64
    assert vec(stats["n"]).sum() <= 4 * 7  # padded positions never count
    assert len(vec(stats["w_gram"])) == 64 * 64


def test_regression_criterion_gives_no_class_statistics(ingest: Ingest) -> None:
    """Float targets (MSE): no labels, the detection gives up and removes its hooks."""
    model, criterion = mlp(), nn.MSELoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    monitor = watch(ingest, model, optimizer, criterion, every=1)
    hooks = len(model[0]._forward_hooks)
    gen = torch.Generator().manual_seed(4)
    for _ in range(5):
        loss = criterion(model(torch.randn(8, 8, generator=gen)), torch.zeros(8, 4))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert monitor._classes is not None and monitor._classes.disabled
    assert len(model[0]._forward_hooks) == hooks - 1  # the monitor's own hook stays
    monitor.finish()
    assert ingest.records("classes") == []


def test_errors_in_class_statistics_never_reach_the_loop(
    ingest: Ingest, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("device lost")

    monkeypatch.setattr(ClassAccumulator, "add", broken)
    model, criterion = mlp(), nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with caplog.at_level(logging.WARNING, logger="collapsewatch"):
        monitor = watch(ingest, model, optimizer, criterion, every=1)
        train(model, optimizer, criterion, steps=4)
        monitor.finish()
    assert ingest.records("classes") == []
    assert len(ingest.records("activation", "0")) == 4  # everything else goes on
    warnings = [r for r in caplog.records if "neural-collapse" in r.getMessage()]
    assert len(warnings) == 1


def test_labels_after_the_step_ended_are_dropped_with_a_hint(
    ingest: Ingest, caplog: pytest.LogCaptureFixture
) -> None:
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = watch(ingest, model, optimizer, classifier=model[2], every=1)
    gen = torch.Generator().manual_seed(5)
    with caplog.at_level(logging.INFO, logger="collapsewatch"):
        for _ in range(2):
            x, y = torch.randn(16, 8, generator=gen), torch.randint(0, 4, (16,), generator=gen)
            # a hand-written loss: no F.cross_entropy call gives the labels away
            loss = -model(x).log_softmax(-1).gather(1, y[:, None]).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            monitor.step(loss=loss, labels=y)  # too late: the step ended in optimizer.step()
        monitor.finish()
    assert ingest.records("classes") == []
    assert any("before optimizer.step()" in r.getMessage() for r in caplog.records)


def test_evaluation_forwards_are_not_counted(ingest: Ingest) -> None:
    model, criterion = mlp(), nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = watch(ingest, model, optimizer, criterion, every=1)
    gen = torch.Generator().manual_seed(6)
    for _ in range(2):
        x, y = torch.randn(16, 8, generator=gen), torch.randint(0, 4, (16,), generator=gen)
        model.eval()
        with torch.no_grad():
            criterion(model(torch.randn(64, 8)), torch.randint(0, 4, (64,)))
        model.train()
        loss = criterion(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    monitor.finish()
    assert [vec(r.stats["n"]).sum() for r in ingest.records("classes")] == [16, 16]
