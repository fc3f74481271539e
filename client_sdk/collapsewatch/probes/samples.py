"""Statistics of generated samples beside real ones (the ``generative`` family of
docs/indicators.md: generative mode collapse), for ``log_samples``. An evaluation logger: every
call is reduced (see :mod:`collapsewatch.probes.explicit`).

The diversity ratio compares the mean pairwise Euclidean distance of generated samples with
that of real ones. Within one call, the mean over all pairs of its (up to 512) samples is an
unbiased estimate of the population's mean pairwise distance, so calls, steps and ranks merge
by adding distance sums and pair counts. Pairs are never formed across calls: a call is one
draw from the generator as it is at that moment.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from collapsewatch.probes.activations import ActivationAccumulator
from collapsewatch.probes.spectra import eigenvalues

if TYPE_CHECKING:
    import torch

    from collapsewatch.pipeline.packing import StepPack

#: Samples of one call that enter the pairwise distances (130816 pairs); more are subsampled.
PAIR_SAMPLES = 512
#: Key of the remembered reference in the logger's memory (one per logger name).
REFERENCE = "reference"


def flat_samples(value: Any, what: str) -> torch.Tensor:
    """``[n, ...]`` samples as a float32 ``[n, d]`` matrix (each sample flattened)."""
    import torch

    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{what} must be a tensor [n, ...], not {type(value).__name__}")
    if value.dim() == 0:
        raise ValueError(f"{what} must be a tensor [n, ...] of n samples, got a scalar")
    if value.dtype == torch.bool or value.is_complex():
        raise TypeError(f"{what} must hold real numbers, got {value.dtype}")
    n = value.shape[0]
    d = value[0].numel() if n else 0
    if n == 0 or d == 0:
        raise ValueError(f"{what} is empty: shape {tuple(value.shape)}")
    return value.detach().reshape(n, d).float()


def pair_distances(rows: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Sum of the Euclidean distances over all pairs of up to ``PAIR_SAMPLES`` rows, and the
    number of pairs. More rows are thinned to ``PAIR_SAMPLES`` evenly spaced ones (a fixed
    index, so the user's random stream is untouched and no host sync is needed)."""
    import torch

    n = rows.shape[0]
    if n > PAIR_SAMPLES:
        index = torch.arange(PAIR_SAMPLES, device=rows.device) * n // PAIR_SAMPLES
        rows = rows.index_select(0, index)
        n = PAIR_SAMPLES
    # pdist computes each distance from the difference, so distances between near-identical
    # samples (a collapsed generator) keep their precision, which a Gram matrix would lose.
    return torch.nn.functional.pdist(rows).sum(), n * (n - 1) // 2


class _Reference:
    """The reduced statistics of the real samples of one record."""

    __slots__ = ("acc", "dim", "pair_dist", "pairs")

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.pair_dist: torch.Tensor | None = None
        self.pairs = 0
        self.acc = ActivationAccumulator()


class Remembered(NamedTuple):
    """What the logger keeps of a record's reference for later records: reductions only."""

    dim: int
    pair_dist: torch.Tensor
    pairs: int
    cov_n: int
    cov: torch.Tensor  # decomposed after each host copy that uses it


class SampleAccumulator:
    """Generated samples of one logger name at one step (``SampleStat``), with the statistics
    of the real samples given in the same calls, or else of the last record that had some.

    ``memory`` is the dict the engine keeps for the logger name across records; it receives
    the reference's reduced statistics (a distance sum, a pair count, eigenvalues), never the
    user's tensors.
    """

    __slots__ = ("acc", "dim", "memory", "n", "pair_dist", "pairs", "ref")

    def __init__(self, memory: dict[str, Any]) -> None:
        self.memory = memory
        self.n = 0
        self.dim = 0
        self.pairs = 0
        self.pair_dist: torch.Tensor | None = None
        self.acc = ActivationAccumulator()  # the covariance of the generated samples
        self.ref: _Reference | None = None

    def add(self, samples: Any, reference: Any = None) -> None:
        """Add one call: ``samples`` ``[n, ...]`` and optionally ``reference`` ``[m, ...]``,
        real samples of the same shape per sample. Call under ``no_grad``."""
        x = flat_samples(samples, "samples")
        d = x.shape[1]
        if self.dim and d != self.dim:
            raise ValueError(f"samples of {d} values each; earlier calls at this step: {self.dim}")
        ref = None if reference is None else flat_samples(reference, "reference")
        if ref is not None and ref.shape[0] < 2:
            raise ValueError("reference must hold at least 2 samples (their distances are used)")
        if ref is not None and ref.shape[1] != d:
            raise ValueError(
                f"reference samples have {ref.shape[1]} values each, generated ones {d}: "
                "pass real samples of the generated samples' shape"
            )
        dist, pairs = pair_distances(x)
        ref_dist, ref_pairs = pair_distances(ref) if ref is not None else (None, 0)

        # everything is computed: update (the covariance sums update themselves at the end)
        self.acc.add(x)
        self.pair_dist = dist if self.pair_dist is None else self.pair_dist + dist
        self.pairs += pairs
        self.n += x.shape[0]
        self.dim = d
        if ref is not None and ref_dist is not None:
            if self.ref is None:
                self.ref = _Reference(d)
            self.ref.acc.add(ref)
            old = self.ref.pair_dist
            self.ref.pair_dist = ref_dist if old is None else old + ref_dist.to(old.device)
            self.ref.pairs += ref_pairs

    def pack(self, stats: dict[str, Any], pack: StepPack) -> None:
        """File ``SampleStat`` values; remember this record's reference for later records."""
        assert self.pair_dist is not None
        stats["n"] = float(self.n)
        stats["pairs"] = float(self.pairs)
        pack.put(stats, "pair_dist", self.pair_dist)
        stats["cov_n"] = float(self.acc.cov_n)
        pack.defer(stats, [self.acc.covariance()], _spectrum("eig"))
        ref = self.ref
        if ref is not None and ref.pair_dist is not None:
            cov = ref.acc.covariance()
            remembered = Remembered(ref.dim, ref.pair_dist, ref.pairs, ref.acc.cov_n, cov)
            self.memory[REFERENCE] = remembered
        else:
            kept = self.memory.get(REFERENCE)
            if not isinstance(kept, Remembered) or kept.dim != self.dim:
                return  # no reference of this shape yet: the record has no ratio
            remembered = kept
        stats["ref_pairs"] = float(remembered.pairs)
        pack.put(stats, "ref_pair_dist", remembered.pair_dist)
        stats["ref_cov_n"] = float(remembered.cov_n)
        pack.defer(stats, [remembered.cov], _spectrum("ref_eig"))


def _spectrum(key: str) -> Callable[[torch.Tensor], dict[str, Any]]:
    """Deferred work filing the eigenvalues of a covariance under ``key``."""
    return lambda cov: {key: eigenvalues(cov)}
