"""Saturating activations and transformer blocks, observed through ``watch()``."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import torch
from torch import nn

import collapsewatch
from collapsewatch.schemas import ProbeKind
from tests.sdk.helpers import SERVER, Ingest


class Custom(nn.Module):
    """A hand-written residual block returning a tuple, with a key padding mask argument."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(16, 16)

    def forward(
        self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, None]:
        return x + torch.relu(self.lin(x)), None


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Linear(8, 16)
        layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True, dropout=0.0)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.custom = Custom()
        self.act = nn.Tanh()
        self.gate = nn.Sigmoid()
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        h = self.enc(self.emb(x), src_key_padding_mask=pad)
        h = self.custom(h, key_padding_mask=pad)[0]
        return self.head(self.gate(self.act(4 * h)).mean(1))


def run(ingest: Ingest, steps: int = 4, **kwargs: Any) -> tuple[Net, collapsewatch.Monitor]:
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    criterion = nn.CrossEntropyLoss()
    monitor = collapsewatch.watch(
        model, optimizer, criterion, server=SERVER, http_client=ingest.client(), every=2, **kwargs
    )
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x = torch.randn(4, 10, 8, generator=g)
        pad = torch.zeros(4, 10, dtype=torch.bool)
        pad[0, 6:] = True  # the first sequence has 6 tokens
        loss = criterion(model(x, pad), torch.randint(0, 3, (4,), generator=g))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    monitor.finish()
    return model, monitor


def test_blocks_and_saturating_activations_become_probes(ingest: Ingest) -> None:
    run(ingest)
    probes = {p.name: p for p in ingest.batches[0].run.probes}
    assert probes["enc.layers.0"].kind == ProbeKind.tokens
    assert probes["enc.layers.1"].module == "TransformerEncoderLayer"
    assert "custom" not in probes, "a custom block is watched only when given"
    assert probes["act"].kind == probes["gate"].kind == ProbeKind.activation
    assert probes["gate"].module == "Sigmoid"
    assert len({p.order for p in probes.values()}) == len(probes)

    tokens = ingest.records("tokens", "enc.layers.0")
    assert [r.step for r in tokens] == [0, 2]
    stats = tokens[0].stats
    assert stats["seqs"] == 4 and stats["tokens"] == 6 + 3 * 10, "padding is left out"
    assert stats["pairs"] == 6 * 5 + 3 * 10 * 9
    assert stats["io_tokens"] == stats["tokens"]
    assert stats["len_n"][2] == 1 and stats["len_n"][3] == 3  # lengths 6 and 10
    sat = ingest.records("activation", "act")[0].stats
    assert sat["n"] == 40 and sat["width"] == 16 and len(sat["sat"]) == 16
    assert set(sat) == {"n", "width", "sat"}


def test_custom_blocks_are_watched_when_given(ingest: Ingest) -> None:
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    monitor = collapsewatch.watch(
        model, optimizer, server=SERVER, http_client=ingest.client(), every=1,
        blocks=[model.custom],
    )  # fmt: skip
    pad = torch.zeros(2, 5, dtype=torch.bool)
    pad[1, 3:] = True
    model(torch.randn(2, 5, 8), pad).sum().backward()
    optimizer.step()
    monitor.finish()
    (record,) = ingest.records("tokens", "custom")
    assert record.stats["tokens"] == 8 and record.stats["seqs"] == 2


def test_a_block_outside_the_model_is_refused_before_training(ingest: Ingest) -> None:
    with pytest.raises(ValueError, match="not part of the model"):
        collapsewatch.watch(Net(), server=SERVER, http_client=ingest.client(), blocks=[Custom()])


def test_a_block_the_sdk_cannot_read_is_dropped_once(
    ingest: Ingest, caplog: pytest.LogCaptureFixture
) -> None:
    class Odd(nn.Module):
        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"x": x}

    model = nn.Sequential(nn.Linear(4, 4), Odd())
    monitor = collapsewatch.watch(
        model, server=SERVER, http_client=ingest.client(), every=1, blocks=[model[1]]
    )
    with caplog.at_level(logging.WARNING, logger="collapsewatch"):
        for _ in range(3):
            model(torch.randn(2, 3, 4))
            monitor.step()
    monitor.finish()
    assert sum("'1'" in r.getMessage() for r in caplog.records) == 1
    assert ingest.records("tokens") == []
    assert len(ingest.records("activation", "0")) == 3
