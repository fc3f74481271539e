"""On-device statistics against numpy brute force on the raw layer outputs."""

from __future__ import annotations

import base64
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from collapsewatch.pipeline.packing import StepPack, shortest
from collapsewatch.probes.activations import COV_DIM, COV_ROWS, ActivationAccumulator, as_rows
from collapsewatch.probes.loss import LossAccumulator
from collapsewatch.probes.spectra import eigenvalues


def reduce(*outputs: torch.Tensor, spatial_dims: int = 0) -> ActivationAccumulator:
    acc = ActivationAccumulator()
    with torch.no_grad():
        for out in outputs:
            acc.add(as_rows(out, spatial_dims))
    return acc


def eig(acc: ActivationAccumulator) -> np.ndarray:
    return eigenvalues(acc.covariance()).numpy()


def brute_force(rows: np.ndarray) -> dict[str, np.ndarray]:
    rows = rows.astype(np.float64)
    norms = np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    cov = np.cov(rows.T, bias=True).reshape(rows.shape[1], rows.shape[1])
    return {
        "sum": rows.sum(0),
        "sumsq": (rows**2).sum(0),
        "pos": (rows > 0).sum(0),
        "unit_sum": (rows / norms).sum(0),
        "eig": np.clip(np.linalg.eigvalsh(cov)[::-1], 0, None),
    }


def assert_matches(acc: ActivationAccumulator, rows: np.ndarray) -> None:
    expected = brute_force(rows)
    assert acc.n == rows.shape[0] and acc.width == rows.shape[1]
    for key in ("sum", "sumsq", "pos", "unit_sum"):
        got = getattr(acc, key).double().numpy()
        np.testing.assert_allclose(got, expected[key], rtol=1e-4, atol=1e-4, err_msg=key)
    np.testing.assert_allclose(eig(acc), expected["eig"], rtol=1e-3, atol=1e-5, err_msg="eig")


def test_linear_output_statistics() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(12, 6)
    out = layer(torch.randn(5, 7, 12))  # every leading dim is a row
    assert_matches(reduce(out), out.detach().reshape(-1, 6).numpy())


def test_conv2d_statistics_treat_channels_as_units() -> None:
    torch.manual_seed(0)
    out = nn.Conv2d(3, 5, 3)(torch.randn(4, 3, 8, 8))  # [4, 5, 6, 6]
    rows = out.detach().permute(0, 2, 3, 1).reshape(-1, 5).numpy()
    acc = reduce(out, spatial_dims=2)
    assert acc.n == 4 * 6 * 6
    assert_matches(acc, rows)


def test_unbatched_conv1d_has_channels_first() -> None:
    torch.manual_seed(0)
    out = nn.Conv1d(3, 4, 3)(torch.randn(3, 20))  # [4, 18]
    assert_matches(reduce(out, spatial_dims=1), out.detach().T.numpy())


def test_two_forward_calls_add_up_to_one_call_on_the_concatenation() -> None:
    torch.manual_seed(0)
    a, b = torch.randn(30, 10) + 3, torch.randn(20, 10) * 2
    twice, once = reduce(a, b), reduce(torch.cat([a, b]))
    assert twice.n == once.n == 50 and twice.cov_n == once.cov_n == 50
    for key in ("sum", "sumsq", "pos", "unit_sum"):
        torch.testing.assert_close(getattr(twice, key), getattr(once, key), msg=key)
    torch.testing.assert_close(twice.covariance(), once.covariance(), rtol=1e-4, atol=1e-5)


def test_wide_layers_are_projected_and_keep_the_trace() -> None:
    torch.manual_seed(0)
    d = 512
    rows = torch.randn(600, 64) @ torch.randn(64, d)  # rank 64, as a real layer's output
    acc = reduce(rows)
    values = eig(acc)
    assert values.shape == (COV_DIM,)
    assert np.all(np.diff(values) <= 1e-6), "eigenvalues must be sorted descending"
    trace = np.trace(np.cov(rows.numpy().T.astype(np.float64), bias=True))
    assert values.sum() == pytest.approx(trace, rel=0.1)
    assert acc.sum.shape == (d,), "per-unit statistics are never projected"


