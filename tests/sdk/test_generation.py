"""``monitor.log_tokens`` and its TextAccumulator: what reaches the (fake) ingest endpoint, at
which step, merged how; bad input logged once, never raised; no reference kept to the user's
tensors; the on-device hash and sketch against a pure-Python reference. The indicators computed
from these statistics are checked against brute force in tests/server/test_indicators_diversity.
"""

from __future__ import annotations

import array
import gc
import logging
import weakref
from typing import Any

import pytest
import torch
from torch import nn

import collapsewatch
from collapsewatch.pipeline.packing import StepPack
from collapsewatch.probes.text import (
    HLL_REGISTERS,
    TextAccumulator,
    as_token_ids,
    hll_registers,
    mix64,
    ngram_hashes,
    ngram_valid,
)
from collapsewatch.schemas import Packed, ProbeKind, TextStat
from tests.sdk.helpers import SERVER, Ingest, mlp

MASK64 = (1 << 64) - 1


def splitmix64(x: int) -> int:
    """The reference finaliser on Python's unbounded ints, masked to 64 bits."""
    x &= MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def watched(ingest: Ingest, every: int = 4) -> tuple[nn.Module, Any, collapsewatch.Monitor]:
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    monitor = collapsewatch.watch(
        model, optimizer, server=SERVER, http_client=ingest.client(), every=every
    )
    return model, optimizer, monitor


