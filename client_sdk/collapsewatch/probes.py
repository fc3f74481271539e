"""On-device statistics: what the hooks reduce a layer's output, a parameter or the loss to.

Everything here runs on the tensor's own device, under ``no_grad``, without a host sync: the
results stay tensors until the monitor copies a whole sampled step to the host at once.
Accumulators are sums, so several forward calls on one step (two views, gradient
accumulation) add up, and the reduction of a concatenation equals the sum of the reductions.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

    from collapsewatch.packing import StepPack

#: Rows that enter the covariance on one forward call; more are subsampled with a stride.
COV_ROWS = 4096
#: Width of the random projection; wider layers are projected to this many dimensions.
COV_DIM = 256
#: Seed of the projection, fixed so every run (and every rank) projects the same way.
PROJECTION_SEED = 0x5EED
#: The uncentred second-moment spectrum (RankMe) is decomposed on one sampled step in this
#: many: it doubles the eigendecomposition, the largest cost of a sampled step (bench/).
RAW_SPECTRUM_EVERY = 4
_EPS = 1e-12


@lru_cache(maxsize=64)
def projection(d: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The ``d x COV_DIM`` Gaussian (JL) projection, scaled by ``1/sqrt(k)``.

    Drawn from a private CPU generator so the user's random stream is never touched and the
    matrix is the same on every device; cached because it is reused on every sampled step.
    """
    import torch

    gen = torch.Generator().manual_seed(PROJECTION_SEED)
    mat = torch.randn(d, COV_DIM, generator=gen, dtype=torch.float32) / math.sqrt(COV_DIM)
    return mat.to(device=device, dtype=dtype)


def input_dim(module: nn.Module) -> int | None:
    """The dimension of what one output row is computed from: ``in_features`` of a Linear,
    ``in_channels x kernel size`` of a ConvNd (all channels: a grouped conv's outputs together
    see them all). The output's rank cannot exceed it, so an expanding layer (32 -> 256) is
    judged against 32, not 256."""
    in_features = getattr(module, "in_features", None)
    if isinstance(in_features, int):
        return in_features
    channels, kernel = getattr(module, "in_channels", None), getattr(module, "kernel_size", None)
    if isinstance(channels, int) and isinstance(kernel, tuple):
        return channels * math.prod(kernel)
    return None


def as_rows(output: torch.Tensor, spatial_dims: int) -> torch.Tensor:
    """A layer output as a ``[rows, units]`` matrix.

    Linear (``spatial_dims == 0``): units are the last dim, every leading dim is a row.
    ConvNd: units are the channels, so they move last and batch and positions become rows;
    an unbatched conv input ``[C, *spatial]`` has its channels first.
    """
    if spatial_dims:
        channel_dim = output.dim() - spatial_dims - 1
        output = output.movedim(channel_dim, -1)
    return output.reshape(-1, output.shape[-1])


