"""Never break the user's own code: optimizer wrappers, closures, loops that never end a step,
two runs on one loss module, mixed precision. Each case trains a real small model."""

from __future__ import annotations

import logging
import math
import tracemalloc

import numpy as np
import pytest
import torch
from torch import nn

import collapsewatch
from collapsewatch.optimizers import REFUSED
from collapsewatch.probes.base import GuardedHook
from collapsewatch.probes.loss import LossProbe
from collapsewatch.probes.step_end import MAX_FORWARDS
from tests.sdk.helpers import SERVER, Ingest, mlp, train
from tests.sdk.test_classes import vec


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_accelerates_optimizer_is_unwrapped_and_counts_updates(ingest: Ingest) -> None:
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=2)
    model = mlp()
    model, opt = accelerator.prepare(model, torch.optim.SGD(model.parameters(), lr=0.05))
    assert not hasattr(opt, "_optimizer_step_pre_hooks")  # the wrapper of the issue
    monitor = collapsewatch.watch(
        model, opt, nn.CrossEntropyLoss(), every=1, server=SERVER, http_client=ingest.client()
    )
    gen = torch.Generator().manual_seed(0)
    for _ in range(8):  # 8 micro-batches, 4 updates
        with accelerator.accumulate(model):
            loss = nn.functional.cross_entropy(
                model(torch.randn(16, 8, generator=gen)), torch.randint(0, 4, (16,), generator=gen)
            )
            accelerator.backward(loss)
            opt.step()
            opt.zero_grad()
    monitor.finish()
    assert monitor.stats["step"] == 4
    updates = ingest.records(kind="parameter", probe="0.weight")
    assert [r.step for r in updates] == [0, 1, 2, 3]
    assert all(r.stats["update_norm"] > 0 for r in updates)


def test_an_optimizer_without_hooks_is_refused_with_no_hook_left(ingest: Ingest) -> None:
    class Homemade:  # steps the weights itself, knows nothing of torch's hooks
        def __init__(self, params: list[nn.Parameter]) -> None:
            self.params = params

        def step(self) -> None:
            for p in self.params:
                p.data -= 0.1 * p.grad

    model = mlp()
    with pytest.raises(ValueError) as refused:
        collapsewatch.watch(
            model, Homemade(list(model.parameters())), server=SERVER, http_client=ingest.client()
        )
    assert str(refused.value) == REFUSED.format(what="Homemade")
    assert _hooks(model) == 0


@pytest.mark.parametrize("make", [torch.optim.LBFGS, torch.optim.SGD])
def test_a_closure_gives_the_statistics_of_its_own_step(ingest: Ingest, make: type) -> None:
    """``optimizer.step(closure)``: the forward and backward run inside ``step``; gradient
    norms are those the closure computed for this step (at its first call), from step 0."""
    model = mlp()
    opt = (
        make(model.parameters(), lr=0.1)
        if make is torch.optim.SGD
        else make(model.parameters(), lr=0.1, max_iter=3)
    )
    crit = nn.CrossEntropyLoss()
    monitor = collapsewatch.watch(
        model, opt, crit, every=1, server=SERVER, http_client=ingest.client()
    )
    gen = torch.Generator().manual_seed(0)
    first_grads: list[float] = []
    for _ in range(4):
        x, y = torch.randn(16, 8, generator=gen), torch.randint(0, 4, (16,), generator=gen)
        calls = 0

        def closure(x: torch.Tensor = x, y: torch.Tensor = y) -> torch.Tensor:
            nonlocal calls
            opt.zero_grad()
            loss = crit(model(x), y)
            loss.backward()
            if calls == 0:
                first_grads.append(model[0].weight.grad.norm().item())
            calls += 1
            return loss

        opt.step(closure)
    monitor.finish()
    grads = [r.stats["grad_norm"] for r in ingest.records(kind="parameter", probe="0.weight")]
    assert len(grads) == 4
    np.testing.assert_allclose(grads, first_grads, rtol=1e-5)
    assert all(r.stats["n"] >= 16 for r in ingest.records(kind="activation", probe="0"))


def test_a_loop_that_never_ends_a_step_is_told_once_and_stays_flat(
    ingest: Ingest, caplog: pytest.LogCaptureFixture
) -> None:
    model = mlp()
    monitor = collapsewatch.watch(model, every=1, server=SERVER, http_client=ingest.client())
    x, y = torch.randn(16, 8), torch.randint(0, 4, (16,))

    def manual_sgd_step() -> None:  # word_language_model's loop: no optimizer, no step()
        model.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.01 * p.grad

    with caplog.at_level(logging.WARNING, logger="collapsewatch"):
        for _ in range(MAX_FORWARDS + 10):
            manual_sgd_step()
        tracemalloc.start()
        for _ in range(200):
            manual_sgd_step()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(400):
            manual_sgd_step()
        grown = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
    told = [m for m in caplog.messages if "no training step ended" in m]
    assert len(told) == 1 and "monitor.step()" in told[0]
    assert _hooks(model) == 0  # the step's hooks are gone: nothing is reduced any more
    assert grown < 64 * 1024, f"memory grew by {grown} bytes over 400 steps"
    monitor.step()  # a step ends at last: sampling goes on
    manual_sgd_step()
    monitor.step()
    monitor.finish()
    assert ingest.records(kind="activation")


