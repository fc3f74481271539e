"""Weight sparsity and NaN/Inf counts: at most once every 32 steps, through ``watch()``."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune

import collapsewatch
from collapsewatch.probes.sparsity import GLOBAL_PROBE, SPARSITY_MIN_STEPS
from tests.sdk.helpers import SERVER, Ingest, mlp, train


def test_sparsity_every_32_steps_with_a_global_record(ingest: Ingest) -> None:
    model, criterion = mlp(), nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = collapsewatch.watch(
        model, optimizer, criterion, server=SERVER, http_client=ingest.client(), every=2
    )
    train(model, optimizer, criterion, steps=70)  # sampled: 0, 2, ..., 68
    monitor.finish()
    assert SPARSITY_MIN_STEPS == 32
    weight = ingest.records("parameter", "0.weight")
    with_sparsity = [r.step for r in weight if "nonzero" in r.stats]
    assert with_sparsity == [0, 32, 64]
    assert all("weight_nan" in r.stats and "grad_inf" in r.stats for r in weight if r.step == 32)
    bias = next(r for r in ingest.records("parameter", "0.bias") if r.step == 32)
    assert "nonzero" not in bias.stats and bias.stats["weight_nan"] == 0, "1-D: counts only"
    total = ingest.records("parameter", GLOBAL_PROBE)
    assert [r.step for r in total] == [0, 32, 64]
    assert total[0].stats["numel"] == 8 * 32 + 32 * 4
    assert total[0].stats["nonzero"] == 8 * 32 + 32 * 4
    probes = {p.name: p for p in ingest.batches[0].run.probes}
    assert probes[GLOBAL_PROBE].kind == "parameter"


def test_sparse_sampling_takes_the_snapshot_on_every_sampled_step(ingest: Ingest) -> None:
    """Counted in steps, not sampled steps: at an interval of 40, every sampled step is at
    least 32 steps after the last snapshot, so a pruned layer is not seen 5 intervals late."""
    model, criterion = mlp(), nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = collapsewatch.watch(
        model, optimizer, criterion, server=SERVER, http_client=ingest.client(), every=40
    )
    train(model, optimizer, criterion, steps=130)  # sampled: 0, 40, 80, 120
    monitor.finish()
    weight = ingest.records("parameter", "0.weight")
    assert [r.step for r in weight if "nonzero" in r.stats] == [0, 40, 80, 120]


def test_a_weight_pruned_after_watch_is_read_through_its_mask(ingest: Ingest) -> None:
    model, criterion = mlp(), nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = collapsewatch.watch(
        model, optimizer, criterion, server=SERVER, http_client=ingest.client(), every=1
    )
    train(model, optimizer, criterion, steps=1)
    prune.l1_unstructured(model[0], "weight", amount=0.75)  # weight_orig stays dense
    train(model, optimizer, criterion, steps=SPARSITY_MIN_STEPS)  # the next snapshot: step 32
    monitor.finish()
    (first, later) = [r for r in ingest.records("parameter", "0.weight") if "nonzero" in r.stats]
    assert first.stats["nonzero"] == 8 * 32
    assert later.stats["nonzero"] == 8 * 32 // 4
    assert later.stats["numel"] == 8 * 32
