"""Weight sparsity and NaN/Inf counts of parameters (family 10 and training health).

On a sampled step at least ``SPARSITY_MIN_STEPS`` training steps after the last snapshot (the
first sampled step included), every parameter record gets
NaN and Inf counts of its weight and gradient, and every weight with two or more dims (the
prunable ones: Linear, Conv, embeddings) gets ``abs_sqrt_sum`` (sum |w|^0.5), ``abs_sum``
(||w||_1) and ``nonzero``, from which the server computes the PQ index and the density. One
more record, probe ``(global)``, holds their sums over all prunable weights (a global PQ index
and density need the sums, not per-layer values).

A tensor of more than ``SAMPLE`` elements is read through a strided sample of about that many
(the stride is coprime with the last dim, so rows and columns are sampled evenly and a
structured pruning pattern is seen as it is), and its sums are scaled to the whole tensor: the
cost of a snapshot stays bounded however wide the layers (a full pass over three 4096 x 4096
weights took 62% of the SDK's time there). Densities and PQ indices are ratios, so they are the
sample's; a NaN or Inf outside the sample still counts once, read from the weight's and the
gradient's norms, which every sampled step computes in full.

A weight pruned with ``torch.nn.utils.prune`` is read through the module's attribute (the
masked ``weight``), not through the dense ``weight_orig`` parameter the optimizer updates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from collapsewatch.distributed import local_tensor
from collapsewatch.schemas import ProbeInfo, ProbeKind

if TYPE_CHECKING:
    import torch
    from torch import nn

    from collapsewatch.pipeline.packing import StepPack

#: Training steps between two sparsity snapshots, at least. Counted in steps, not sampled steps:
#: dense sampling (every 1-8 steps) takes a snapshot every 32 steps, sparse sampling (every 32
#: steps or more) on every sampled step, so a layer pruned at step s is seen within about
#: max(32, the interval) steps. (One sampled step in five made that 320 steps at an interval of
#: 64: the held-out pruning runs were alerted 20-44% of the run after the collapse.)
SPARSITY_MIN_STEPS = 32
#: Elements of one tensor read by a snapshot; larger tensors are read through a sample.
SAMPLE = 1 << 20
#: Probe of the record that sums the sparsity of all prunable weights.
GLOBAL_PROBE = "(global)"
_SUMMED = ("abs_sqrt_sum", "abs_sum", "nonzero", "numel")
_COUNTS = ("weight_nan", "weight_inf", "grad_nan", "grad_inf")


def _effective(model: nn.Module | None, name: str, param: torch.Tensor) -> torch.Tensor:
    """What the forward uses: the module's attribute, which for a weight pruned with
    ``torch.nn.utils.prune`` (before or after ``watch()``) is the masked tensor, while the
    parameter is the dense ``weight_orig``."""
    import torch

    if model is None:
        return param.detach()
    path, _, attr = name.rpartition(".")
    try:
        module = model.get_submodule(path) if path else model
        value = getattr(module, attr.removesuffix("_orig"))
    except AttributeError:
        return param.detach()
    if isinstance(value, torch.Tensor) and value.shape == param.shape:
        return value.detach()
    return param.detach()


class Sparsity:
    """The family-10 statistics of the parameters, at most once every ``min_steps`` steps."""

    def __init__(self, params: list[tuple[str, torch.Tensor]], model: nn.Module | None) -> None:
        self.params = params
        self.model = model
        self.min_steps = SPARSITY_MIN_STEPS  # per instance: the benchmark changes it
        self._last: int | None = None  # the step of the last snapshot
        self.prunable = [i for i, (_, p) in enumerate(params) if p.dim() >= 2]

    def probes(self, order: int) -> list[ProbeInfo]:
        """The ``(global)`` probe, when the model has prunable weights."""
        if not self.prunable:
            return []
        info = ProbeInfo(
            name=GLOBAL_PROBE, kind=ProbeKind.parameter, module="all weights", order=order
        )
        return [info]

    def measure(
        self, weight_norms: list[torch.Tensor], grad_norms: dict[int, torch.Tensor], step: int
    ) -> list[dict[str, torch.Tensor]] | None:
        """At ``step``, when a snapshot is due: per parameter (in order) its statistics, else
        None.

        ``weight_norms`` and ``grad_norms`` (by parameter index) are the full tensors' norms:
        a non-finite one makes the matching count at least 1.
        """
        # (a step before the last snapshot's means the counter went back: due at once)
        if self._last is not None and 0 <= step - self._last < self.min_steps:
            return None
        self._last = step
        out = []
        for i, (name, param) in enumerate(self.params):
            w = local_tensor(_effective(self.model, name, param))
            sample, scale = strided_sample(w)
            values = _nonfinite(sample, scale, weight_norms[i], "weight")
            grad = None if param.grad is None else local_tensor(param.grad)
            if grad is not None and not grad.is_sparse and i in grad_norms:
                values.update(_nonfinite(strided_sample(grad)[0], scale, grad_norms[i], "grad"))
            if i in self.prunable:
                a = sample.abs()
                # float32 sums of at most SAMPLE (2**20) values: torch sums in a cascade, so
                # the 0/1 counts are exact (below 2**24) and the others lose no digit that
                # matters, at a quarter of the time of float64 sums; scaled in float64
                values["abs_sqrt_sum"] = a.sqrt().sum().double() * scale
                values["abs_sum"] = a.sum().double() * scale
                values["nonzero"] = a.sign().sum().double() * scale
            out.append(values)
        return out

    def file(
        self,
        pack: StepPack,
        records: list[dict[str, Any]],
        values: list[dict[str, torch.Tensor]],
        step: int,
    ) -> None:
        """File :meth:`measure`'s values into the parameters' records and the ``(global)``
        record."""
        import torch

        totals: dict[str, list[torch.Tensor]] = {k: [] for k in (*_SUMMED, *_COUNTS)}
        for i, (stats, vals) in enumerate(zip(records, values, strict=True)):
            for key, value in vals.items():
                pack.put(stats, key, value)
                totals[key].append(value)
            if i in self.prunable:
                numel = float(local_tensor(self.params[i][1]).numel())
                totals["numel"].append(torch.tensor(numel, device=vals["abs_sum"].device))
        if not self.prunable:
            return
        device = self.params[self.prunable[0]][1].device
        stats = pack.record(GLOBAL_PROBE, ProbeKind.parameter.value, step)
        for key, parts in totals.items():
            if parts:
                total = torch.stack([p.to(device, torch.float64) for p in parts]).sum()
                pack.put(stats, key, total)


def strided_sample(t: torch.Tensor, size: int = SAMPLE) -> tuple[torch.Tensor, float]:
    """``t`` flattened, or a strided sample of about ``size`` of its elements (a view), and
    the factor that scales the sample's sums to the whole tensor."""
    import math

    flat = t.detach().reshape(-1)
    n = flat.numel()
    if n <= size:
        return flat, 1.0
    stride = -(-n // size)
    last = t.shape[-1] if t.dim() else 1
    while math.gcd(stride, last) != 1:
        stride += 1
    sample = flat[::stride]
    return sample, n / sample.numel()


def _nonfinite(
    sample: torch.Tensor, scale: float, norm: torch.Tensor, what: str
) -> dict[str, torch.Tensor]:
    """NaN and Inf counts of a tensor from its sample, at least 1 when its norm says so.

    On the CPU reading the norm costs nothing (no device to wait for), and a finite norm
    means no NaN or Inf anywhere in the tensor: the counts are zero without a pass over the
    sample, which took as long as the model's own step on every snapshot.
    """
    import math

    import torch

    if norm.device.type == "cpu" and math.isfinite(float(norm)):
        zero = torch.zeros((), dtype=torch.float64)
        return {f"{what}_nan": zero, f"{what}_inf": zero}
    nan = torch.isnan(sample).sum().double() * scale
    inf = torch.isinf(sample).sum().double() * scale
    if scale != 1.0:
        nan = torch.where(torch.isnan(norm), nan.clamp_min(1.0), nan)
        inf = torch.where(torch.isinf(norm), inf.clamp_min(1.0), inf)
    return {f"{what}_nan": nan, f"{what}_inf": inf}
