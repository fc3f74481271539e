"""Attention entropy in the SDK (collapsewatch.probes.attention): the probabilities recomputed for
nn.MultiheadAttention equal the module's own (``need_weights=True, average_attn_weights=False``)
for every input layout and mask it takes; qk_sigma equals the float64 spectral norm; and through
``watch()`` a transformer's attention layers are recorded on sampled training steps only. The
indicators from these statistics are checked against brute force in
tests/server/test_indicators_attention.py.

Tolerances: probabilities atol 1e-6 (float32 recomputation, the scale applied after the product
instead of before); qk_sigma rel 1e-5 (float32 Grams against a float64 SVD).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import collapsewatch
from collapsewatch.probes import attention
from collapsewatch.probes.attention import MAX_QUERIES, MAX_SEQUENCES, mha_probs, qk_sigma
from collapsewatch.schemas import ProbeKind
from tests.sdk.helpers import SERVER, Ingest

E, H = 16, 4
Case = tuple[nn.MultiheadAttention, tuple[Any, ...], dict[str, Any]]


def mha(**kwargs: Any) -> nn.MultiheadAttention:
    torch.manual_seed(0)
    module = nn.MultiheadAttention(E, H, **kwargs)
    if module.bias_k is not None:
        nn.init.normal_(module.bias_k, std=3.0)  # a visible extra key, not lost in the noise
    if module.in_proj_bias is not None:
        nn.init.normal_(module.in_proj_bias, std=0.5)  # xavier leaves it 0: make it count
    return module


def x(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def causal(n: int) -> torch.Tensor:
    return torch.ones(n, n, dtype=torch.bool).triu(1)


def padding(lengths: list[int], s: int) -> torch.Tensor:
    return torch.arange(s)[None, :] >= torch.tensor(lengths)[:, None]


def additive(hidden: torch.Tensor, seed: int = 1) -> torch.Tensor:
    """A float mask: small random biases where allowed, -inf where hidden."""
    return (0.5 * x(*hidden.shape, seed=seed)).masked_fill(hidden, -math.inf)


def self_call(q: torch.Tensor, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    return (q, q, q), kwargs


def case_batch_first() -> Case:
    m = mha(batch_first=True)
    return m, *self_call(x(3, 9, E))


def case_seq_first_3d_float_mask() -> Case:
    m = mha()  # [L, N, E]
    hidden = causal(9).expand(3 * H, 9, 9).clone()
    hidden[1, 4, 2] = True  # one (sequence, head) differs
    return m, *self_call(x(9, 3, E), attn_mask=additive(hidden))


def case_unbatched_bool_masks() -> Case:
    m = mha(batch_first=True)
    pad = torch.tensor([False] * 6 + [True] * 2)
    return m, *self_call(x(8, E), attn_mask=causal(8), key_padding_mask=pad)


def case_2d_bool_mask_and_padding() -> Case:
    m = mha(batch_first=True)
    return m, *self_call(
        x(4, 12, E), attn_mask=causal(12), key_padding_mask=padding([12, 5, 1, 9], 12)
    )


def case_float_masks() -> Case:
    m = mha(batch_first=True)
    pad = torch.zeros(3, 10).masked_fill(padding([10, 6, 3], 10), -math.inf)
    return m, *self_call(x(3, 10, E), attn_mask=additive(causal(10)), key_padding_mask=pad)


def case_3d_bool_mask() -> Case:
    m = mha(batch_first=True)
    hidden = torch.rand(2 * H, 7, 7, generator=torch.Generator().manual_seed(2)) > 0.6
    hidden[..., 0] = False  # every query sees key 0
    return m, *self_call(x(2, 7, E), attn_mask=hidden)


def case_separate_projections_cross_attention() -> Case:
    m = mha(batch_first=True, kdim=10, vdim=6, bias=False)  # _qkv_same_embed_dim False
    key = x(3, 13, 10, seed=1)
    value = x(3, 13, 6, seed=2)
    return m, (x(3, 5, E), key, value), {"key_padding_mask": padding([13, 8, 2], 13)}


def case_bias_kv_and_zero_attention() -> Case:
    m = mha(batch_first=True, add_bias_kv=True, add_zero_attn=True)
    return m, *self_call(x(3, 8, E), attn_mask=causal(8), key_padding_mask=padding([8, 4, 1], 8))


def case_large_batch_is_sampled() -> Case:
    m = mha(batch_first=True)
    return m, *self_call(x(11, 150, E), key_padding_mask=padding([150] * 10 + [30], 150))


def case_minus_1e9_padding() -> Case:
    """A float mask with a large finite negative instead of -inf (a common convention)."""
    m = mha(batch_first=True)
    pad = torch.zeros(2, 9).masked_fill(padding([9, 4], 9), -1e9)
    return m, *self_call(x(2, 9, E), attn_mask=torch.zeros(9, 9), key_padding_mask=pad)


CASES: dict[str, Callable[[], Case]] = {
    name.removeprefix("case_"): fn for name, fn in globals().items() if name.startswith("case_")
}


def recompute(
    module: nn.MultiheadAttention, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[torch.Tensor, torch.Tensor]:
    """mha_probs' sequences joined: the probabilities and where the keys are visible."""
    probs, visible = [], []
    with torch.no_grad():
        for p, v in mha_probs(module, args, kwargs):
            probs.append(p)
            visible.append(torch.ones_like(p, dtype=torch.bool) if v is None else v.expand_as(p))
    return torch.cat(probs), torch.cat(visible)


