"""``torch.compile``: unsampled steps run the compiled graph untouched; sampled steps run
eagerly (dynamo's ``force_eager`` stance), so the hooks and the function mode never enter a
compiled region. Graph breaks, compiled frames and recompiles are counted with dynamo's own
counters, on a nanoGPT-like model (SDPA, functional ReLU, a functional loss)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch._dynamo
import torch.nn.functional as F
from torch import nn
from torch._dynamo.utils import counters

import collapsewatch
from tests.sdk.helpers import SERVER, Ingest
from tests.sdk.test_classes import vec
from tests.sdk.test_discovery import TinyGPT

STEPS = 12
EVERY = 4


@pytest.fixture(autouse=True)
def _fresh_dynamo() -> None:
    torch._dynamo.reset()
    counters.clear()


def _breaks() -> int:
    return sum(counters["graph_break"].values())


def _train(
    ingest: Ingest, compile_model: bool, step_fn: str = "model"
) -> tuple[list[dict[str, int]], collapsewatch.Monitor]:
    """Train TinyGPT; per step: graph breaks, frames compiled, whether it was sampled."""
    torch.manual_seed(0)
    model = TinyGPT()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    monitor = collapsewatch.watch(
        model, opt, every=EVERY, server=SERVER, http_client=ingest.client()
    )
    forward: Callable[..., torch.Tensor] = model
    if compile_model:
        forward = torch.compile(model, backend="eager") if step_fn == "model" else model

    def loss_of(idx: torch.Tensor) -> torch.Tensor:
        logits = forward(idx[:, :-1])
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), idx[:, 1:].reshape(-1))

    if compile_model and step_fn == "loss":
        loss_of = torch.compile(loss_of, backend="eager")
    gen = torch.Generator().manual_seed(1)
    steps = []
    for _ in range(STEPS):
        idx = torch.randint(0, 32, (4, 17), generator=gen)
        before, frames = _breaks(), counters["frames"]["total"]
        sampled = monitor.sampled
        loss = loss_of(idx)
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps.append(
            {
                "sampled": sampled,
                "breaks": _breaks() - before,
                "frames": counters["frames"]["total"] - frames,
            }
        )
    monitor.finish()
    return steps, monitor


@pytest.mark.parametrize("what", ["model", "loss"])
def test_no_graph_break_and_no_recompile_on_any_step(ingest: Ingest, what: str) -> None:
    """``what``: the model compiled, or a function computing the model and its loss."""
    steps, monitor = _train(ingest, compile_model=True, step_fn=what)
    assert [s["sampled"] for s in steps] == [i % EVERY == 0 for i in range(STEPS)]
    assert sum(s["breaks"] for s in steps) == 0, steps
    # compiled once, on the first unsampled step (step 0 ran eagerly); never again
    assert [s["frames"] for s in steps] == [0, 1] + [0] * (STEPS - 2), steps
    assert "recompiles" not in counters or not counters["recompiles"]
    assert monitor.stats["sampled_steps"] == STEPS // EVERY


def test_compiled_and_eager_runs_record_the_same_statistics() -> None:
    eager, compiled = Ingest(), Ingest()
    _train(eager, compile_model=False)
    _train(compiled, compile_model=True)
    a = {(r.probe, r.step): r.stats for r in eager.records(kind="activation")}
    b = {(r.probe, r.step): r.stats for r in compiled.records(kind="activation")}
    assert a.keys() == b.keys() and len(a) > 0
    for key in a:
        np.testing.assert_allclose(vec(b[key]["sumsq"]), vec(a[key]["sumsq"]), rtol=1e-4)
    attention = [r for r in compiled.records(kind="attention") if r.step == 8]
    assert attention, "SDPA is read on the sampled steps of the compiled model"


def test_a_criterion_module_inside_a_compiled_function_breaks_nothing(ingest: Ingest) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    crit = nn.CrossEntropyLoss()
    monitor = collapsewatch.watch(
        model, opt, crit, every=EVERY, server=SERVER, http_client=ingest.client()
    )
    step = torch.compile(lambda x, y: crit(model(x), y), backend="eager")
    x, y = torch.randn(8, 16), torch.randint(0, 4, (8,))
    for _ in range(STEPS):
        loss = step(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    monitor.finish()
    assert _breaks() == 0 and counters["frames"]["total"] == 1
    # the loss is read on the sampled (eager) steps; in the compiled ones the hook is a no-op
    loss = ingest.records(kind="loss")
    assert [r.step for r in loss] == [0, 4, 8] and {r.stats["count"] for r in loss} == {1}
