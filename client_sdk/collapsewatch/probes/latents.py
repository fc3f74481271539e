"""Statistics of discrete and continuous latents: VQ code usage (family 6, codebook collapse)
and a diagonal Gaussian posterior (family 7, posterior collapse), for ``log_codes`` and
``log_posterior``. In-loop loggers: reduced on sampled steps only (see
:mod:`collapsewatch.probes.explicit`).

Both reduce to sums over rows (``CodeStat``, ``PosteriorStat``), so the calls of a step, the
steps of a window and data-parallel ranks merge by addition. Everything stays on the tensors'
device: code counts go through ``index_add_`` into a fixed ``K + 1`` vector (``bincount`` would
sync on CUDA to size its output), out-of-range indices into the extra slot.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from collapsewatch.pipeline.packing import StepPack

#: The largest codebook counted: its count vector travels on every sampled step (4 bytes a
#: code, 4 MiB at this size), so larger "codebooks" (lookup-free quantisers with 2^24 codes)
#: are refused with a clear message rather than flooding the server.
MAX_CODES = 1 << 20


def _sum_dtype(device: torch.device) -> torch.dtype:
    """float64 for sums (exact counts, no cancellation in the variance); MPS has no float64."""
    import torch

    return torch.float32 if device.type == "mps" else torch.float64


class CodeAccumulator:
    """How often each of K codes was chosen over the calls of one step (``CodeStat``)."""

    __slots__ = ("counts", "num_codes")

    def __init__(self) -> None:
        self.num_codes: int | None = None
        #: [K + 1] on the indices' device; the last slot counts out-of-range indices
        self.counts: torch.Tensor | None = None

    def add(self, indices: Any, num_codes: Any) -> None:
        """Count ``indices`` (an integer tensor of any shape) into ``num_codes`` bins.

        Indices outside ``0..num_codes-1`` (``-1`` padding, say) are counted apart, as
        ``out_of_range``. Raises ``TypeError``/``ValueError`` on bad input, with nothing added.
        """
        import torch

        if isinstance(num_codes, bool) or not isinstance(num_codes, int):
            raise TypeError(f"num_codes must be an int, not {type(num_codes).__name__}")
        if not 0 < num_codes <= MAX_CODES:
            raise ValueError(f"num_codes must be between 1 and {MAX_CODES}, got {num_codes}")
        if self.num_codes is not None and num_codes != self.num_codes:
            raise ValueError(
                f"num_codes changed within a step: {num_codes} after {self.num_codes} "
                "(log each codebook under its own name)"
            )
        if not isinstance(indices, torch.Tensor):
            raise TypeError(f"indices must be a torch.Tensor, not {type(indices).__name__}")
        if indices.is_floating_point() or indices.is_complex() or indices.dtype == torch.bool:
            raise TypeError(f"indices must be an integer tensor, got {indices.dtype}")
        flat = indices.detach().reshape(-1)
        device = flat.device if self.counts is None else self.counts.device
        flat = flat.to(device)
        # int64 before comparing: uint8 indices cannot hold num_codes, and index_add_ wants it
        flat = flat.long()
        slot = torch.where((flat >= 0) & (flat < num_codes), flat, num_codes)
        dtype = _sum_dtype(device)
        ones = torch.ones((), dtype=dtype, device=device).expand(slot.numel())
        part = torch.zeros(num_codes + 1, dtype=dtype, device=device).index_add_(0, slot, ones)
        self.counts = part if self.counts is None else self.counts + part
        self.num_codes = num_codes

    def pack(self, stats: dict[str, Any], pack: StepPack) -> None:
        assert self.counts is not None and self.num_codes is not None
        k = self.num_codes
        stats["codes"] = float(k)
        pack.put(stats, "counts", self.counts[:k])
        pack.put(stats, "n", self.counts[:k].sum())
        pack.put(stats, "out_of_range", self.counts[k])


class PosteriorAccumulator:
    """Per latent dimension sums of a diagonal Gaussian posterior over the calls of one step
    (``PosteriorStat``): of mu, of mu^2 and of KL(N(mu, exp(logvar)) || N(0, 1))."""

    __slots__ = ("dims", "kl_sum", "mu_sq", "mu_sum", "n")

    def __init__(self) -> None:
        self.dims: int | None = None
        self.n = 0
        self.mu_sum: torch.Tensor | None = None
        self.mu_sq: torch.Tensor | None = None
        self.kl_sum: torch.Tensor | None = None

    def add(self, mu: Any, logvar: Any) -> None:
        """Add a batch: ``mu`` and ``logvar`` of one shape ``[batch, latent...]``; every
        dimension after the first is a latent dimension (flattened). Raises on bad input, with
        nothing added."""
        import torch

        for what, t in (("mu", mu), ("logvar", logvar)):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{what} must be a torch.Tensor, not {type(t).__name__}")
            if not t.is_floating_point():
                raise TypeError(f"{what} must be a floating-point tensor, got {t.dtype}")
        if mu.shape != logvar.shape:
            raise ValueError(
                f"mu and logvar must have the same shape, got {tuple(mu.shape)} and "
                f"{tuple(logvar.shape)}"
            )
        if mu.dim() < 2:
            raise ValueError(
                f"mu must be [batch, latent...], got shape {tuple(mu.shape)} "
                "(for one latent dimension pass mu[:, None])"
            )
        rows, dims = mu.shape[0], math.prod(mu.shape[1:])
        if dims == 0:
            raise ValueError(f"mu has no latent dimension: shape {tuple(mu.shape)}")
        if self.dims is not None and dims != self.dims:
            raise ValueError(f"latent dimensions changed within a step: {dims} after {self.dims}")
        device = mu.device if self.mu_sum is None else self.mu_sum.device
        # elementwise in at least float32 (half precision would round the KL of a posterior
        # near the prior away), summed in float64: exact enough for the variance of mu
        # (E[mu^2] - E[mu]^2) at half the memory traffic of a float64 copy of the batch
        work = torch.promote_types(mu.dtype, torch.float32)
        total = _sum_dtype(device)
        m = mu.detach().reshape(rows, dims).to(device=device, dtype=work)
        lv = logvar.detach().reshape(rows, dims).to(device=device, dtype=work)
        m2 = m * m
        # exp(lv) - 1 - lv with expm1: no cancellation for the small log-variances of
        # a posterior near the prior, exactly where the collapse threshold (0.01 nats) lies
        kl = 0.5 * (m2 + torch.expm1(lv) - lv)
        mu_sum, mu_sq, kl_sum = (t.sum(0, dtype=total) for t in (m, m2, kl))
        if self.mu_sum is not None and self.mu_sq is not None and self.kl_sum is not None:
            mu_sum, mu_sq, kl_sum = self.mu_sum + mu_sum, self.mu_sq + mu_sq, self.kl_sum + kl_sum
        self.mu_sum, self.mu_sq, self.kl_sum = mu_sum, mu_sq, kl_sum
        self.n += rows
        self.dims = dims

    def pack(self, stats: dict[str, Any], pack: StepPack) -> None:
        assert self.mu_sum is not None and self.mu_sq is not None and self.kl_sum is not None
        stats["n"] = float(self.n)
        stats["dims"] = float(self.dims or 0)
        pack.put(stats, "mu_sum", self.mu_sum)
        pack.put(stats, "mu_sq", self.mu_sq)
        pack.put(stats, "kl_sum", self.kl_sum)
