"""On-device statistics: what the hooks reduce a layer's output, a parameter or the loss to.

Everything here runs on the tensor's own device, under ``no_grad``, without a host sync: the
results stay tensors until the monitor copies a whole sampled step to the host at once.
Accumulators are sums, so several forward calls on one step (two views, gradient
accumulation) add up, and the reduction of a concatenation equals the sum of the reductions.
"""

from __future__ import annotations

import math
import weakref
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from collapsewatch.probes.base import Hooks, Probe
from collapsewatch.probes.spectra import covariance_spectra
from collapsewatch.schemas import ProbeInfo, ProbeKind

if TYPE_CHECKING:
    import torch
    from torch import nn

    from collapsewatch.pipeline.packing import StepPack
    from collapsewatch.probes.inputs import DataRank

#: Rows that enter the covariance on one forward call; more are subsampled with a stride.
COV_ROWS = 4096
#: Covariance values (rows x units) of one CPU layer kept for the sender thread per step.
KEEP_MAX = 1 << 21
#: Width of the random projection; wider layers are projected to this many dimensions.
COV_DIM = 256
#: Seed of the projection, fixed so every run (and every rank) projects the same way.
PROJECTION_SEED = 0x5EED
#: Sampled steps between two counts of a layer's live units (a pass over its weight).
LIVE_EVERY = 8
#: The uncentred second-moment spectrum (RankMe) is decomposed on one sampled step in this
#: many: it doubles the eigendecompositions, which run in the sender thread but still take
#: CPU from training on a machine without a GPU.
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
    """Sums over the rows a layer produced on one sampled step (see ``ActivationStat``).

    The covariance rows of a CPU layer are kept (a copy of at most ``KEEP_MAX`` values) and
    reduced in the sender thread: their projection and outer product were the largest part of
    a sampled step's cost on the training thread. On a GPU, when ranks merge, or past
    ``KEEP_MAX``, the covariance is accumulated on the device as the rows come.
    """

    __slots__ = (
        "cov_n",
        "cov_outer",
        "cov_shift",
        "cov_sum",
        "kept",
        "kept_values",
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
        self.kept: list[torch.Tensor] = []  # CPU covariance rows, unprojected
        self.kept_values = 0

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
        # positive counts as float sums of sign(max(x, 0)): a third of the time of a boolean
        # comparison summed as integers (exact: fewer than 2**24 rows a call)
        pos = x.clamp(min=0).sign_().sum(0)

        # Covariance on at most COV_ROWS rows: a stride keeps it deterministic and avoids
        # drawing from the user's RNG.
        z = x[:: -(-m // COV_ROWS)] if m > COV_ROWS else x
        if z.device.type == "cpu" and self.kept_values + z.numel() <= KEEP_MAX:
            # a copy: the layer's output may still change in place (an inplace ReLU)
            self.kept.append(z.clone(memory_format=torch.contiguous_format))
            self.kept_values += z.numel()
        else:
            self._accumulate(z)

        if self.n == 0:
            self.sum, self.unit_sum = sums[0], sums[1]
            self.sumsq, self.pos = sumsq, pos
        else:
            assert self.sum is not None and self.unit_sum is not None
            assert self.sumsq is not None and self.pos is not None
            self.sum += sums[0]
            self.unit_sum += sums[1]
            self.sumsq += sumsq
            self.pos += pos
        self.n += m
        self.cov_n += z.shape[0]
        self.width = d

    def _accumulate(self, z: torch.Tensor) -> None:
        """Add covariance rows to the sums of the covariance, projected when wide."""
        if z.shape[1] > COV_DIM:
            z = z @ projection(z.shape[1], z.device, z.dtype)
        if self.cov_shift is None:
            # Shifting by the first call's mean keeps float32 exact enough when |mean| >> std,
            # which is exactly the collapsed regime the eigenvalues must still resolve.
            self.cov_shift = z.mean(0)
        zc = z - self.cov_shift
        if self.cov_sum is None or self.cov_outer is None:
            self.cov_sum, self.cov_outer = zc.sum(0), zc.T @ zc
        else:
            self.cov_sum += zc.sum(0)
            self.cov_outer += zc.T @ zc

    def pack(
        self,
        stats: dict[str, Any],
        pack: StepPack,
        raw: bool,
        in_dim: int | None = None,
        data: DataRank | None = None,
    ) -> None:
        """File this step's ``ActivationStat`` values into a record.

        The covariance (``k x k``) is decomposed after the host copy (``StepPack.defer``), and
        built there from the kept rows when all of them were kept and ranks do not merge;
        ``raw`` also decomposes the uncentred second moment (RankMe). ``in_dim``: see
        :func:`input_dim`; ``data``: the model input's rank, added then.
        """
        import torch

        if in_dim:
            stats["in_dim"] = float(in_dim)
        stats["n"] = float(self.n)
        stats["width"] = float(self.width)
        stats["cov_n"] = float(self.cov_n)
        for key in ("sum", "sumsq", "unit_sum"):
            if getattr(self, key) is not None:
                pack.put(stats, key, getattr(self, key))
        if self.pos is not None:
            pack.put(stats, "pos", self.pos)
        spectra = covariance_spectra if raw else _centred_only

        def work(cov: torch.Tensor, mean: torch.Tensor) -> dict[str, Any]:
            return {**spectra(cov, mean), **(data.stats() if data is not None else {})}

        if self.kept and self.cov_outer is None and not pack.merging:
            rows = self.kept[0] if len(self.kept) == 1 else torch.cat(self.kept)
            pack.defer(stats, [rows], lambda rows: work(*row_moments(rows)), owned=True)
            return
        # some rows went to the device sums, or ranks merge matrices: the sums, here
        cov = self.covariance()
        assert self.cov_sum is not None and self.cov_shift is not None
        # the rows' mean, undoing the shift (C + mu mu^T is their second moment); with the
        # covariance and cov_n it lets data-parallel ranks merge before the decomposition
        mean = self.cov_shift + self.cov_sum / self.cov_n
        pack.defer(stats, [cov, mean], work, moments="cov_n")

    def covariance(self) -> torch.Tensor:
        """The centred (population) covariance of the covariance rows, ``k x k``, computed
        now (kept rows are added to the sums first)."""
        for z in self.kept:
            self._accumulate(z)
        self.kept, self.kept_values = [], 0
        assert self.cov_sum is not None and self.cov_outer is not None
        mean = self.cov_sum / self.cov_n
        return self.cov_outer / self.cov_n - mean[:, None] * mean[None, :]


def row_moments(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The (population) covariance and the mean of covariance rows ``[r, d]``, projected to
    ``COV_DIM`` when wider: the same values the device sums give, centred exactly (float64)."""
    import torch

    if rows.shape[1] > COV_DIM:
        rows = rows @ projection(rows.shape[1], rows.device, rows.dtype)
    z = rows.to(torch.float64)
    mean = z.mean(0)
    zc = z - mean
    return (zc.T @ zc / z.shape[0]).float(), mean.float()


def _centred_only(cov: torch.Tensor, mean: torch.Tensor) -> dict[str, Any]:
    return covariance_spectra(cov, None)


class ActivationProbe(Probe):
    """The outputs of one layer (Linear, ConvNd, ConvTransposeNd...) on sampled steps: per-unit
    sums and a projected covariance (``ActivationStat``), probe kind ``activation``."""

    def __init__(
        self,
        name: str,
        module: nn.Module,
        spatial_dims: int,
        in_dim: int | None,
        width: int | None,
        outputs: LayerOutputs | None = None,
        data: DataRank | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.label = f"layer {name!r}"
        self.module = module
        self.spatial_dims = spatial_dims  # 0: units in the last dim; N: channels before N dims
        self.in_dim = in_dim  # bounds the rank of the output (ActivationStat.in_dim)
        self.width = width
        self.acc = ActivationAccumulator()
        self._flushes = 0
        self._outputs = outputs
        self._data = data
        self._live: torch.Tensor | None = None
        #: A ReLU-like function takes this layer's output: its never-positive units are dead
        #: (set by :class:`collapsewatch.probes.functions.FunctionProbe`). Positive counts
        #: are sent only then: a unit that is never positive before a GELU, a norm or nothing
        #: at all is not dead.
        self.relu_follows = False
        #: The last layer of a repeated block, and not the model's last layer: most often a
        #: residual branch (nanoGPT's ``c_proj``, ``h + W2 relu(W1 h)``), whose output is added
        #: to the stream. A branch that learned a near-constant output (weight decay shrinks
        #: it to its bias) is not a collapsed representation, so its unit-vector sum, which
        #: judges complete collapse, is not sent; the layers after the blocks are judged.
        self.branch_output = False

    def infos(self, order: int) -> list[ProbeInfo]:
        return [
            ProbeInfo(
                name=self.name,
                kind=ProbeKind.activation,
                module=type(self.module).__name__[:128],
                order=order,
                width=self.width,
                params=parameter_count(self.module),
            )
        ]

    def install(self, hooks: Hooks) -> None:
        hooks.forward(self.module, self, self._on_output)

    def _on_output(self, module: nn.Module, args: Any, output: Any) -> None:
        import torch

        if isinstance(output, tuple | list) and output:  # nn.LSTM/GRU: (outputs, state)
            output = output[0]
        if not isinstance(output, torch.Tensor):
            output = getattr(output, "data", output)  # a PackedSequence: its packed outputs
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"output is a {type(output).__name__}, not a tensor")
        self.acc.add(as_rows(output, self.spatial_dims))
        if self._outputs is not None:
            self._outputs.add(output, self)

    def flush(self, pack: StepPack, step: int) -> None:
        acc, self.acc = self.acc, ActivationAccumulator()
        if acc.empty:
            return
        raw = self._flushes % RAW_SPECTRUM_EVERY == 0
        self._flushes += 1
        if not self.relu_follows:
            acc.pos = None
        if self.branch_output:
            acc.unit_sum = None
        stats = pack.record(self.name, ProbeKind.activation.value, step)
        if self._flushes % LIVE_EVERY == 1:
            self._live = _live_units(self.module, acc.width)
        if self._live is not None:
            pack.put(stats, "live", self._live)
        acc.pack(stats, pack, raw, self.in_dim, self._data)

    def reset(self) -> None:
        self.acc = ActivationAccumulator()


def _live_units(module: nn.Module, width: int) -> torch.Tensor | None:
    """Output units whose weights are not all zero, on the device (None when the layer's
    weight does not hold its outputs in its first dim, or is sharded across ranks: reading it
    whole would take a collective). A weight pruned with ``torch.nn.utils.prune`` is the
    module's masked ``weight`` attribute."""
    import torch

    from collapsewatch.distributed import is_sharded

    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() < 2 or weight.shape[0] != width:
        return None
    if is_sharded(weight):
        return None
    return weight.detach().flatten(1).ne(0).any(1).sum()


class LayerOutputs:
    """The outputs the layers of a sampled step produced, to tell which layer a tensor comes
    from (a ReLU's input, say). Weak references: the step's outputs are not kept alive."""

    def __init__(self) -> None:
        self._by_id: dict[int, tuple[weakref.ref[torch.Tensor], ActivationProbe]] = {}

    def add(self, output: torch.Tensor, probe: ActivationProbe) -> None:
        self._by_id[id(output)] = (weakref.ref(output), probe)

    def producer(self, tensor: torch.Tensor) -> ActivationProbe | None:
        """The layer whose output ``tensor`` is (the very tensor, not a copy), or None."""
        entry = self._by_id.get(id(tensor))
        return entry[1] if entry is not None and entry[0]() is tensor else None

    def clear(self) -> None:
        self._by_id.clear()


def parameter_count(module: nn.Module) -> int:
    """Parameters of ``module`` and its children (0 for a lazy module not yet called)."""
    try:
        return sum(p.numel() for p in module.parameters())
    except (RuntimeError, ValueError):  # lazy modules have no shape before their first call
        return 0
