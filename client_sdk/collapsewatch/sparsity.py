"""Weight sparsity and NaN/Inf counts of parameters (family 10 and training health).

On one sampled step in ``SPARSITY_EVERY`` (the first included), every parameter record gets
NaN and Inf counts of its weight and gradient, and every weight with two or more dims (the
prunable ones: Linear, Conv, embeddings) gets ``abs_sqrt_sum`` (sum |w|^0.5), ``abs_sum``
(||w||_1) and ``nonzero``, from which the server computes the PQ index and the density. One
more record, probe ``(global)``, holds their sums over all prunable weights (a global PQ index
and density need the sums, not per-layer values).

Not every sampled step: each statistic is a full pass over the weights, and at ``every=1`` the
passes cost ~5-10% of a small MLP's step on CPU (bench/sdk_overhead.py); pruning and weight
decay change sparsity slowly, and the NaN of a diverged weight already shows in its norm,
which every sampled step has.

A weight pruned with ``torch.nn.utils.prune`` is read through the module's attribute (the
masked ``weight``), not through the dense ``weight_orig`` parameter the optimizer updates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from collapsewatch.schemas import ProbeInfo, ProbeKind

if TYPE_CHECKING:
    import torch
    from torch import nn

    from collapsewatch.packing import StepPack

#: Sampled steps between two sparsity snapshots.
SPARSITY_EVERY = 5
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
    """Adds the family-10 statistics to parameter records on one sampled step in a few."""

    def __init__(self, params: list[tuple[str, torch.Tensor]], model: nn.Module | None) -> None:
        self.params = params
        self.model = model
        self.every = SPARSITY_EVERY  # per instance: the benchmark turns it off for comparison
        self._calls = 0
        self.prunable = [i for i, (_, p) in enumerate(params) if p.dim() >= 2]

    def probes(self, start: int) -> list[ProbeInfo]:
        """The ``(global)`` probe, when the model has prunable weights."""
        if not self.prunable:
            return []
        info = ProbeInfo(
            name=GLOBAL_PROBE, kind=ProbeKind.parameter, module="all weights", order=start
        )
        return [info]

    def add(self, pack: StepPack, records: list[dict[str, Any]], step: int) -> None:
        """On one call in ``SPARSITY_EVERY``, file the statistics into ``records`` (one per
        parameter, in order) and a ``(global)`` record; call under no_grad."""
        import torch

        due = self._calls % self.every == 0
        self._calls += 1
        if not due:
            return
        totals: dict[str, list[torch.Tensor]] = {k: [] for k in (*_SUMMED, *_COUNTS)}
        for i, ((name, param), stats) in enumerate(zip(self.params, records, strict=True)):
            w = _effective(self.model, name, param)
            values = {"weight_nan": torch.isnan(w).sum(), "weight_inf": torch.isinf(w).sum()}
            grad = param.grad
            if grad is not None and not grad.is_sparse:
                values["grad_nan"] = torch.isnan(grad).sum()
                values["grad_inf"] = torch.isinf(grad).sum()
            if i in self.prunable:
                a = w.abs()
                # float64 sums: exact counts past 2**24 and no rounding drift on big layers
                values["abs_sqrt_sum"] = a.sqrt().sum(dtype=torch.float64)
                values["abs_sum"] = a.sum(dtype=torch.float64)
                values["nonzero"] = torch.count_nonzero(a)
                totals["numel"].append(torch.tensor(float(w.numel()), device=w.device))
            for key, value in values.items():
                pack.put(stats, key, value)
                totals[key].append(value)
        if not self.prunable:
            return
        device = self.params[self.prunable[0]][1].device
        stats = pack.record(GLOBAL_PROBE, "parameter", step)
        for key, parts in totals.items():
            if parts:
                pack.put(
                    stats, key, torch.stack([p.to(device, torch.float64) for p in parts]).sum()
                )
