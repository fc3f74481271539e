"""``log_samples`` and ``log_state`` on a real training loop sending to a fake ingest endpoint:
every call is recorded at its step (calls of one step add up), the reference of
``log_samples`` is remembered across records, bad input is logged once and never raised, and
nothing of the user's tensors is kept. The statistics themselves are checked against brute
force in tests/server/test_indicators_samples_state.py."""

from __future__ import annotations

import gc
import logging
import math
import weakref

import pytest
import torch
from torch import nn

import collapsewatch
from collapsewatch.schemas import ProbeKind
from tests.sdk.helpers import SERVER, Ingest, one_step, watched


def pairs(n: int) -> float:
    return n * (n - 1) / 2


def test_samples_are_recorded_at_every_call_and_the_reference_is_remembered(
    ingest: Ingest,
) -> None:
    model, optimizer, monitor = watched(ingest, every=4)
    g = torch.Generator().manual_seed(0)
    real = torch.randn(100, 3, 4, generator=g)
    for step in range(10):
        one_step(model, optimizer)  # the step counter is now step + 1
        if step == 2:  # step 3: two calls, one with real samples
            monitor.log_samples("G", model(torch.randn(30, 8, generator=g)).reshape(30, 2, 2))
            monitor.log_samples("G", torch.randn(20, 2, 2, generator=g), reference=real[:, :2, :2])
        if step == 5:  # step 6: no reference of its own
            monitor.log_samples("G", torch.randn(50, 4, generator=g))
    monitor.finish()

    first, second = ingest.records("samples", "G")
    assert (first.step, second.step) == (3, 6)
    assert first.stats["n"] == 50.0 and first.stats["pairs"] == pairs(30) + pairs(20)
    assert second.stats["n"] == 50.0 and second.stats["pairs"] == pairs(50)
    assert first.stats["ref_pairs"] == pairs(100) == second.stats["ref_pairs"]
    for key in ("ref_pair_dist", "ref_cov_n", "ref_eig"):
        assert second.stats[key] == first.stats[key], key
    assert len(first.stats["eig"]) == 4 and first.stats["cov_n"] == 50.0
    probes = {p.name: p.kind for p in ingest.batches[-1].run.probes}
    assert probes["G"] == ProbeKind.samples


def test_a_remembered_reference_of_another_shape_is_not_used(ingest: Ingest) -> None:
    model, optimizer, monitor = watched(ingest, every=1)
    monitor.log_samples("G", torch.randn(10, 5), reference=torch.randn(12, 5))
    one_step(model, optimizer)
    monitor.log_samples("G", torch.randn(10, 6))  # the generator's output changed size
    one_step(model, optimizer)
    monitor.finish()
    first, second = ingest.records("samples", "G")
    assert first.stats["ref_pairs"] == pairs(12)
    assert "ref_pairs" not in second.stats and "ref_pair_dist" not in second.stats


def test_states_are_recorded_at_every_call_and_add_up_within_a_step(ingest: Ingest) -> None:
    model, optimizer, monitor = watched(ingest, every=1000)
    gru = nn.GRU(3, 5, batch_first=True)
    with torch.no_grad():
        h, _ = gru(torch.randn(2, 40, 3))
    one_step(model, optimizer)
    monitor.log_state("rnn", h[:, [0, 1, 3, 7]], [0, 1, 3, 7], train_length=8)
    monitor.log_state("rnn", h[0, [15, 31, 39]], torch.tensor([15, 31, 39]), train_length=8)
    one_step(model, optimizer)
    monitor.log_state("rnn", h[:, [39]], range(39, 40))
    monitor.finish()

    first, second = ingest.records("state", "rnn")
    assert (first.step, second.step) == (1, 2)
    assert first.stats["count"][:7] == [4.0, 2.0, 2.0, 1.0, 1.0, 1.0, 0.0]  # 31: 4, 39: 5
    assert first.stats["train_length"] == 8.0
    assert "train_length" not in second.stats and second.stats["count"][5] == 2.0
    want = float(h[:, 39].norm(dim=-1).sum())
    assert second.stats["norm_sum"][5] == pytest.approx(want, rel=1e-6)
    assert second.stats["max_abs"][5] == pytest.approx(float(h[:, 39].abs().max()), rel=1e-6)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: m.log_samples("G", [[1.0, 2.0]]), "must be a tensor"),
        (lambda m: m.log_samples("G", torch.zeros(0, 3)), "is empty"),
        (lambda m: m.log_samples("G", torch.ones(4, 3), torch.ones(4, 2)), "reference samples"),
        (lambda m: m.log_samples("G", torch.ones(4, 3), torch.ones(1, 3)), "at least 2"),
        (lambda m: m.log_samples("G", torch.ones(4, 3, dtype=torch.bool)), "real numbers"),
    ],
    ids=["list", "empty", "reference-shape", "one-reference", "bool"],
)
def test_bad_samples_are_logged_once_and_never_raised(
    ingest: Ingest, caplog: pytest.LogCaptureFixture, call: object, message: str
) -> None:
    model, optimizer, monitor = watched(ingest, every=1)
    with caplog.at_level(logging.WARNING, logger="collapsewatch"):
        for _ in range(3):
            call(monitor)  # type: ignore[operator]
        monitor.log_samples("G", torch.ones(4, 3))  # a good call still counts
    one_step(model, optimizer)
    monitor.finish()
    warnings = [r.getMessage() for r in caplog.records if "logger 'G'" in r.getMessage()]
    assert len(warnings) == 1 and message in warnings[0], warnings
    (record,) = ingest.records("samples", "G")
    assert record.stats["n"] == 4.0 and record.stats["pair_dist"] == 0.0


