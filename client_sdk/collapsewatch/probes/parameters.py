"""Parameters on sampled steps: weight and gradient norms before the optimizer steps, the update
norm after it (``ParameterStat``, probe kind ``parameter``), and on some sampled steps their
sparsity and NaN/Inf counts (:mod:`collapsewatch.probes.sparsity`). A parameter sharded across
ranks (FSDP) is read as this rank's shard (:func:`collapsewatch.distributed.local_tensor`).

The update norm of a tensor of more than ``UPDATE_SAMPLE`` elements is estimated from a strided
sample of that many (scaled by the root of the sampling factor): copying every weight before
the step cost as much memory as the model and a memory pass per sampled step, for a ratio that
is shown, not judged."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from collapsewatch.distributed import local_tensor
from collapsewatch.probes.base import Hooks, Probe
from collapsewatch.probes.sparsity import Sparsity, strided_sample
from collapsewatch.schemas import ProbeInfo, ProbeKind

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch
    from torch import nn

    from collapsewatch.pipeline.packing import StepPack

#: Elements of one tensor read for its update norm; larger tensors are read through a sample.
UPDATE_SAMPLE = 1 << 16


def norms(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """L2 norms in float32, in as few kernels as the devices and dtypes allow."""
    import torch

    if not tensors:
        return []
    try:
        return list(torch._foreach_norm(tensors, 2, dtype=torch.float32))
    except (RuntimeError, TypeError):  # layouts the fused kernel refuses
        return [torch.linalg.vector_norm(t, dtype=torch.float32) for t in tensors]


class _Snapshot:
    """The parameters as the optimizer is about to see them."""

    __slots__ = ("before", "grad_norms", "scales", "sparsity", "weight_norms")

    def __init__(
        self,
        weight_norms: list[torch.Tensor],
        grad_norms: dict[int, torch.Tensor],
        sparsity: list[dict[str, torch.Tensor]] | None,
        before: list[torch.Tensor] | None,
        scales: list[float] | None = None,
    ) -> None:
        self.weight_norms = weight_norms
        self.grad_norms = grad_norms
        self.sparsity = sparsity
        self.before = before  # copies of the weights' samples (see UPDATE_SAMPLE)
        self.scales = scales  # each sample's factor to the whole tensor


class ParameterProbe(Probe):
    """The trainable parameters (``(name, tensor)`` in model order).

    With an optimizer, the snapshot is taken in its step pre-hook and the copies of the weights
    kept then give the update norm at the end of the step (one copy of the trainable
    parameters, on sampled steps only). Without one, the snapshot is taken when the step ends,
    without an update norm.
    """

    label = "the parameters"

    def __init__(
        self,
        params: list[tuple[str, torch.Tensor]],
        model: nn.Module,
        optimizer: Any,
        modules: dict[str, str],
        step: Callable[[], int],
    ) -> None:
        super().__init__()
        self.params = params
        self.optimizer = optimizer
        self.sparsity = Sparsity(params, model)
        self._modules = modules  # parameter name -> its module's class name
        self._step = step  # the current step (the sparsity snapshot's cadence is in steps)
        self._snapshot: _Snapshot | None = None

    def infos(self, order: int) -> list[ProbeInfo]:
        out: list[ProbeInfo] = []
        for name, param in self.params:
            try:
                size = param.numel()
            except (RuntimeError, ValueError):  # an uninitialised lazy parameter
                size = 0
            out.append(
                ProbeInfo(
                    name=name,
                    kind=ProbeKind.parameter,
                    module=self._modules.get(name, "")[:128],
                    order=order + len(out),
                    params=size,
                )
            )
        return out + self.sparsity.probes(order + len(out))

    def install(self, hooks: Hooks) -> None:
        if self.optimizer is not None:
            hooks.optimizer_pre(self.optimizer, self, self._before_update)

    def _before_update(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._snapshot = self._take(keep_weights=True)

    def _take(self, keep_weights: bool) -> _Snapshot:
        weights = [local_tensor(p).detach() for _, p in self.params]
        grads = [
            (i, local_tensor(p.grad)) for i, (_, p) in enumerate(self.params) if p.grad is not None
        ]
        dense = [(i, g) for i, g in grads if not g.is_sparse]
        grad_norms = dict(zip([i for i, _ in dense], norms([g for _, g in dense]), strict=True))
        weight_norms = norms(weights)
        # before the update: the weights the forward used (a mask or a proximal step applied
        # after optimizer.step() has zeroed them; the update would make them dense again)
        sparsity = self.sparsity.measure(weight_norms, grad_norms, self._step())
        if not keep_weights:
            return _Snapshot(weight_norms, grad_norms, sparsity, None)
        samples = [strided_sample(w, UPDATE_SAMPLE) for w in weights]
        before = [sample.clone() for sample, _ in samples]
        return _Snapshot(weight_norms, grad_norms, sparsity, before, [f for _, f in samples])

    def flush(self, pack: StepPack, step: int) -> None:
        import torch

        snap, self._snapshot = self._snapshot or self._take(keep_weights=False), None
        records = []
        for i, (name, param) in enumerate(self.params):
            stats = pack.record(name, ProbeKind.parameter.value, step)
            stats["numel"] = float(local_tensor(param).numel())
            pack.put(stats, "weight_norm", snap.weight_norms[i])
            if i in snap.grad_norms:
                pack.put(stats, "grad_norm", snap.grad_norms[i])
            records.append(stats)
        if snap.before is not None and snap.scales is not None:
            after = [strided_sample(local_tensor(p), UPDATE_SAMPLE)[0] for _, p in self.params]
            torch._foreach_sub_(snap.before, after)  # in place: no second copy
            updates = norms(snap.before)
            for stats, norm, scale in zip(records, updates, snap.scales, strict=True):
                pack.put(stats, "update_norm", norm * scale**0.5 if scale != 1.0 else norm)
        if snap.sparsity is not None:
            self.sparsity.file(pack, records, snap.sparsity, step)

    def reset(self) -> None:
        self._snapshot = None