def test_many_rows_are_subsampled_for_the_covariance_only() -> None:
    torch.manual_seed(0)
    rows = torch.randn(10_000, 8) * torch.arange(1, 9)
    acc = reduce(rows)
    assert acc.n == 10_000 and acc.cov_n <= COV_ROWS
    expected = brute_force(rows.numpy())
    np.testing.assert_allclose(acc.sum.numpy(), expected["sum"], rtol=1e-4, atol=1e-2)
    np.testing.assert_allclose(eig(acc), expected["eig"], rtol=0.15)


def test_covariance_survives_a_large_mean() -> None:
    """Collapsed outputs sit far from zero with tiny spread; float32 must still resolve it."""
    torch.manual_seed(0)
    rows = 1e4 + torch.randn(2000, 4) * torch.tensor([1.0, 0.1, 0.01, 0.001])
    np.testing.assert_allclose(
        eig(reduce(rows)), [1.0, 1e-2, 1e-4, 1e-6], rtol=0.15, err_msg="eigenvalues"
    )


def test_non_finite_outputs_give_nan_eigenvalues_not_an_error() -> None:
    rows = torch.randn(10, 3)
    rows[2, 1] = math.inf
    values = eig(reduce(rows))
    assert np.isnan(values).all()


def packed_eig(acc: ActivationAccumulator, merging: bool) -> np.ndarray:
    """The eigenvalues the record gets: built from the kept rows in the sender's work, or
    (``merging``) from the sums on the training thread."""
    pack = StepPack(merging=merging)
    acc.pack(pack.record("fc", "activation", 0), pack, raw=False)
    value = pack.records()[0]["stats"]["eig"]
    if isinstance(value, dict):  # a packed vector
        return np.frombuffer(base64.b64decode(value["f32"]), "<f4").astype(np.float64)
    return np.asarray(value, dtype=np.float64)


@pytest.mark.parametrize(
    "rows",
    [
        torch.randn(300, 6) * torch.arange(1, 7),
        1e4 + torch.randn(2000, 4) * torch.tensor([1.0, 0.1, 0.01, 0.001]),  # a large mean
        torch.randn(600, 32) @ torch.randn(32, 512),  # projected
    ],
    ids=["plain", "large-mean", "wide"],
)
def test_kept_rows_give_the_spectrum_of_the_device_sums(rows: torch.Tensor) -> None:
    kept, summed = reduce(rows), reduce(rows)
    assert kept.kept and kept.cov_outer is None, "CPU rows are kept for the sender thread"
    expected = packed_eig(summed, merging=True)
    # below the data's rank both are float32 noise: compared to the largest eigenvalue
    atol = max(1e-6, 1e-5 * expected[0])
    np.testing.assert_allclose(packed_eig(kept, merging=False), expected, rtol=2e-3, atol=atol)


def test_kept_rows_are_a_copy_of_an_output_changed_in_place_later() -> None:
    torch.manual_seed(0)
    out = torch.randn(40, 5)
    expected = brute_force(out.numpy())["eig"]
    acc = reduce(out)
    out.clamp_(min=0)  # an inplace ReLU after the hook
    np.testing.assert_allclose(packed_eig(acc, merging=False), expected, rtol=1e-4, atol=1e-5)


def test_rows_past_the_keep_limit_join_the_device_sums(monkeypatch: pytest.MonkeyPatch) -> None:
    from collapsewatch.probes import activations

    monkeypatch.setattr(activations, "KEEP_MAX", 30 * 10)
    a, b = torch.randn(30, 10) + 3, torch.randn(20, 10) * 2
    acc = reduce(a, b)  # a is kept, b goes to the sums: the record has both
    assert len(acc.kept) == 1 and acc.cov_outer is not None
    expected = brute_force(torch.cat([a, b]).numpy())["eig"]
    np.testing.assert_allclose(packed_eig(acc, merging=False), expected, rtol=1e-3, atol=1e-5)