@pytest.mark.parametrize(
    ("hidden", "positions", "train_length", "message"),
    [
        (torch.ones(2, 3, 4), [0, 1], None, "2 positions for 3 states"),
        (torch.ones(2, 3, 4), [0, -1, 2], None, "non-negative"),
        (torch.ones(3, 4), torch.tensor([0, 1, 2**40]), None, "below 2^32"),
        (torch.ones(3, 4), torch.tensor([0.0, 1.0, 2.0]), None, "integer tensor"),
        (torch.ones(3, 4), [0, 1, 2.5], None, "must be ints"),
        (torch.ones(4), [0, 1, 2, 3], None, "[batch, P, dim]"),
        (torch.ones(3, 4), [0, 1, 2], 0, "positive int"),
        (torch.ones(3, 4), [0, 1, 2], 16, "differs from 8"),
    ],
    ids=["count", "negative", "too-far", "float", "float-in-list", "1-d", "length", "conflict"],
)
def test_bad_states_are_logged_once_and_never_raised(
    ingest: Ingest,
    caplog: pytest.LogCaptureFixture,
    hidden: torch.Tensor,
    positions: object,
    train_length: int | None,
    message: str,
) -> None:
    model, optimizer, monitor = watched(ingest, every=1)
    with caplog.at_level(logging.WARNING, logger="collapsewatch"):
        monitor.log_state("h", torch.ones(1, 2, 4), [0, 1], train_length=8)
        for _ in range(3):
            monitor.log_state("h", hidden, positions, train_length=train_length)  # type: ignore[arg-type]
    one_step(model, optimizer)
    monitor.finish()
    warnings = [r.getMessage() for r in caplog.records if "logger 'h'" in r.getMessage()]
    assert len(warnings) == 1 and message in warnings[0], warnings
    (record,) = ingest.records("state", "h")
    assert record.stats["count"][0] == 2.0 and sum(record.stats["count"]) == 2.0  # the good call


def test_no_reference_to_the_user_tensors_is_kept(ingest: Ingest) -> None:
    """After the calls, the user's tensors can be freed and overwritten: nothing the SDK keeps
    (the open records, the remembered reference) points at them or shares their storage."""
    model, optimizer, monitor = watched(ingest, every=1000)
    g = torch.Generator().manual_seed(1)
    fake, real = torch.randn(40, 6, generator=g), torch.randn(30, 6, generator=g)
    hidden = torch.randn(2, 4, 3, generator=g)
    expected = {
        "pair_dist": float(torch.pdist(fake).sum()),
        "ref_pair_dist": float(torch.pdist(real).sum()),
        "norm_sum": float(hidden.norm(dim=-1).sum()),
    }
    refs = [weakref.ref(t) for t in (fake, real, hidden)]
    one_step(model, optimizer)
    monitor.log_samples("G", fake, reference=real)
    monitor.log_state("h", hidden, [1, 1, 1, 1])
    for t in (fake, real, hidden):
        t.fill_(math.nan)  # a user reusing its buffers must not change what is sent
    del fake, real, hidden, t
    gc.collect()
    assert all(r() is None for r in refs)
    one_step(model, optimizer)  # the step ends: the records are copied and sent
    monitor.log_samples("G", torch.randn(40, 6, generator=g))  # uses the remembered reference
    monitor.finish()

    first, second = ingest.records("samples", "G")
    assert first.stats["pair_dist"] == pytest.approx(expected["pair_dist"], rel=1e-5)
    assert first.stats["ref_pair_dist"] == pytest.approx(expected["ref_pair_dist"], rel=1e-5)
    assert second.stats["ref_pair_dist"] == first.stats["ref_pair_dist"]
    (state,) = ingest.records("state", "h")
    assert state.stats["norm_sum"][0] == pytest.approx(expected["norm_sum"], rel=1e-6)


def test_a_gan_loop_logs_its_samples_through_the_two_lines(ingest: Ingest) -> None:
    """The generator watched with its optimizer; samples logged every 5 steps with real ones."""
    torch.manual_seed(2)
    gen = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2))
    disc = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 1))
    opt_g = torch.optim.Adam(gen.parameters(), lr=1e-3)
    opt_d = torch.optim.Adam(disc.parameters(), lr=1e-3)
    bce = nn.BCEWithLogitsLoss()
    monitor = collapsewatch.watch(
        gen, opt_g, bce, server=SERVER, http_client=ingest.client(), every=1000
    )
    for step in range(20):
        real = torch.randn(32, 2) + 3.0
        fake = gen(torch.randn(32, 2))
        loss_d = nn.functional.binary_cross_entropy_with_logits(
            torch.cat([disc(real), disc(fake.detach())]),
            torch.cat([torch.ones(32, 1), torch.zeros(32, 1)]),
        )
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        loss_g = bce(disc(fake), torch.ones(32, 1))
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
        if step % 5 == 4:
            with torch.no_grad():
                monitor.log_samples("generator", gen(torch.randn(64, 2)), reference=real)
    monitor.finish()
    records = ingest.records("samples", "generator")
    assert [r.step for r in records] == [5, 10, 15, 20]
    assert all(r.stats["pairs"] == pairs(64) and r.stats["ref_pairs"] == pairs(32) for r in records)
