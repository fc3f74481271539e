"""Family 4 from the SDK's token statistics (real TokenAccumulator on a real transformer layer's
output) against numpy brute force on the raw tensors, with padding, several forwards, several
steps and two simulated ranks. Tolerance: rel 1e-4 (float32 sums on the device)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from collapsewatch.pipeline.packing import StepPack
from collapsewatch.probes.tokens import TokenAccumulator, block_inputs
from collapsewatch.schemas import ProbeKind
from collapsewatch_server.codec import as_arrays
from collapsewatch_server.indicators import compute_indicators
from collapsewatch_server.windows import sum_stats

TOK = ProbeKind.tokens
D = 16


def layer() -> nn.TransformerEncoderLayer:
    torch.manual_seed(0)
    return nn.TransformerEncoderLayer(D, 2, 32, dropout=0.0, batch_first=True)


def batch(seed: int, lengths: list[int], t: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs sharing a common direction (so cosines are far from 0) and a padding mask."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), t, D, generator=g) + 2.0 * torch.ones(D)
    pad = torch.arange(t)[None, :] >= torch.tensor(lengths)[:, None]
    return x, pad


def record(calls: list[tuple[torch.Tensor, torch.Tensor]], block: nn.Module) -> dict[str, object]:
    """One sampled step: the block called on each (input, padding) pair, as the hook sees it."""
    acc = TokenAccumulator()
    with torch.no_grad():
        for x, pad in calls:
            out = block(x, src_key_padding_mask=pad)
            acc.add(out, *block_inputs(block, (x,), {"src_key_padding_mask": pad}))
        pack = StepPack()
        acc.pack(pack.record("block", "tokens", 0), pack)
    return as_arrays(pack.records()[0]["stats"])


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def brute(groups: list[list[tuple[np.ndarray, np.ndarray]]]) -> dict[str, float]:
    """``groups``: per step (or rank), its sequences as (input, output) of the real tokens."""
    pair_sum = pairs = 0.0
    resid = total = 0.0
    io = []
    buckets: dict[int, list[float]] = {}
    for sequences in groups:
        by_bucket: dict[int, list[np.ndarray]] = {}
        for inp, out in sequences:
            t = out.shape[0]
            for i, j in itertools.permutations(range(t), 2):
                pair_sum += cos(out[i], out[j])
                pairs += 1
            resid += float(((out - out.mean(0)) ** 2).sum())
            total += float((out**2).sum())
            io += [cos(inp[i], out[i]) for i in range(t)]
            by_bucket.setdefault(int(np.log2(t)), []).append(out.mean(0))
        for b, embs in by_bucket.items():
            buckets.setdefault(b, [])
            buckets[b] += [cos(e, f) for e, f in itertools.permutations(embs, 2)]
    counted = {b: v for b, v in buckets.items() if (1 + np.sqrt(1 + 4 * len(v))) / 2 >= 8}
    return {
        "token_cosine": pair_sum / pairs,
        "residual_ratio": float(np.sqrt(resid / total)),
        "layer_cosine": float(np.mean(io)),
        "length_cosine_max": max(float(np.mean(v)) for v in counted.values()),
    }


def sequences(
    block: nn.Module, calls: list[tuple[torch.Tensor, torch.Tensor]]
) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    with torch.no_grad():
        for x, pad in calls:
            y = block(x, src_key_padding_mask=pad)
            for k in range(x.shape[0]):
                keep = ~pad[k]
                out.append((x[k][keep].double().numpy(), y[k][keep].double().numpy()))
    return out


LENGTHS = [20, 17, 9, 12, 16, 5, 8, 11, 14, 10, 19, 6, 13, 15, 18, 7]  # buckets 2, 3, 4


def test_one_step_two_forwards_with_padding() -> None:
    block = layer()
    calls = [batch(1, LENGTHS[:8]), batch(2, LENGTHS[8:])]
    got = compute_indicators(TOK, record(calls, block))
    want = brute([sequences(block, calls)])
    for name, value in want.items():
        assert got[name] == pytest.approx(value, rel=1e-4), name


def test_steps_and_ranks_merge_by_adding_records() -> None:
    """Two steps on rank 0, one on rank 1, summed (a window, an all-reduce): sequence pairs for
    the length buckets are those within each record."""
    block = layer()
    steps = [[batch(3, LENGTHS)], [batch(4, LENGTHS[::-1])], [batch(5, LENGTHS[3:] + [20] * 3)]]
    merged = sum_stats([record(calls, block) for calls in steps])
    got = compute_indicators(TOK, merged)
    want = brute([sequences(block, calls) for calls in steps])
    for name, value in want.items():
        assert got[name] == pytest.approx(value, rel=1e-4), name


def test_collapsed_tokens_read_cosine_one_and_residual_zero() -> None:
    g = torch.Generator().manual_seed(6)
    direction = torch.randn(D, generator=g)
    x = direction * (1 + 0.1 * torch.rand(8, 10, 1, generator=g))  # same direction, any scale
    acc = TokenAccumulator()
    acc.add(x, None, None, True)
    pack = StepPack()
    acc.pack(pack.record("b", "tokens", 0), pack)
    got = compute_indicators(TOK, as_arrays(pack.records()[0]["stats"]))
    assert got["token_cosine"] == pytest.approx(1.0, abs=1e-5)
    assert got["residual_ratio"] < 0.05
    assert "layer_cosine" not in got, "no input given: no layer cosine"


def test_sequence_first_layers_and_unbatched_inputs() -> None:
    torch.manual_seed(7)
    seq_first = nn.TransformerEncoderLayer(D, 2, 32, dropout=0.0)  # [seq, batch, dim]
    x = torch.randn(12, 3, D)
    acc = TokenAccumulator()
    with torch.no_grad():
        acc.add(seq_first(x), *block_inputs(seq_first, (x,), {}))
        acc.add(seq_first(x[:, 0]), *block_inputs(seq_first, (x[:, 0],), {}))  # unbatched
    assert acc.seqs is not None and float(acc.seqs) == 4
    assert acc.tokens is not None and float(acc.tokens) == 48
