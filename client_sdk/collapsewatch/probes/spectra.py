"""Covariance spectra, decomposed on the host after a sampled step's copy, in the sender thread.

An eigendecomposition of a ``256 x 256`` matrix costs milliseconds: done on the training thread,
it was the largest single cost of a sampled step (bench/sdk_overhead.py). The probes file the
matrices with ``StepPack.defer`` and these functions run after the host copy.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def eigenvalues(matrix: torch.Tensor) -> torch.Tensor:
    """Descending, non-negative eigenvalues of a symmetric matrix (or a batch of them).

    A non-finite matrix gives NaN eigenvalues instead of an error: the decomposition would
    fail, and NaN on the wire says what happened. So does one that LAPACK cannot decompose
    even in float64 (nearly never: a float32 failure on an ill-conditioned, collapsed
    covariance is retried in float64 first).
    """
    import torch

    # float32: the matrices are accumulated in float32, so float64 would only decompose their
    # rounding more exactly (eigenvalues below ~1e-7 of the largest are noise either way).
    m = matrix.float()
    finite = torch.isfinite(m).flatten(-2).all(-1)
    safe = torch.where(finite[..., None, None], m, torch.zeros_like(m))
    safe = (safe + safe.transpose(-1, -2)) / 2
    try:
        eig = torch.linalg.eigvalsh(safe)
    except RuntimeError:  # torch.linalg.LinAlgError: did not converge
        try:
            eig = torch.linalg.eigvalsh(safe.double()).float()
        except RuntimeError:
            return torch.full(safe.shape[:-1], math.nan)
    eig = eig.flip(-1).clamp_min(0)
    return torch.where(finite[..., None], eig, torch.full_like(eig, math.nan))


def covariance_spectra(cov: torch.Tensor, mean: torch.Tensor | None) -> dict[str, Any]:
    """``ActivationStat`` spectra of one layer: ``eig`` and ``cov_diag`` of the covariance and,
    given the rows' mean, ``eig_raw`` of the uncentred second moment ``C + mu mu^T`` (RankMe's
    singular values squared)."""
    import torch

    out: dict[str, Any] = {"eig": eigenvalues(cov), "cov_diag": torch.diagonal(cov).clone()}
    if mean is not None:
        out["eig_raw"] = eigenvalues(cov + mean[:, None] * mean[None, :])
    return out
