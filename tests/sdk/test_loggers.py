"""The explicit loggers' cadences and guarantees (collapsewatch.probes.explicit), on a real training
loop sending to a fake ingest endpoint: in-loop loggers reduce on sampled steps only,
evaluation loggers on every call, calls of one name at one step add up, errors never reach
the caller. Each family's statistics are checked against brute force in tests/server."""

from __future__ import annotations

import logging

import pytest
import torch

import collapsewatch
from collapsewatch.probes.explicit import MAX_PENDING
from collapsewatch.schemas import ProbeKind
from tests.sdk.helpers import SERVER, Ingest, mlp, one_step, watched


def test_evaluations_are_recorded_at_every_call_and_add_up_within_a_step(ingest: Ingest) -> None:
    model, optimizer, monitor = watched(ingest, every=4)
    for step in range(10):
        one_step(model, optimizer)  # the step counter is now step + 1
        if step in (2, 5):  # steps 3 and 6, neither of them sampled
            for batch in range(3):  # a validation set of three batches
                monitor.log_eval("val", torch.tensor(10.0 * (batch + 1)), 5 + batch)
    monitor.finish()

    records = ingest.records("eval", "val")
    assert [r.step for r in records] == [3, 6]
    for record in records:
        assert record.stats == {"nll_sum": 60.0, "tokens": 18.0}
    probes = {p.name: p.kind for p in ingest.batches[-1].run.probes}
    assert probes["val"] == ProbeKind.eval


def test_an_evaluation_is_sent_when_its_step_ends(ingest: Ingest) -> None:
    model, optimizer, monitor = watched(ingest, every=1000)
    one_step(model, optimizer)  # step 0, sampled
    before = monitor.stats["records"]
    monitor.log_eval("val", 3.0, 2)
    assert monitor.stats["records"] == before  # no host copy in the middle of a step
    one_step(model, optimizer)  # step 1 ends, unsampled: the evaluation is handed over now
    assert monitor.stats["records"] == before + 1
    monitor.finish()
    (record,) = ingest.records("eval")
    assert record.step == 1 and record.stats["nll_sum"] == 3.0


def test_evaluations_without_steps_are_copied_in_batches_and_at_finish(ingest: Ingest) -> None:
    model = mlp()
    monitor = collapsewatch.watch(model, server=SERVER, http_client=ingest.client())
    for i in range(MAX_PENDING + 10):
        monitor.log_eval(f"set{i}", float(i), 1)
    monitor.finish()
    records = ingest.records("eval")
    assert len(records) == MAX_PENDING + 10
    assert sorted(r.stats["nll_sum"] for r in records) == [float(i) for i in range(266)]


def test_logger_errors_are_logged_once_and_never_raised(
    ingest: Ingest, caplog: pytest.LogCaptureFixture
) -> None:
    model, optimizer, monitor = watched(ingest, every=1)
    with caplog.at_level(logging.WARNING, logger="collapsewatch"):
        for _ in range(3):
            monitor.log_eval("val", torch.ones(3), 4)  # not one number
        monitor.log_eval("", 1.0, 1)  # no name
        monitor.log_eval("val", 2.0, 4)  # a good call still counts
        monitor.log_scalar("twice", 1.0)
        monitor.log_eval("val", 1.0, 1)
    one_step(model, optimizer)
    monitor.finish()
    warnings = [r.getMessage() for r in caplog.records if "logger 'val'" in r.getMessage()]
    assert len(warnings) == 1 and "must be one number" in warnings[0]
    (record,) = ingest.records("eval", "val")
    assert record.stats == {"nll_sum": 3.0, "tokens": 5.0}


def test_a_name_keeps_its_kind(ingest: Ingest, caplog: pytest.LogCaptureFixture) -> None:
    model, optimizer, monitor = watched(ingest, every=1)
    with caplog.at_level(logging.WARNING, logger="collapsewatch"):
        monitor.log_eval("x", 1.0, 1)
        monitor.log_samples("x", torch.randn(4, 2))
    one_step(model, optimizer)
    monitor.finish()
    assert any("already used by the eval logger" in r.getMessage() for r in caplog.records)
    assert [r.kind for r in ingest.records(probe="x")] == [ProbeKind.eval]


def test_a_disabled_monitor_ignores_every_logger() -> None:
    monitor = collapsewatch.watch(mlp(), enabled=False)
    t = torch.randn(2, 3, 4, 4).softmax(-1)
    monitor.log_attention("a", t)
    monitor.log_codes("c", torch.tensor([1, 2]), 4)
    monitor.log_posterior("p", torch.zeros(2, 3), torch.zeros(2, 3))
    monitor.log_routing("r", torch.zeros(5, 4))
    monitor.log_tokens("t", torch.tensor([[1, 2, 3]]))
    monitor.log_eval("e", 1.0, 1)
    monitor.log_samples("s", torch.zeros(3, 2))
    monitor.log_state("h", torch.zeros(1, 2, 3), [1, 2])
    monitor.finish()
    assert not monitor.enabled


def test_a_logger_cannot_take_a_watched_layers_name(
    ingest: Ingest, caplog: pytest.LogCaptureFixture
) -> None:
    """The server keeps one probe per name: codes logged as "0" (the first Linear) would land
    under the layer's activation probe. Refused, logged once; another name works."""
    model, optimizer, monitor = watched(ingest, every=1)
    with caplog.at_level(logging.WARNING, logger="collapsewatch"):
        for _ in range(2):
            monitor.log_codes("0", torch.tensor([1, 2, 2]), 4)
            monitor.log_codes("codes", torch.tensor([1, 2, 2]), 4)
            one_step(model, optimizer)
    monitor.finish()
    refused = [r for r in caplog.records if "name of a watched layer" in r.getMessage()]
    assert len(refused) == 1
    assert [r.kind for r in ingest.records(probe="0")] == [ProbeKind.activation] * 2
    assert [r.step for r in ingest.records("codes", "codes")] == [0, 1]
    assert [p.name for p in ingest.batches[-1].run.probes].count("0") == 1