def one_step(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    loss = model(torch.randn(8, 8)).square().mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def numbers(stats: dict[str, Any]) -> dict[str, Any]:
    """Statistics as plain numbers and lists, whether packed vectors are validated or raw."""
    out: dict[str, Any] = {}
    for key, value in stats.items():
        if isinstance(value, dict):
            value = Packed.model_validate(value)
        out[key] = list(array.array("f", value.f32)) if isinstance(value, Packed) else value
    return out


def packed(acc: TextAccumulator) -> dict[str, Any]:
    """The accumulator's statistics as the monitor sends them, as plain numbers."""
    pack = StepPack()
    acc.pack(pack.record("t", "text", 0), pack)
    return numbers(pack.records()[0]["stats"])


def test_every_call_is_recorded_at_its_step_and_calls_at_one_step_merge(ingest: Ingest) -> None:
    model, optimizer, monitor = watched(ingest, every=4)
    g = torch.Generator().manual_seed(0)
    sent: dict[int, list[torch.Tensor]] = {}
    for step in range(9):
        one_step(model, optimizer)  # the step counter is now step + 1
        if step in (1, 6):  # steps 2 and 7, neither of them sampled
            for generation in range(2):  # two calls at one step, e.g. two prompts' batches
                ids = torch.randint(0, 40, (5, 12), generator=g)
                sent.setdefault(step + 1, []).append(ids)
                monitor.log_tokens("samples", ids, generation=generation)
    monitor.finish()

    records = ingest.records("text", "samples")
    assert [r.step for r in records] == [2, 7]
    for record in records:
        acc = TextAccumulator()
        acc.add(torch.cat(sent[record.step]), 1)  # one call with all the rows: the same sums
        assert numbers(record.stats) == packed(acc)
        assert record.stats[TextStat.sequences] == 10.0
        assert record.stats[TextStat.tokens] == 120.0
        assert record.stats[TextStat.generation] == 1.0  # the newest call's
    probes = {p.name: p.kind for p in ingest.batches[-1].run.probes}
    assert probes["samples"] == ProbeKind.text


def test_bad_input_is_logged_once_and_never_raised(
    ingest: Ingest, caplog: pytest.LogCaptureFixture
) -> None:
    model, optimizer, monitor = watched(ingest, every=1)
    with caplog.at_level(logging.WARNING, logger="collapsewatch"):
        monitor.log_tokens("gen", torch.rand(4, 10))  # floats
        monitor.log_tokens("gen", torch.zeros(2, 3, 4, dtype=torch.long))  # 3-D
        monitor.log_tokens("gen", [[1, 2], [3, 4.5]])  # a float in a list
        monitor.log_tokens("gen", "some text")  # not token ids
        monitor.log_tokens("gen", [[1, 2, 3]], generation="one")  # not a number
        monitor.log_tokens("gen", [[1, 2, 3, 4]], generation=5)  # a good call still counts
    one_step(model, optimizer)
    monitor.finish()
    warnings = [r.getMessage() for r in caplog.records if "logger 'gen'" in r.getMessage()]
    assert len(warnings) == 1 and "integer token ids" in warnings[0], warnings
    (record,) = ingest.records("text", "gen")
    assert record.stats[TextStat.tokens] == 4.0 and record.stats[TextStat.generation] == 5.0


@pytest.mark.parametrize(
    ("bad", "error", "message"),
    [
        (torch.rand(4, 10), TypeError, "integer token ids"),
        (torch.ones(3, 4, dtype=torch.bool), TypeError, "integer token ids"),
        (torch.zeros(2, 3, 4, dtype=torch.long), ValueError, "[samples, length]"),
        (torch.arange(5), ValueError, "ids[None]"),
        ([], ValueError, "no sequence"),
        ([[1, 2], [3, 4.5]], TypeError, "ints only"),
        ([[1, True]], TypeError, "ints only"),
        ([torch.zeros(2, 2, dtype=torch.long)], ValueError, "must be 1-D"),
        ([1, 2, 3], TypeError, "list of ints or a 1-D integer tensor"),
        ("abc", TypeError, "not str"),
    ],
)
def test_bad_token_ids_raise_a_clear_error(bad: Any, error: type, message: str) -> None:
    with pytest.raises(error, match=message.replace("[", r"\[").replace("]", r"\]")):
        as_token_ids(bad)


def test_a_failed_call_leaves_the_step_as_it_was() -> None:
    acc = TextAccumulator()
    acc.add([[1, 2, 3, 4, 5]], 0)
    before = packed(acc)
    acc2 = TextAccumulator()
    acc2.add([[1, 2, 3, 4, 5]], 0)
    with pytest.raises(TypeError):
        acc2.add([[6, 7, 8], [9, 1.5]], 1)  # the second row fails after the first converted
    with pytest.raises(TypeError):
        acc2.add([[6, 7, 8]], "2")
    with pytest.raises(TypeError, match="plain number"):
        acc2.add([[6, 7, 8]], torch.tensor(2))  # reading it would sync the device
    with pytest.raises(ValueError, match="finite"):
        acc2.add([[6, 7, 8]], float("nan"))
    assert packed(acc2) == before


def test_no_reference_is_kept_to_the_users_tensors(ingest: Ingest) -> None:
    model, optimizer, monitor = watched(ingest, every=1000)
    one_step(model, optimizer)
    ids = torch.randint(0, 50, (6, 20))
    rows = [torch.randint(0, 50, (n,)) for n in (3, 9, 14)]
    refs = [weakref.ref(ids), *(weakref.ref(r) for r in rows)]
    expected = TextAccumulator()
    expected.add(ids.clone(), None)
    expected.add([r.clone() for r in rows], None)
    monitor.log_tokens("s", ids)
    monitor.log_tokens("s", rows)
    ids.fill_(7)  # changing the tensors afterwards changes nothing sent
    del ids, rows
    gc.collect()
    assert all(ref() is None for ref in refs), "the logger kept a user tensor alive"
    one_step(model, optimizer)  # the step ends: the record is copied and sent
    monitor.finish()
    (record,) = ingest.records("text", "s")
    assert numbers(record.stats) == packed(expected)


def test_lists_of_different_lengths_are_padded_and_padding_is_left_out() -> None:
    """A list of sequences equals the same rows as a tensor padded with negative ids, and
    neither counts an n-gram that touches padding."""
    rows = [[4, 5, 6, 7, 4, 5, 6, 7], [1, 2], [], [9, 9, 9, 9, 9]]
    as_list = TextAccumulator()
    as_list.add(rows, None)
    tensor = torch.full((4, 8), -100)
    for i, r in enumerate(rows):
        tensor[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    as_tensor = TextAccumulator()
    as_tensor.add(tensor, None)
    stats = packed(as_list)
    assert stats == packed(as_tensor)
    assert stats[TextStat.sequences] == 4.0 and stats[TextStat.tokens] == 15.0
    assert stats[TextStat.ngrams_2] == 7 + 1 + 4 and stats[TextStat.ngrams_3] == 6 + 3
    # seq-rep-4: row 0 has 5 4-grams, 4 distinct; row 3 has 2, 1 distinct
    assert stats[TextStat.rep_seqs] == 2.0
    assert stats[TextStat.rep_sum] == pytest.approx((1 - 4 / 5) + (1 - 1 / 2))
    assert stats[TextStat.unigrams][9] == 5.0 and sum(stats[TextStat.unigrams]) == 15.0


def test_the_hash_and_the_sketch_match_a_pure_python_reference() -> None:
    values = [0, 1, 2, 199, 65535, 2**40 + 3, 2**63 - 1, -(2**63), -1]
    got = mix64(torch.tensor(values)).tolist()
    assert [v & MASK64 for v in got] == [splitmix64(v) for v in values]

    seed = 0x9E3779B97F4A7C15
    rows = [[3, 1, 4, 1, 5, 9, 2, 6], [5, 3, 5]]
    # reference: chain the mix over the n-gram, register = low 12 bits, rank = leading zeros
    # of the other 52 bits + 1
    registers = [0] * HLL_REGISTERS
    for row in rows:
        for i in range(len(row) - 1):
            h = splitmix64(splitmix64(row[i] + seed) ^ row[i + 1])
            rest = h >> 12
            registers[h & 4095] = max(registers[h & 4095], 52 - rest.bit_length() + 1)
    ids = as_token_ids(rows)
    valid = ids >= 0
    sketch = hll_registers(ngram_hashes(ids, valid, 2)[1], ngram_valid(valid, 2)[1])
    assert sketch.tolist() == registers
    assert sum(r > 0 for r in registers) == 9  # nine distinct bigrams, nine registers here
