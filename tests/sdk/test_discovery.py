"""What the two lines find in models written the way people write them: their own transformer
blocks calling ``F.scaled_dot_product_attention``, functional ReLUs and losses, transposed
convolutions, recurrent layers, Hugging Face's ``Conv1D``; against brute force where a value
is computed."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import collapsewatch
from collapsewatch.probes.attention import AttentionAccumulator, sdpa_probs
from collapsewatch.schemas import ProbeKind
from tests.sdk.helpers import SERVER, Ingest


class CausalSelfAttention(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.c_attn, self.c_proj, self.heads = nn.Linear(d, 3 * d), nn.Linear(d, d), heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = (
            z.view(b, t, self.heads, c // self.heads).transpose(1, 2)
            for z in self.c_attn(x).split(c, dim=2)
        )
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).reshape(b, t, c))


class Block(nn.Module):
    """A nanoGPT block: pre-LayerNorm attention and a ReLU MLP, both residual."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = CausalSelfAttention(d, heads)
        self.fc, self.proj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.proj(F.relu(self.fc(self.ln2(x))))


class TinyGPT(nn.Module):
    def __init__(self, vocab: int = 32, d: int = 32, heads: int = 4, layers: int = 2) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.h = nn.ModuleList([Block(d, heads) for _ in range(layers)])
        self.head = nn.Linear(d, vocab, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx)
        for block in self.h:
            x = block(x)
        return self.head(x)


def train_gpt(ingest: Ingest, steps: int = 4) -> collapsewatch.Monitor:
    torch.manual_seed(0)
    model = TinyGPT()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    monitor = collapsewatch.watch(
        model, optimizer=optimizer, server=SERVER, http_client=ingest.client(), every=2
    )
    for _ in range(steps):
        idx = torch.randint(0, 32, (4, 16))
        loss = F.cross_entropy(model(idx).view(-1, 32), idx.view(-1))  # a functional loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    monitor.finish()
    return monitor


def test_a_nanogpt_style_model_gets_tokens_attention_classes_and_loss(ingest: Ingest) -> None:
    train_gpt(ingest)
    probes = {(p.name, p.kind) for p in ingest.batches[-1].run.probes}
    for name in ("h.0", "h.1"):
        assert (name, ProbeKind.tokens) in probes, "each repeated block is a residual stream"
        assert [r.step for r in ingest.records("tokens", name)] == [0, 2]
        attention = ingest.records("attention", f"{name}.attn")
        assert [r.step for r in attention] == [0, 2], "SDPA inside the module's own forward"
        assert attention[0].stats["heads"] == 4
    assert ("head", ProbeKind.classes) in probes, "the classifier of F.cross_entropy"
    assert [r.step for r in ingest.records("classes", "head")] == [0, 2]
    assert [r.step for r in ingest.records("loss")] == [0, 2], "the loss being backpropagated"
    # dead units only where a ReLU follows: fc feeds F.relu, the others do not
    assert "pos" in ingest.records("activation", "h.0.fc")[0].stats
    for layer in ("h.0.proj", "h.0.attn.c_attn", "head"):
        assert "pos" not in ingest.records("activation", layer)[0].stats, layer


def test_sdpa_entropy_matches_the_probabilities_it_computes() -> None:
    torch.manual_seed(1)
    q, k = torch.randn(3, 2, 10, 8), torch.randn(3, 2, 12, 8)
    mask = torch.rand(3, 1, 10, 12) > 0.3
    mask[..., 0] = True  # every query sees a key
    acc = AttentionAccumulator()
    acc.add_sequences(sdpa_probs(q, k, attn_mask=mask, scale=0.5))
    probs = torch.softmax((q @ k.transpose(-1, -2) * 0.5).masked_fill(~mask, -math.inf), -1)
    visible = mask.expand(3, 2, 10, 12).sum(-1).double()
    ent = -(probs * probs.clamp_min(1e-30).log()).sum(-1).double()
    counted = visible >= 2
    norm = torch.where(counted, ent / visible.clamp_min(2).log(), 0.0)
    assert acc.ent_sum is not None and acc.queries is not None
    np.testing.assert_allclose(acc.ent_sum.double().numpy(), norm.sum((0, 2)).numpy(), rtol=1e-4)
    np.testing.assert_allclose(acc.queries.numpy(), counted.sum((0, 2)).numpy())


def test_sdpa_causal_and_grouped_query_heads() -> None:
    torch.manual_seed(2)
    q, k = torch.randn(1, 4, 6, 8), torch.randn(1, 2, 6, 8)  # two query heads per key head
    acc = AttentionAccumulator()
    acc.add_sequences(sdpa_probs(q, k, is_causal=True))
    kk = k.repeat_interleave(2, dim=1)
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    scores = (q @ kk.transpose(-1, -2) / math.sqrt(8)).masked_fill(~causal, -math.inf)
    probs = torch.softmax(scores, -1)
    ent = -(probs * probs.clamp_min(1e-30).log()).sum(-1)
    seen = causal.sum(-1).float()
    norm = torch.where(seen >= 2, ent / seen.clamp_min(2).log(), 0.0)
    assert acc.ent_sum is not None
    np.testing.assert_allclose(acc.ent_sum.numpy(), norm.sum((0, 2)).numpy(), rtol=1e-4)


class ConvBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + F.relu(self.bn(self.conv(x)))


def test_layers_beyond_linear_and_conv(ingest: Ingest) -> None:
    """A generator's ConvTranspose2d, an LSTM's hidden states, repeated conv blocks (watched
    as layers, not as token streams) and a ReLU after a BatchNorm (its own dead-unit probe)."""
    torch.manual_seed(0)
    deconv = nn.ConvTranspose2d(3, 4, 4, stride=2, padding=1)
    blocks = nn.Sequential(ConvBlock(), ConvBlock())
    lstm = nn.LSTM(4, 6, batch_first=True)
    model = nn.ModuleDict({"deconv": deconv, "blocks": blocks, "lstm": lstm})
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    monitor = collapsewatch.watch(
        model, optimizer=optimizer, server=SERVER, http_client=ingest.client(), every=1
    )
    for _ in range(2):
        image = blocks(deconv(torch.randn(2, 3, 4, 4)))  # [2, 4, 8, 8]
        seq, _ = lstm(image.mean(2).transpose(1, 2))  # [2, 8, 6]
        loss = seq.pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    monitor.finish()
    deconv_stats = ingest.records("activation", "deconv")[0].stats
    assert deconv_stats["width"] == 4 and deconv_stats["n"] == 2 * 8 * 8
    lstm_stats = ingest.records("activation", "lstm")[0].stats
    assert lstm_stats["width"] == 6 and lstm_stats["n"] == 2 * 8
    assert ingest.records("tokens") == [], "4-D conv blocks are not token streams"
    relu = ingest.records("activation", "blocks.0.relu")
    assert relu and relu[0].stats["width"] == 4 and "pos" in relu[0].stats
    image = blocks[0].bn(blocks[0].conv(torch.randn(2, 4, 8, 8)))  # one unit per channel
    assert len(relu[0].stats["pos"]) == image.shape[1]


class HFConv1D(nn.Module):
    """The shape of Hugging Face's ``Conv1D``: a linear layer with its weight ``[in, out]``."""

    def __init__(self, nf: int, nx: int) -> None:
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.02)
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight).view(
            *x.shape[:-1], self.nf
        )


Conv1D = type("Conv1D", (HFConv1D,), {})


def test_hugging_face_conv1d_layers_are_watched(ingest: Ingest) -> None:
    model = nn.Sequential(Conv1D(12, 6), nn.ReLU(), Conv1D(3, 12))
    monitor = collapsewatch.watch(model, server=SERVER, http_client=ingest.client(), every=1)
    model(torch.randn(5, 6)).sum().backward()
    monitor.step()
    monitor.finish()
    first = ingest.records("activation", "0")[0].stats
    assert first["width"] == 12 and first["in_dim"] == 6 and "pos" in first
    assert ingest.records("activation", "2")[0].stats["width"] == 3


@pytest.mark.parametrize("how", ["deepcopy", "pickle", "averaged"])
def test_a_watched_model_copies_and_saves_as_if_unwatched(ingest: Ingest, how: str) -> None:
    import copy
    import io
    import pickle

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = collapsewatch.watch(
        model, optimizer, criterion, server=SERVER, http_client=ingest.client(), every=1
    )
    if how == "deepcopy":
        copied = copy.deepcopy(model)
    elif how == "pickle":
        buffer = io.BytesIO()
        torch.save(model, buffer)
        copied = pickle.loads(pickle.dumps(model))
    else:
        copied = torch.optim.swa_utils.AveragedModel(model).module
    for _ in range(3):
        x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
        copied(x)  # an EMA/target network's forward: not the watched model's
        loss = criterion(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    monitor.finish()
    assert [r.stats["n"] for r in ingest.records("activation", "0")] == [8.0, 8.0, 8.0]


class ResidualMLP(nn.Module):
    """``h + W2 relu(W1 LN(h))`` blocks in a ModuleList, then a head; or, with ``head=False``,
    the last block's output is the model's output (an embedding)."""

    def __init__(self, d: int = 8, head: bool = True) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d))
            for _ in range(2)
        )
        self.head = nn.Linear(d, 3) if head else nn.Identity()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            h = h + block(h)
        return self.head(h)


@pytest.mark.parametrize("head", [True, False])
def test_a_residual_branch_output_is_not_judged_for_complete_collapse(
    ingest: Ingest, head: bool
) -> None:
    """A repeated block's last layer is a residual branch (a learned constant there is not a
    collapse): its records carry no unit-vector sum, so simsiam_std has nothing to judge;
    every other layer keeps it, and so does a last block that makes the model's output."""
    model = ResidualMLP(head=head)
    monitor = collapsewatch.watch(model, server=SERVER, http_client=ingest.client(), every=1)
    model(torch.randn(16, 8)).sum().backward()
    monitor.step()
    monitor.finish()
    has_unit_sum = {
        name: "unit_sum" in ingest.records("activation", name)[0].stats
        for name in ("blocks.0.1", "blocks.0.3", "blocks.1.1", "blocks.1.3")
    }
    assert has_unit_sum == {
        "blocks.0.1": True,
        "blocks.0.3": False,
        "blocks.1.1": True,
        "blocks.1.3": not head,
    }
    if head:
        assert "unit_sum" in ingest.records("activation", "head")[0].stats
