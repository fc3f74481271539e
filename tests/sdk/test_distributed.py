"""Data-parallel training, 2 processes on the gloo backend: ranks merged into rank 0's records.

The brute force: each rank writes its layer-0 outputs at every step; the merged record of a
sampled step must count the positive values of both ranks' rows, so its dead-unit fraction is
the one over both ranks' batches (not rank 0's alone), and its covariance spectrum is the one
of both ranks' rows together.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch.multiprocessing as mp

from collapsewatch.distributed import SHARDED_NOTE
from collapsewatch.pipeline.packing import StepPack
from collapsewatch.probes.activations import ActivationAccumulator
from tests.helpers import free_port
from tests.sdk import ranks_worker
from tests.sdk.ranks_worker import EVERY, STEPS

pytestmark = pytest.mark.slow


def _train(tmp_path: Path, mode: str) -> tuple[list[dict[str, Any]], list[list[dict[str, Any]]]]:
    ctx = mp.get_context("spawn")
    port = free_port()
    procs = [
        ctx.Process(target=ranks_worker.run, args=(rank, 2, port, str(tmp_path), mode))
        for rank in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    for p in procs:
        if p.is_alive():
            p.kill()
    assert [p.exitcode for p in procs] == [0, 0], "a rank failed or hung"
    records = json.loads((tmp_path / "records0.json").read_text())
    brute = [json.loads((tmp_path / f"brute{r}.json").read_text()) for r in range(2)]
    assert json.loads((tmp_path / "records1.json").read_text()) == [], "only rank 0 sends"
    return records, brute


def _dead_fraction(pos: list[float]) -> float:
    """The server's dead_fraction of one record: units never positive."""
    return float(np.mean(np.asarray(pos) <= 0))


def test_two_gloo_ranks_merge_into_rank_zeros_record(tmp_path: Path) -> None:
    records, brute = _train(tmp_path, "merge")
    layer = {r["step"]: r["stats"] for r in records if r["probe"] == "0"}
    assert sorted(layer) == list(range(0, STEPS, EVERY))
    for step, stats in layer.items():
        rows = np.concatenate([np.asarray(brute[r][step]["h"]) for r in range(2)])
        assert stats["n"] == rows.shape[0] == 32  # both ranks' rows
        assert stats["pos"] == (rows > 0).sum(0).tolist()
        alone = (np.asarray(brute[0][step]["h"]) > 0).sum(0)
        assert _dead_fraction(stats["pos"]) == float(np.mean((rows > 0).sum(0) == 0))
        assert _dead_fraction(stats["pos"]) < float(np.mean(alone == 0)), "rank 0 alone"
        # the spectrum of the merged covariance = that of both ranks' rows together
        expected = np.linalg.eigvalsh(np.cov(rows.T, bias=True))[::-1].clip(0)
        # (float32 eigenvalues: the null ones are noise of ~1e-7 of the largest)
        np.testing.assert_allclose(stats["eig"], expected, rtol=1e-4, atol=1e-6 * expected[0])
    loss = {r["step"]: r["stats"] for r in records if r["kind"] == "loss"}
    for step in layer:
        # the mean over both ranks of the losses since the previous sampled step
        window = [s for s in range(max(0, step - EVERY + 1), step + 1)]
        expected = np.mean([brute[r][s]["loss"] for r in range(2) for s in window])
        assert math.isclose(loss[step]["mean"], expected, rel_tol=1e-5)
        assert loss[step]["count"] == 2 * len(window)


def test_by_default_rank_zero_judges_its_own_batches(tmp_path: Path) -> None:
    records, brute = _train(tmp_path, "zero")
    layer = {r["step"]: r["stats"] for r in records if r["probe"] == "0"}
    for step, stats in layer.items():
        alone = np.asarray(brute[0][step]["h"])
        assert stats["n"] == 16 and stats["pos"] == (alone > 0).sum(0).tolist()


def test_fsdp_sharded_parameters_do_not_hang_and_say_what_is_not_seen(tmp_path: Path) -> None:
    records, brute = _train(tmp_path, "fsdp")
    assert SHARDED_NOTE in (tmp_path / "log0.txt").read_text()
    layer = {r["step"]: r["stats"] for r in records if r["probe"] == "0"}
    assert sorted(layer) == list(range(0, STEPS, EVERY))
    for step, stats in layer.items():  # layer outputs are whole, and merged
        rows = np.concatenate([np.asarray(brute[r][step]["h"]) for r in range(2)])
        assert stats["pos"] == (rows > 0).sum(0).tolist()
    weights = [r for r in records if r["kind"] == "parameter" and r["probe"] == "0.weight"]
    assert weights and weights[0]["stats"]["numel"] == 16 * 8  # rank 0's shard of 32 x 8


def test_merged_covariance_equals_the_covariance_of_all_rows() -> None:
    """The merge formula on its own, without processes: two accumulators' (covariance, mean,
    rows) combined as the merge does give the covariance of the concatenated rows."""
    import torch

    from collapsewatch.distributed import _apply, _parts, _values

    gen = torch.Generator().manual_seed(3)
    a, b = torch.randn(50, 6, generator=gen) + 30.0, torch.randn(70, 6, generator=gen) * 0.1
    packs, parts = [], []
    for rows in (a, b):
        acc = ActivationAccumulator()
        acc.add(rows)
        pack = StepPack(merging=True)  # as the monitor makes it when ranks merge
        acc.pack(pack.record("fc", "activation", 0), pack, raw=True)
        packs.append(pack)
        parts.append(_parts(pack))
    device = torch.device("cpu")
    total = _values(parts[0], 2, 0, device) + _values(parts[1], 2, 1, device)
    _apply(packs[0], parts[0], total, 2)
    stats = packs[0].records()[0]["stats"]
    both = torch.cat([a, b]).double()
    expected = torch.linalg.eigvalsh(torch.cov(both.T, correction=0)).flip(0).clamp_min(0)
    assert stats["n"] == stats["cov_n"] == 120
    np.testing.assert_allclose(stats["eig"], expected.numpy(), rtol=1e-4, atol=1e-6)