def test_one_host_copy_fills_every_record() -> None:
    pack = StepPack()
    first = pack.record("a", "activation", 3)
    pack.put(first, "sum", torch.tensor([1.0, 2.0]))
    pack.put(first, "pos", torch.tensor([4, 5]))
    first["n"] = 2.0
    second = pack.record("loss", "loss", 3)
    pack.put(second, "mean", torch.tensor(0.5))
    records = pack.records()
    assert records == [
        {"probe": "a", "kind": "activation", "step": 3,
         "stats": {"sum": [1.0, 2.0], "pos": [4.0, 5.0], "n": 2.0}},
        {"probe": "loss", "kind": "loss", "step": 3, "stats": {"mean": 0.5}},
    ]  # fmt: skip


def test_values_are_shortened_without_losing_float32_precision() -> None:
    torch.manual_seed(0)
    # float32 results of the device reductions, then counts that only float64 holds exactly
    floats = (torch.randn(1000) * 10.0 ** torch.randint(-8, 8, (1000,)).float()).double()
    special = [0.0, -0.0, math.inf, -math.inf, math.nan, 123456789.0, 2.0**24 + 1]
    values = torch.cat([floats, torch.tensor(special, dtype=torch.float64)])
    short = shortest(values)
    assert torch.equal(short[:1000].float(), values[:1000].float()), "float32 must round-trip"
    assert short[1005] == 123456789.0 and short[1006] == 2.0**24 + 1, "counts stay exact"
    assert short[1000] == 0 and short[1002:1004].isinf().all() and short[1004].isnan()
    assert len(json.dumps(short[:1000].tolist())) < 0.7 * len(json.dumps(values[:1000].tolist()))
    extreme = torch.tensor([1.5e-30, -3.25e35], dtype=torch.float32).double()
    assert torch.equal(shortest(extreme).float(), extreme.float()), "outside 1e±22 too"


def test_loss_accumulator_takes_tensors_and_numbers() -> None:
    acc = LossAccumulator()
    assert acc.take() is None
    acc.add(torch.tensor(2.0))
    acc.add(torch.tensor([1.0, 3.0]))  # reduction="none": its mean
    acc.add(5.0)
    mean, peak, count = acc.take()  # type: ignore[misc]
    assert (float(mean), float(peak), count) == (3.0, 5.0, 3)
    assert acc.take() is None, "take() resets"
    acc.add(torch.tensor(1.0))
    acc.add(float("nan"))
    mean, peak, count = acc.take()  # type: ignore[misc]
    assert math.isnan(float(mean)) and math.isnan(float(peak)), "a NaN loss must show"


def test_a_matrix_lapack_cannot_decompose_in_float32_is_retried_in_float64(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """LAPACK's float32 eigvalsh fails to converge on some collapsed covariances (seen on the
    validation suite); the float64 retry gives the eigenvalues, and a second failure NaN, so
    the record is still built."""
    real = torch.linalg.eigvalsh

    def float32_fails(m: torch.Tensor) -> torch.Tensor:
        if m.dtype == torch.float32:
            raise torch.linalg.LinAlgError("linalg.eigh: The algorithm failed to converge")
        return real(m)

    cov = torch.diag(torch.tensor([3.0, 2.0, 1.0]))
    monkeypatch.setattr(torch.linalg, "eigvalsh", float32_fails)
    assert eigenvalues(cov).tolist() == [3.0, 2.0, 1.0]

    def always_fails(m: torch.Tensor) -> torch.Tensor:
        raise torch.linalg.LinAlgError("linalg.eigh: The algorithm failed to converge")

    monkeypatch.setattr(torch.linalg, "eigvalsh", always_fails)
    assert torch.isnan(eigenvalues(cov)).all()
