"""``log_codes`` and ``log_posterior`` on a real training loop against a fake ingest endpoint:
records on sampled steps only, holding the sums of the step's calls (checked against the raw
tensors), nothing kept of the user's tensors, bad input logged once per name and never raised.
The indicators computed from these records are checked against brute force in
tests/server/test_indicators_latents.py."""

from __future__ import annotations

import gc
import logging
import weakref

import pytest
import torch
from torch import nn

import collapsewatch
from collapsewatch.probes.latents import CodeAccumulator, PosteriorAccumulator
from collapsewatch.schemas import ProbeKind
from tests.sdk.helpers import SERVER, Ingest

K = 16
LATENT = 4


class TinyVAE(nn.Module):
    """Enough of a latent-variable model: an encoder to (mu, logvar) and codes from mu."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.encoder = nn.Linear(8, 2 * LATENT)
        self.decoder = nn.Linear(LATENT, 8)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        return self.decoder(mu), mu, logvar


def codes_of(mu: torch.Tensor) -> torch.Tensor:
    """A code per row and latent pair, in 0..K-1 ([batch, 2]), some of them -1 (padding)."""
    q = (mu.detach() * 4).round().long().clamp(-2, 3) + 2  # 0..5
    idx = torch.stack([q[:, 0] * 6 + q[:, 1], q[:, 2] + 6 * q[:, 3]], dim=1) % (K + 1) - 1
    return idx


def train(
    ingest: Ingest, steps: int, every: int, calls: int = 2
) -> dict[int, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]:
    """``calls`` forwards a step (gradient accumulation), each logged; returns what was logged
    per step (copies), so the test can sum it by hand."""
    model = TinyVAE()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    monitor = collapsewatch.watch(
        model, optimizer, server=SERVER, http_client=ingest.client(), every=every
    )
    g = torch.Generator().manual_seed(1)
    logged: dict[int, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {}
    for step in range(steps):
        optimizer.zero_grad()
        for _ in range(calls):
            x = torch.randn(8, 8, generator=g)
            x_hat, mu, logvar = model(x)
            indices = codes_of(mu)
            monitor.log_codes("quantizer", indices, K)
            monitor.log_posterior("z", mu, logvar)
            logged.setdefault(step, []).append(
                (indices.clone(), mu.detach().clone(), logvar.detach().clone())
            )
            loss = (x_hat - x).square().mean() + 0.1 * (mu.square() + logvar.exp() - logvar).mean()
            loss.backward()
        monitor.step(loss=loss)
        optimizer.step()
    monitor.finish()
    return logged


def test_codes_and_posteriors_are_recorded_on_sampled_steps_with_the_sums_of_their_calls(
    ingest: Ingest,
) -> None:
    logged = train(ingest, steps=10, every=4)
    codes, posts = ingest.records("codes", "quantizer"), ingest.records("posterior", "z")
    assert [r.step for r in codes] == [r.step for r in posts] == [0, 4, 8]
    kinds = {p.name: p.kind for p in ingest.batches[-1].run.probes}
    assert kinds["quantizer"] == ProbeKind.codes and kinds["z"] == ProbeKind.posterior

    for record in codes:
        flat = torch.cat([i.reshape(-1) for i, _, _ in logged[record.step]])
        valid = flat[(flat >= 0) & (flat < K)]
        assert record.stats["codes"] == K
        assert record.stats["counts"] == torch.bincount(valid, minlength=K).double().tolist()
        assert record.stats["n"] == valid.numel()
        assert record.stats["out_of_range"] == flat.numel() - valid.numel() > 0
    for record in posts:
        mu = torch.cat([m for _, m, _ in logged[record.step]]).double()
        lv = torch.cat([v for _, _, v in logged[record.step]]).double()
        kl = 0.5 * (mu.square() + lv.exp() - 1 - lv)
        assert record.stats["n"] == mu.shape[0] == 16 and record.stats["dims"] == LATENT
        for key, want in (
            ("mu_sum", mu.sum(0)),
            ("mu_sq", mu.square().sum(0)),
            ("kl_sum", kl.sum(0)),
        ):
            # squares and KL terms in float32 on the device (summed in float64): rel 1e-6
            assert record.stats[key] == pytest.approx(want.tolist(), rel=1e-6, abs=1e-12), key


def test_unsampled_steps_reduce_nothing(ingest: Ingest, caplog: pytest.LogCaptureFixture) -> None:
    """Off the sampled steps the loggers return before looking at their arguments: even a bad
    call costs nothing and says nothing."""
    model = TinyVAE()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    monitor = collapsewatch.watch(
        model, optimizer, server=SERVER, http_client=ingest.client(), every=1000
    )
    with caplog.at_level(logging.WARNING, logger="collapsewatch"):
        for step in range(3):  # step 0 is sampled, 1 and 2 are not
            _, mu, logvar = model(torch.randn(4, 8))
            monitor.log_codes("quantizer", codes_of(mu), K)
            monitor.log_posterior("z", mu, logvar)
            if step > 0:
                monitor.log_codes("quantizer", torch.tensor([0.5]), K)
                monitor.log_posterior("z", mu, logvar[:, :1])
            mu.sum().backward()
            optimizer.step()
    monitor.finish()
    assert [r.step for r in ingest.records("codes")] == [0]
    assert [r.step for r in ingest.records("posterior")] == [0]
    assert not [r for r in caplog.records if "logger" in r.getMessage()]


def test_bad_input_is_logged_once_per_name_and_never_raised(
    ingest: Ingest, caplog: pytest.LogCaptureFixture
) -> None:
    model = TinyVAE()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    monitor = collapsewatch.watch(
        model, optimizer, server=SERVER, http_client=ingest.client(), every=1
    )
    mu, logvar = torch.zeros(5, 3), torch.zeros(5, 3)
    with caplog.at_level(logging.WARNING, logger="collapsewatch"):
        monitor.log_codes("q", torch.tensor([1, 2, 3]), 8)
        monitor.log_codes("q", torch.tensor([1, 2]), 16)  # K changes within the step
        monitor.log_codes("q", torch.tensor([1.0, 2.0]), 8)  # float indices
        monitor.log_codes("q", torch.tensor([4]), 8)
        monitor.log_codes("f", torch.tensor([0.0]), 8)  # another name: its own warning
        monitor.log_posterior("z", mu, logvar[:, :2])  # mismatched shapes
        monitor.log_posterior("z", mu[0], logvar[0])  # no batch dimension
        monitor.log_posterior("z", mu + 1, logvar)
        (mu + torch.zeros(5, 3, requires_grad=True)).sum().backward()
        optimizer.step()
    monitor.finish()
    warnings = [r.getMessage() for r in caplog.records if "logger" in r.getMessage()]
    assert len(warnings) == 3, warnings
    assert "codes logger 'q'" in warnings[0] and "num_codes changed within a step" in warnings[0]
    assert "codes logger 'f'" in warnings[1] and "integer tensor" in warnings[1]
    assert "posterior logger 'z'" in warnings[2] and "same shape" in warnings[2]
    (codes,) = ingest.records("codes", "q")
    assert codes.stats["n"] == 4 and codes.stats["codes"] == 8  # the good calls, whole
    (post,) = ingest.records("posterior", "z")
    assert post.stats["n"] == 5 and post.stats["mu_sum"] == [5.0, 5.0, 5.0]
    assert ingest.records("codes", "f") == []


def test_accumulators_keep_no_reference_to_the_users_tensors() -> None:
    indices = torch.randint(0, 10, (64, 4))
    mu, logvar = torch.randn(64, 4, requires_grad=True), torch.randn(64, 4)
    refs = [weakref.ref(t) for t in (indices, mu, logvar)]
    codes, post = CodeAccumulator(), PosteriorAccumulator()
    with torch.no_grad():
        codes.add(indices, 10)
        post.add(mu, logvar)
    del indices, mu, logvar
    gc.collect()
    assert all(r() is None for r in refs)
    assert codes.counts is not None and codes.counts.shape == (11,)
    assert post.mu_sum is not None and not post.mu_sum.requires_grad


def test_indices_of_any_integer_type_and_shape_count_alike() -> None:
    want = None
    for dtype in (torch.uint8, torch.int16, torch.int32, torch.int64):
        acc = CodeAccumulator()
        acc.add(torch.tensor([[1, 2], [2, 200]], dtype=dtype), 4)  # 200: out of range
        acc.add(torch.tensor(3, dtype=dtype), 4)  # a 0-d tensor is one index
        assert acc.counts is not None
        got = acc.counts.tolist()
        assert got == [0.0, 1.0, 2.0, 1.0, 1.0], dtype
        want = want or got
        assert got == want
