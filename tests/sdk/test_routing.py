"""``monitor.log_routing`` on a real training loop of a small top-2 MoE sending to a fake ingest
endpoint: records on sampled steps only, calls of a step add up, bad input is logged once and
never raised, and nothing of the caller's tensors is kept. The statistics themselves are checked
against brute force in tests/server/test_indicators_routing.py."""

from __future__ import annotations

import gc
import logging
import weakref

import pytest
import torch
from torch import nn

import collapsewatch
from collapsewatch.probes.routing import RoutingAccumulator
from collapsewatch.schemas import ProbeKind
from tests.sdk.helpers import SERVER, Ingest

E = 4


class TinyMoE(nn.Module):
    """Top-2 routing over 4 linear experts; returns the class logits and the router logits."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.router = nn.Linear(8, E)
        self.experts = nn.Parameter(torch.randn(E, 8, 8) / 8**0.5)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.router(x)
        gate, idx = logits.softmax(-1).topk(2, dim=-1)
        y = torch.einsum("nd,nkde->nke", x, self.experts[idx])
        return self.head((gate[..., None] * y).sum(1)), logits


class Loop:
    """A watched classification loop with gradient accumulation over ``micro_batches``."""

    def __init__(self, ingest: Ingest, every: int) -> None:
        self.model = TinyMoE()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-2)
        self.monitor = collapsewatch.watch(
            self.model, self.optimizer, server=SERVER, http_client=ingest.client(), every=every
        )
        self.g = torch.Generator().manual_seed(1)

    def train(self, steps: int, micro_batches: int = 1, log: bool = True) -> list[torch.Tensor]:
        """Returns every router logits tensor (the test keeps them; the SDK must not)."""
        criterion = nn.CrossEntropyLoss()
        seen = []
        for _ in range(steps):
            self.optimizer.zero_grad()
            for _ in range(micro_batches):
                x = torch.randn(16, 8, generator=self.g)
                out, logits = self.model(x)
                if log:
                    self.monitor.log_routing("moe", logits, k=2, capacity=10)
                seen.append(logits.detach().clone())
                y = torch.randint(0, 3, (16,), generator=self.g)
                criterion(out, y).backward()
            self.optimizer.step()
        return seen


def test_records_on_sampled_steps_only_with_the_calls_of_a_step_added(ingest: Ingest) -> None:
    loop = Loop(ingest, every=4)
    seen = loop.train(steps=10, micro_batches=2)
    loop.monitor.finish()

    records = ingest.records("routing", "moe")
    assert [r.step for r in records] == [0, 4, 8]
    for record in records:
        calls = seen[2 * record.step : 2 * record.step + 2]  # the two micro-batches
        chosen = torch.cat([c.topk(2, dim=1).indices for c in calls])
        want = torch.bincount(chosen.reshape(-1), minlength=E).double()
        assert record.stats["counts"] == want.tolist()
        assert record.stats["tokens"] == 32.0 and record.stats["k"] == 2.0
        assert record.stats["experts"] == float(E)
        per_call = [
            torch.bincount(c.topk(2, dim=1).indices.reshape(-1), minlength=E) for c in calls
        ]
        assert record.stats["dropped"] == float(sum((n - 10).clamp_min(0).sum() for n in per_call))
        probs = torch.cat(calls).softmax(-1).sum(0)
        assert record.stats["prob_sum"] == pytest.approx(probs.tolist(), rel=1e-6)
    probes = {p.name: p.kind for p in ingest.batches[-1].run.probes}
    assert probes["moe"] == ProbeKind.routing


def test_unsampled_steps_do_not_look_at_the_input(
    ingest: Ingest, caplog: pytest.LogCaptureFixture
) -> None:
    loop = Loop(ingest, every=1000)
    loop.train(steps=1)  # step 0, sampled
    with caplog.at_level(logging.WARNING, logger="collapsewatch"):
        for _ in range(5):  # steps 1..5: not sampled, so not even validated
            loop.monitor.log_routing("moe", "not a tensor", k=0)  # type: ignore[arg-type]
            loop.train(steps=1, log=False)
    loop.monitor.finish()
    assert not [r for r in caplog.records if "routing logger" in r.getMessage()]
    assert [r.step for r in ingest.records("routing")] == [0]


def test_bad_input_is_logged_once_and_never_raised(
    ingest: Ingest, caplog: pytest.LogCaptureFixture
) -> None:
    loop = Loop(ingest, every=1)
    monitor = loop.monitor
    x = torch.randn(6, E)
    with caplog.at_level(logging.WARNING, logger="collapsewatch"):
        monitor.log_routing("moe", x, k=E + 1)  # more experts a token than there are
        monitor.log_routing("moe", x[:, :1])  # one expert
        monitor.log_routing("moe", torch.zeros(6, E, dtype=torch.long))
        monitor.log_routing("moe", x, k=2)  # a good call still counts
        monitor.log_routing("moe", x, k=1)  # k changed within the step
        monitor.log_routing("moe", x, k=2, capacity=3)  # a capacity on some calls only
        loop.train(steps=1, log=False)
    monitor.finish()
    warnings = [r.getMessage() for r in caplog.records if "routing logger 'moe'" in r.getMessage()]
    assert len(warnings) == 1 and "k must be 1..4, got 5" in warnings[0]
    (record,) = ingest.records("routing", "moe")
    assert record.stats["tokens"] == 6.0 and sum(record.stats["counts"]) == 12.0
    assert "dropped" not in record.stats


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        ((torch.randn(5),), ValueError, "must be [tokens, experts], got shape (5,)"),
        ((torch.randn(5, 1),), ValueError, "at least 2 experts, got 1"),
        ((torch.ones(5, 3, dtype=torch.int32),), TypeError, "floating point"),
        (([[0.1, 0.2]],), TypeError, "must be a tensor, not list"),
        ((torch.randn(5, 3), 0), ValueError, "k must be 1..3, got 0"),
        ((torch.randn(5, 3), True), TypeError, "k must be an int, not bool"),
        ((torch.randn(5, 3), 1, 0), ValueError, "capacity must be >= 1, got 0"),
        ((torch.randn(5, 3), 1, 2.5), TypeError, "capacity must be an int, not float"),
    ],
)
def test_the_accumulator_says_what_is_wrong(args: tuple, error: type, message: str) -> None:
    with pytest.raises(error) as info:
        RoutingAccumulator().add(*args)
    assert message in str(info.value)


def test_a_failed_call_leaves_nothing_and_no_reference_is_kept() -> None:
    acc = RoutingAccumulator()
    x = torch.randn(10, 3, 4)  # leading dims are tokens
    ref = weakref.ref(x)
    acc.add(x, 2, 5)
    with pytest.raises(ValueError, match="earlier calls had 4 experts with k=2"):
        acc.add(torch.randn(7, 5), 2, 5)
    assert acc.tokens == 30 and acc.counts is not None and int(acc.counts.sum()) == 60
    del x
    gc.collect()
    assert ref() is None, "the accumulator keeps a reference to the caller's logits"