class ActivationAccumulator:
    """Sums over the rows a layer produced on one sampled step (see ``ActivationStat``)."""

    __slots__ = (
        "cov_n",
        "cov_outer",
        "cov_shift",
        "cov_sum",
        "n",
        "pos",
        "sum",
        "sumsq",
        "unit_sum",
        "width",
    )

    def __init__(self) -> None:
        self.n = 0
        self.cov_n = 0
        self.width = 0
        self.sum: torch.Tensor | None = None
        self.sumsq: torch.Tensor | None = None
        self.pos: torch.Tensor | None = None
        self.unit_sum: torch.Tensor | None = None
        self.cov_shift: torch.Tensor | None = None
        self.cov_sum: torch.Tensor | None = None
        self.cov_outer: torch.Tensor | None = None

    @property
    def empty(self) -> bool:
        return self.n == 0

    def add(self, rows: torch.Tensor) -> None:
        """Add the statistics of ``rows`` (``[m, d]``, any float dtype); call under no_grad."""
        import torch

        m, d = rows.shape
        if m == 0:
            return
        x = rows.float()
        # One GEMM gives both the plain and the unit-vector sums: [1; 1/||x_i||] @ x.
        inv_norm = torch.linalg.vector_norm(x, dim=1).clamp_min(_EPS).reciprocal()
        weights = torch.stack((torch.ones_like(inv_norm), inv_norm))
        sums = weights @ x
        sumsq = (x * x).sum(0)
        pos = (x > 0).sum(0)

        # Covariance on at most COV_ROWS rows: a stride keeps it deterministic and avoids
        # drawing from the user's RNG.
        z = x[:: -(-m // COV_ROWS)] if m > COV_ROWS else x
        if d > COV_DIM:
            z = z @ projection(d, z.device, z.dtype)
        if self.cov_shift is None:
            # Shifting by the first call's mean keeps float32 exact enough when |mean| >> std,
            # which is exactly the collapsed regime the eigenvalues must still resolve.
            self.cov_shift = z.mean(0)
        zc = z - self.cov_shift
        cov_sum = zc.sum(0)
        cov_outer = zc.T @ zc

        if self.n == 0:
            self.sum, self.unit_sum = sums[0], sums[1]
            self.sumsq, self.pos = sumsq, pos
            self.cov_sum, self.cov_outer = cov_sum, cov_outer
        else:
            assert self.sum is not None and self.unit_sum is not None
            assert self.sumsq is not None and self.pos is not None
            assert self.cov_sum is not None and self.cov_outer is not None
            self.sum += sums[0]
            self.unit_sum += sums[1]
            self.sumsq += sumsq
            self.pos += pos
            self.cov_sum += cov_sum
            self.cov_outer += cov_outer
        self.n += m
        self.cov_n += z.shape[0]
        self.width = d

    def pack(
        self,
        stats: dict[str, Any],
        pack: StepPack,
        eig: torch.Tensor | dict[str, torch.Tensor],
        in_dim: int | None = None,
    ) -> None:
        """File this step's ``ActivationStat`` values into a record.

        ``eig``: the covariance eigenvalues (see :func:`eigenvalues`), or the spectra of
        :func:`spectra` by statistic name. ``in_dim``: see :func:`input_dim`.
        """
        if in_dim:
            stats["in_dim"] = float(in_dim)
        stats["n"] = float(self.n)
        stats["width"] = float(self.width)
        stats["cov_n"] = float(self.cov_n)
        for key in ("sum", "sumsq", "pos", "unit_sum"):
            pack.put(stats, key, getattr(self, key))
        for key, value in (eig if isinstance(eig, dict) else {"eig": eig}).items():
            pack.put(stats, key, value)

    def covariance(self) -> torch.Tensor:
        """The centred (population) covariance of the covariance rows, ``k x k``."""
        assert self.cov_sum is not None and self.cov_outer is not None
        mean = self.cov_sum / self.cov_n
        return self.cov_outer / self.cov_n - mean[:, None] * mean[None, :]

    def second_moment(self, covariance: torch.Tensor) -> torch.Tensor:
        """The uncentred second moment ``Z^T Z / n`` of the covariance rows, from their
        covariance: ``C + mu mu^T`` (``mu`` the rows' mean, undoing the shift)."""
        assert self.cov_sum is not None and self.cov_shift is not None
        mu = self.cov_shift + self.cov_sum / self.cov_n
        return covariance + mu[:, None] * mu[None, :]


def spectra(accs: list[ActivationAccumulator], raw: bool) -> list[dict[str, torch.Tensor]]:
    """Per accumulator, by ``ActivationStat`` name: ``eig`` and ``cov_diag`` of the covariance
    and, when ``raw``, ``eig_raw`` of the uncentred second moment (RankMe's singular values
    squared). All matrices go through one batched :func:`eigenvalues`."""
    import torch

    covs = [acc.covariance() for acc in accs]
    moments = [acc.second_moment(cov) for acc, cov in zip(accs, covs, strict=True)] if raw else []
    eigs = eigenvalues(covs + moments)
    out: list[dict[str, torch.Tensor]] = []
    for i, cov in enumerate(covs):
        spec = {"eig": eigs[i], "cov_diag": torch.diagonal(cov)}
        if raw:
            spec["eig_raw"] = eigs[len(covs) + i]
        out.append(spec)
    return out


def eigenvalues(covariances: list[torch.Tensor]) -> list[torch.Tensor]:
    """Descending, non-negative eigenvalues of each covariance, batched per (size, device).

    A non-finite matrix gives NaN eigenvalues instead of an error: the decomposition would
    fail, and NaN on the wire says what happened without a host sync to check first.
    """
    import torch

    out: list[torch.Tensor | None] = [None] * len(covariances)
    groups: dict[tuple[int, torch.device], list[int]] = {}
    for i, cov in enumerate(covariances):
        groups.setdefault((cov.shape[0], cov.device), []).append(i)
    for indices in groups.values():
        # float32: the matrices are accumulated in float32, so float64 would only decompose
        # their rounding more exactly (eigenvalues below ~1e-7 of the largest are noise either
        # way), at 1.4-2.2x the time on CPU and far more on GPUs with slow float64.
        stack = torch.stack([covariances[i] for i in indices]).float()
        finite = torch.isfinite(stack).flatten(1).all(1)
        safe = torch.where(finite[:, None, None], stack, torch.zeros_like(stack))
        safe = (safe + safe.transpose(1, 2)) / 2
        eig = torch.linalg.eigvalsh(safe).flip(-1).clamp_min(0)
        eig = torch.where(finite[:, None], eig, torch.full_like(eig, math.nan))
        for row, i in enumerate(indices):
            out[i] = eig[row]
    return [e for e in out if e is not None]


class LossAccumulator:
    """The loss between sampled steps, kept on device: reduced to mean, max and count there.

    Each step only appends the detached loss (about 0.5 us, against 4 us for updating running
    sum and max tensors); the sampled step reduces them with one ``stack``. Numbers passed by
    the user stay on the host and join as kernel arguments, so nothing is copied either way.
    """

    __slots__ = ("_count", "_max", "_numbers", "_sum", "_tensors")

    #: Past this many pending losses (a loop that never steps), fold them into sum and max.
    FOLD = 4096

    def __init__(self) -> None:
        self._tensors: list[torch.Tensor] = []
        self._numbers: list[float] = []
        self._sum: torch.Tensor | None = None
        self._max: torch.Tensor | None = None
        self._count = 0

    def add(self, value: torch.Tensor | float) -> None:
        """Add one loss value: a tensor (its mean if not a scalar) or a Python number."""
        import torch

        if not isinstance(value, torch.Tensor):
            self._numbers.append(float(value))
            return
        v = value.detach()
        if v.dim() != 0:
            v = v.float().mean()
        self._tensors.append(v)
        if len(self._tensors) >= self.FOLD:
            self._fold()

    def _fold(self) -> None:
        import torch

        device = self._tensors[0].device
        stacked = torch.stack([t.to(device, non_blocking=True) for t in self._tensors]).float()
        total, peak = stacked.sum(), stacked.max()
        if self._sum is not None and self._max is not None:
            total, peak = total + self._sum.to(device), torch.maximum(peak, self._max.to(device))
        self._sum, self._max = total, peak
        self._count += len(self._tensors)
        self._tensors = []

    def take(self) -> tuple[torch.Tensor, torch.Tensor, int] | None:
        """``(mean, max, count)`` since the last take, or None if nothing was added; resets."""
        import torch

        if self._tensors:
            self._fold()
        numbers, count = self._numbers, self._count + len(self._numbers)
        total, peak = self._sum, self._max
        self._numbers, self._sum, self._max, self._count = [], None, None, 0
        if count == 0:
            return None
        if total is None or peak is None:
            total, peak = torch.tensor(0.0), torch.tensor(-math.inf)
        if numbers:
            # Python scalars go into the kernels as arguments: no host-to-device copy
            total = total + math.fsum(numbers)
            peak = peak + math.nan if any(map(math.isnan, numbers)) else peak.clamp(max(numbers))
        return total / count, peak, count


def norms(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """L2 norms in float32, in as few kernels as the devices and dtypes allow."""
    import torch

    if not tensors:
        return []
    try:
        return list(torch._foreach_norm(tensors, 2, dtype=torch.float32))
    except (RuntimeError, TypeError):  # layouts the fused kernel refuses
        return [torch.linalg.vector_norm(t, dtype=torch.float32) for t in tensors]


class ParameterNorms:
    """``ParameterStat`` of named parameters: norms before the step, update norms after it,
    and on some sampled steps sparsity and NaN/Inf counts (:mod:`collapsewatch.sparsity`)."""

    def __init__(
        self, params: list[tuple[str, torch.Tensor]], model: nn.Module | None = None
    ) -> None:
        from collapsewatch.sparsity import Sparsity

        self.params = params
        self.sparsity = Sparsity(params, model)
        self._stats: list[dict[str, Any]] | None = None
        self._before: list[torch.Tensor] | None = None

    def before_step(self, step: int, keep_weights: bool) -> StepPack:
        """Weight and gradient norms now, in a new pack; ``keep_weights`` for the update norm.

        Keeping the weights costs one copy of the trainable parameters, on sampled steps only.
        """
        import torch

        from collapsewatch.packing import StepPack

        pack = StepPack()
        with torch.no_grad():
            weights = [p.detach() for _, p in self.params]
            grads = [(i, p.grad) for i, (_, p) in enumerate(self.params) if p.grad is not None]
            dense = [(i, g) for i, g in grads if not g.is_sparse]
            grad_norms = dict(zip([i for i, _ in dense], norms([g for _, g in dense]), strict=True))
            self._stats = []
            weight_norms = norms(weights)
            for i, (name, param) in enumerate(self.params):
                stats = pack.record(name, "parameter", step)
                stats["numel"] = float(param.numel())
                pack.put(stats, "weight_norm", weight_norms[i])
                if i in grad_norms:
                    pack.put(stats, "grad_norm", grad_norms[i])
                self._stats.append(stats)
            self.sparsity.add(pack, self._stats, step)
            self._before = [w.clone() for w in weights] if keep_weights else None
        return pack

    def after_step(self, pack: StepPack) -> None:
        """Add ``update_norm`` to the records of :meth:`before_step` and free the copies."""
        import torch

        if self._before is not None and self._stats is not None:
            with torch.no_grad():
                after = [p.detach() for _, p in self.params]
                torch._foreach_sub_(self._before, after)  # in place: no second copy
                for stats, norm in zip(self._stats, norms(self._before), strict=True):
                    pack.put(stats, "update_norm", norm)
        self.reset()

    def reset(self) -> None:
        self._stats = self._before = None