def sample(weights: torch.Tensor) -> torch.Tensor:
    """The SDK's sample of [N, H, L, S] probabilities, written out: sequences 0, s, 2s, ...
    (s = N // 4, at most 4), query positions floor(i L / m) for i < m = min(L, 64)."""
    if weights.dim() == 3:
        weights = weights[None]
    n, length = weights.shape[0], weights.shape[2]
    seqs = list(range(0, n, max(1, n // MAX_SEQUENCES)))[:MAX_SEQUENCES]
    m = min(length, MAX_QUERIES)
    return weights[seqs][:, :, [i * length // m for i in range(m)]]


@pytest.mark.parametrize("name", list(CASES))
def test_recomputed_probabilities_equal_multihead_attention_own(name: str) -> None:
    module, args, kwargs = CASES[name]()
    with torch.no_grad():
        _, own = module(*args, **kwargs, need_weights=True, average_attn_weights=False)
    got, visible = recompute(module, args, {**kwargs, "need_weights": False})
    want = sample(own)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    # the keys taken as visible are exactly those the module gives a probability (no score
    # here is extreme enough to underflow)
    assert torch.equal(visible, want > 0)


@pytest.mark.parametrize("name", ["seq_first_3d_float_mask", "large_batch_is_sampled"])
def test_sequences_reduced_one_at_a_time_give_the_same_sums(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past CHUNK probabilities the sample is reduced a chunk of sequences at a time (bounded
    memory on long sequences); forcing one sequence per chunk changes nothing."""
    module, args, kwargs = CASES[name]()
    with torch.no_grad():
        _, own = module(*args, **kwargs, need_weights=True, average_attn_weights=False)
    sums = []
    for chunk in (attention.CHUNK, 1):
        monkeypatch.setattr(attention, "CHUNK", chunk)
        acc, probs_acc = attention.AttentionAccumulator(), attention.AttentionAccumulator()
        with torch.no_grad():
            acc.add_mha(module, args, kwargs)
            probs_acc.add_probs(own)
        assert acc.ent_sum is not None and probs_acc.ent_sum is not None
        sums.append((acc.ent_sum, acc.queries, probs_acc.ent_sum, probs_acc.queries))
    for whole, chunked in zip(*sums, strict=True):
        torch.testing.assert_close(whole, chunked, rtol=1e-6, atol=0)


def test_is_causal_without_a_mask_is_the_causal_mask() -> None:
    """nn.MultiheadAttention refuses is_causal without a mask, but subclasses and callers of
    the hook may not: the hook then builds the causal mask itself."""
    module = mha(batch_first=True)
    q = x(3, 70, E)
    with torch.no_grad():
        _, own = module(q, q, q, attn_mask=causal(70), average_attn_weights=False)
    got, visible = recompute(module, (q, q, q), {"is_causal": True, "need_weights": False})
    torch.testing.assert_close(got, sample(own), atol=1e-6, rtol=0)
    assert torch.equal(visible, sample(own) > 0)


@pytest.mark.parametrize("kdim", [None, 24], ids=["packed", "separate-kdim"])
def test_qk_sigma_is_the_spectral_norm_of_each_heads_bilinear_form(kdim: int | None) -> None:
    module = mha(kdim=kdim, vdim=kdim)
    dh = E // H
    with torch.no_grad():
        wq, wk = (
            (module.in_proj_weight[:E], module.in_proj_weight[E : 2 * E])
            if kdim is None
            else (module.q_proj_weight, module.k_proj_weight)
        )
        wq[:dh] *= 50.0  # heads of very different scales
        wq[dh : 2 * dh] = wq[dh] * torch.arange(1.0, dh + 1)[:, None]  # head 1: rank one
        got = qk_sigma(module)
    wq64, wk64 = wq.detach().double(), wk.detach().double()
    want = torch.stack(
        [
            torch.linalg.matrix_norm(wq64[h * dh : (h + 1) * dh].T @ wk64[h * dh : (h + 1) * dh], 2)
            for h in range(H)
        ]
    )
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=0)


class LM(nn.Module):
    """A small causal transformer LM over padded sequences."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(11, E)
        layer = nn.TransformerEncoderLayer(E, 2, 32, dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(E, 11)

    def forward(self, tokens: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        t = tokens.shape[1]
        h = self.enc(self.emb(tokens), mask=causal(t), src_key_padding_mask=pad, is_causal=True)
        return self.head(h)


LENGTHS = [10, 1, 7, 4, 10, 10]  # sampled: the first four (6 // 4 = stride 1)


def train_lm(ingest: Ingest, steps: int = 5, train: bool = True) -> collapsewatch.Monitor:
    model = LM().train(train)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = nn.CrossEntropyLoss()
    monitor = collapsewatch.watch(
        model, optimizer, criterion, server=SERVER, http_client=ingest.client(), every=2
    )
    g = torch.Generator().manual_seed(0)
    pad = padding(LENGTHS, 10)
    for _ in range(steps):
        tokens = torch.randint(0, 11, (6, 11), generator=g)
        loss = criterion(model(tokens[:, :-1], pad).reshape(-1, 11), tokens[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    monitor.finish()
    return monitor


def test_transformer_attention_is_recorded_on_sampled_training_steps(ingest: Ingest) -> None:
    monitor = train_lm(ingest)
    assert monitor.stats["sampled_steps"] == 3
    probes = {p.name: p for p in ingest.batches[0].run.probes}
    for name in ("enc.layers.0.self_attn", "enc.layers.1.self_attn"):
        assert probes[name].kind == ProbeKind.attention
        assert (probes[name].module, probes[name].width) == ("MultiheadAttention", E)
    assert "enc.layers.0.self_attn.out_proj" not in probes

    records = ingest.records("attention")
    assert {r.probe for r in records} == {"enc.layers.0.self_attn", "enc.layers.1.self_attn"}
    for probe in ("enc.layers.0.self_attn", "enc.layers.1.self_attn"):
        mine = [r for r in records if r.probe == probe]
        assert [r.step for r in mine] == [0, 2, 4]
        for r in mine:
            stats = r.stats
            assert set(stats) == {"heads", "queries", "ent_sum", "qk_sigma"}
            assert stats["heads"] == 2
            # per head: 9 queries with 2+ visible keys in each sampled sequence of 2+ tokens
            assert stats["queries"] == [27.0, 27.0]
            ent = np.array(stats["ent_sum"]) / np.array(stats["queries"])
            assert np.all((ent > 0.3) & (ent <= 1.0 + 1e-6)), ent
            assert all(s > 0 for s in stats["qk_sigma"])


def test_eval_mode_records_no_attention(ingest: Ingest) -> None:
    monitor = train_lm(ingest, steps=3, train=False)
    assert monitor.stats["sampled_steps"] == 2
    assert ingest.records("attention") == []


class CustomAttention(nn.Module):
    """Hand-written causal self-attention that hands its probabilities to the monitor."""

    def __init__(self, log: Callable[[str, torch.Tensor], None], name: str) -> None:
        super().__init__()
        self.qk = nn.Linear(E, 2 * E)
        self.log, self.name = log, name

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        n, t, _ = h.shape
        q, k = self.qk(h).view(n, t, 2, H, E // H).permute(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(-1, -2) / math.sqrt(E // H)).masked_fill(causal(t), -math.inf)
        probs = torch.softmax(scores, -1)
        self.log(self.name, probs)
        return h + (probs @ h[:, None]).mean(1)


def test_log_attention_of_a_custom_attention(
    ingest: Ingest, caplog: pytest.LogCaptureFixture
) -> None:
    torch.manual_seed(0)
    logged: list[torch.Tensor] = []
    model = nn.Sequential(nn.Linear(8, E))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    monitor = collapsewatch.watch(
        model, optimizer, server=SERVER, http_client=ingest.client(), every=2
    )

    def log(name: str, probs: torch.Tensor) -> None:
        logged.append(probs.detach().clone())
        monitor.log_attention(name, probs)

    attn = CustomAttention(log, "custom")
    optimizer.add_param_group({"params": attn.parameters()})
    g = torch.Generator().manual_seed(1)
    per_step: list[list[torch.Tensor]] = []
    with caplog.at_level(logging.WARNING, logger="collapsewatch"):
        for _ in range(4):
            logged.clear()
            h = model(torch.randn(3, 6, 8, generator=g))
            loss = (attn(h) + attn(h.flip(1))).square().mean()  # two calls: they add up
            monitor.log_attention("bad", torch.rand(3, 3))  # wrong shape: logged, not raised
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            per_step.append(list(logged))
    monitor.finish()

    records = ingest.records("attention")
    assert [r.step for r in records] == [0, 2]
    assert {r.probe for r in records} == {"custom"}
    assert sum("'bad'" in m for m in caplog.messages) == 1
    for r in records:
        probs = torch.cat(per_step[r.step]).double()  # [6, H, 6, 6]
        ent = -torch.special.xlogy(probs, probs).sum(-1)[..., 1:]  # query 0 sees one key
        norm = ent / torch.arange(2, 7, dtype=torch.float64).log()
        assert r.stats["queries"] == [30.0] * H
        np.testing.assert_allclose(r.stats["ent_sum"], norm.sum((0, 2)).numpy(), rtol=1e-5)
