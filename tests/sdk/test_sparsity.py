"""Weight sparsity and NaN/Inf counts: on one sampled step in five, through ``watch()``."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune

import collapsewatch
from collapsewatch.probes.sparsity import GLOBAL_PROBE, SPARSITY_EVERY
from tests.sdk.helpers import SERVER, Ingest, mlp, train


def test_sparsity_every_fifth_sampled_step_with_a_global_record(ingest: Ingest) -> None:
    model, criterion = mlp(), nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = collapsewatch.watch(
        model, optimizer, criterion, server=SERVER, http_client=ingest.client(), every=2
    )
    train(model, optimizer, criterion, steps=24)  # sampled: 0, 2, ..., 22
    monitor.finish()
    assert SPARSITY_EVERY == 5
    weight = ingest.records("parameter", "0.weight")
    with_sparsity = [r.step for r in weight if "nonzero" in r.stats]
    assert with_sparsity == [0, 10, 20]
    assert all("weight_nan" in r.stats and "grad_inf" in r.stats for r in weight if r.step == 10)
    bias = next(r for r in ingest.records("parameter", "0.bias") if r.step == 10)
    assert "nonzero" not in bias.stats and bias.stats["weight_nan"] == 0, "1-D: counts only"
    total = ingest.records("parameter", GLOBAL_PROBE)
    assert [r.step for r in total] == [0, 10, 20]
    assert total[0].stats["numel"] == 8 * 32 + 32 * 4
    assert total[0].stats["nonzero"] == 8 * 32 + 32 * 4
    probes = {p.name: p for p in ingest.batches[0].run.probes}
    assert probes[GLOBAL_PROBE].kind == "parameter"


def test_a_weight_pruned_after_watch_is_read_through_its_mask(ingest: Ingest) -> None:
    model, criterion = mlp(), nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = collapsewatch.watch(
        model, optimizer, criterion, server=SERVER, http_client=ingest.client(), every=1
    )
    train(model, optimizer, criterion, steps=1)
    prune.l1_unstructured(model[0], "weight", amount=0.75)  # weight_orig stays dense
    train(model, optimizer, criterion, steps=5)
    monitor.finish()
    (first, later) = [r for r in ingest.records("parameter", "0.weight") if "nonzero" in r.stats]
    assert first.stats["nonzero"] == 8 * 32
    assert later.stats["nonzero"] == 8 * 32 // 4
    assert later.stats["numel"] == 8 * 32