def test_two_runs_never_share_one_loss_module(
    ingest: Ingest, caplog: pytest.LogCaptureFixture
) -> None:
    """A GAN's generator and discriminator with one BCE criterion: the second run does not
    hook it (each would count the other's losses) and says how to give it its loss."""
    gen_net, disc = nn.Sequential(nn.Linear(4, 8)), nn.Sequential(nn.Linear(8, 1))
    g_opt = torch.optim.SGD(gen_net.parameters(), lr=0.01)
    d_opt = torch.optim.SGD(disc.parameters(), lr=0.01)
    bce = nn.BCEWithLogitsLoss()
    g_mon = collapsewatch.watch(
        gen_net, g_opt, bce, every=1, server=SERVER, http_client=ingest.client(), run="g"
    )
    with caplog.at_level(logging.WARNING, logger="collapsewatch"):
        d_mon = collapsewatch.watch(
            disc, d_opt, bce, every=1, server=SERVER, http_client=ingest.client(), run="d"
        )
    assert sum("already the criterion of another watched run" in m for m in caplog.messages) == 1
    ours = [h for h in bce._forward_hooks.values() if isinstance(h, GuardedHook)]
    assert len(ours) == 1 and isinstance(ours[0].probe, LossProbe)
    for _ in range(3):
        fake = gen_net(torch.randn(8, 4))
        d_loss = bce(disc(fake.detach()), torch.zeros(8, 1))
        d_opt.zero_grad()
        d_loss.backward()
        d_opt.step()
        d_mon.step(loss=d_loss)
        g_loss = bce(disc(fake), torch.ones(8, 1))
        g_opt.zero_grad()
        g_loss.backward()
        g_opt.step()
    g_mon.finish()
    d_mon.finish()
    d_losses = [
        r for b in ingest.batches if b.run.name == "d" for r in b.records if r.kind == "loss"
    ]
    assert [r.stats["count"] for r in d_losses] == [1, 1, 1]  # its own loss, once a step
    g_mon2 = collapsewatch.watch(gen_net, g_opt, bce, server=SERVER, http_client=ingest.client())
    assert len([h for h in bce._forward_hooks.values() if isinstance(h, GuardedHook)]) == 1
    g_mon2.finish()


def test_bf16_autocast_activations_reduce_in_float32(ingest: Ingest) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    seen: list[torch.Tensor] = []
    model[0].register_forward_hook(lambda m, a, out: seen.append(out.detach()))
    monitor = collapsewatch.watch(
        model, opt, nn.CrossEntropyLoss(), every=1, server=SERVER, http_client=ingest.client()
    )
    x, y = torch.randn(256, 64) * 3, torch.randint(0, 4, (256,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = nn.functional.cross_entropy(model(x).float(), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    monitor.finish()
    out = seen[0]
    assert out.dtype == torch.bfloat16
    stats = ingest.records(kind="activation", probe="0")[0].stats
    rows = out.double()
    unit = rows / rows.norm(dim=1, keepdim=True)
    # float32 sums of the bf16 values: a bf16 matmul would be off by ~1e-3
    np.testing.assert_allclose(vec(stats["sum"]), rows.sum(0).numpy(), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(vec(stats["unit_sum"]), unit.sum(0).numpy(), rtol=1e-5, atol=1e-5)


def test_grad_scaler_steps_show_unscaled_gradients(ingest: Ingest) -> None:
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    monitor = collapsewatch.watch(
        model, opt, nn.CrossEntropyLoss(), every=1, server=SERVER, http_client=ingest.client()
    )
    x, y = torch.randn(16, 8), torch.randint(0, 4, (16,))
    loss = nn.functional.cross_entropy(model(x), y)
    opt.zero_grad()
    scaler.scale(loss).backward()
    scaler.step(opt)  # unscales, then steps: the pre-hook sees the true gradients
    scaler.update()
    monitor.finish()
    grad = ingest.records(kind="parameter", probe="0.weight")[0].stats["grad_norm"]
    assert math.isclose(grad, model[0].weight.grad.norm().item(), rel_tol=1e-5)


def test_train_helper_still_matches_bit_for_bit(ingest: Ingest) -> None:
    """The loss of a watched run is the loss of the same run unwatched."""
    plain = train(mlp(), *_opt_crit(mlp()), steps=1)  # warm the generator path
    model = mlp()
    opt, crit = _opt_crit(model)
    unwatched = train(model, opt, crit, steps=6)
    model = mlp()
    opt, crit = _opt_crit(model)
    monitor = collapsewatch.watch(
        model, opt, crit, every=2, server=SERVER, http_client=ingest.client()
    )
    watched = train(model, opt, crit, steps=6)
    monitor.finish()
    assert plain and watched == unwatched


def _opt_crit(model: nn.Module) -> tuple[torch.optim.Optimizer, nn.Module]:
    return torch.optim.SGD(model.parameters(), lr=0.05), nn.CrossEntropyLoss()
