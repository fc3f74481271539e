"""Probes beyond the Linear/Conv outputs: saturating activations, attention, transformer blocks.

- ``nn.Tanh`` and ``nn.Sigmoid`` modules: per-unit counts of saturated outputs (family 9),
  probe kind ``activation`` with ``n``, ``width`` and ``sat`` only.
- Transformer blocks (``nn.TransformerEncoderLayer``, ``nn.TransformerDecoderLayer`` and the
  modules given as ``watch(..., blocks=[...])``): token statistics of their output, the
  residual stream (family 4), probe kind ``tokens`` (see :mod:`collapsewatch.tokens`).
- ``nn.MultiheadAttention`` modules (so every ``nn.TransformerEncoderLayer``/``DecoderLayer``'s
  attention): the normalised attention entropy per head, recomputed for a sample of queries
  from the captured inputs, and at the end of the step the spectral norm of ``W_Q^h W_K^h^T``
  per head (family 5), probe kind ``attention`` (see :mod:`collapsewatch.attention`).

Same rules as the monitor's own hooks: on an unsampled step a hook reads one flag and returns;
on a sampled step statistics stay on the device until :meth:`Observers.flush`; an error
disables that one probe (logged once) and never reaches the training loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from collapsewatch.attention import AttentionAccumulator, qk_sigma
from collapsewatch.probes import as_rows
from collapsewatch.runinfo import MAX_NAME
from collapsewatch.schemas import ProbeInfo, ProbeKind
from collapsewatch.tokens import TokenAccumulator, block_inputs

if TYPE_CHECKING:
    import torch
    from torch import nn

    from collapsewatch.packing import StepPack

#: |tanh| above this is saturated (gradient 1 - y^2 < 0.02).
TANH_SATURATED = 0.99
#: sigmoid below this or above 1 - this is saturated (gradient y (1 - y) < 0.01).
SIGMOID_SATURATED = 0.01

LogOnce = Callable[[str, str, BaseException], None]


class SaturationAccumulator:
    """Per-unit count of saturated values of a Tanh or Sigmoid output (``ActivationStat.sat``)."""

    __slots__ = ("n", "sat", "sigmoid", "width")

    def __init__(self, sigmoid: bool) -> None:
        self.sigmoid = sigmoid
        self.n = 0
        self.width = 0
        self.sat: torch.Tensor | None = None

    def add(self, rows: torch.Tensor) -> None:
        """Add ``rows`` (``[m, units]``); call under no_grad."""
        if rows.shape[0] == 0:
            return
        if self.sigmoid:
            saturated = (rows < SIGMOID_SATURATED) | (rows > 1 - SIGMOID_SATURATED)
        else:
            saturated = rows.abs() > TANH_SATURATED
        counts = saturated.sum(0)
        self.sat = counts if self.sat is None else self.sat + counts
        self.n += rows.shape[0]
        self.width = rows.shape[1]

    def pack(self, stats: dict[str, Any], pack: StepPack) -> None:
        assert self.sat is not None
        stats["n"] = float(self.n)
        stats["width"] = float(self.width)
        pack.put(stats, "sat", self.sat)


class _Observed:
    """One observed module: its probe, its accumulator for the current sampled step."""

    __slots__ = ("acc", "disabled", "kind", "module", "name", "spatial_dims")

    def __init__(self, name: str, module: nn.Module, kind: str, spatial_dims: int = 0) -> None:
        self.name = name
        self.module = module
        self.kind = kind  # "tanh", "sigmoid", "block" or "attention"
        self.spatial_dims = spatial_dims
        self.disabled = False
        self.acc: SaturationAccumulator | TokenAccumulator | AttentionAccumulator = self.fresh()

    def fresh(self) -> SaturationAccumulator | TokenAccumulator | AttentionAccumulator:
        if self.kind == "block":
            return TokenAccumulator()
        if self.kind == "attention":
            return AttentionAccumulator()
        return SaturationAccumulator(sigmoid=self.kind == "sigmoid")

    @property
    def probe_kind(self) -> ProbeKind:
        if self.kind == "block":
            return ProbeKind.tokens
        if self.kind == "attention":
            return ProbeKind.attention
        return ProbeKind.activation


def find(model: nn.Module, blocks: Iterable[nn.Module] = ()) -> list[_Observed]:
    """Saturating activations, attention modules and transformer blocks of ``model``, in model
    order.

    A Tanh/Sigmoid after a ConvNd (the last Linear/Conv before it in model order) has its
    units in the channel dim; otherwise in the last dim. Blocks nested in a watched block are
    watched too (each is its own residual-stream position).
    """
    from torch import nn

    from collapsewatch.runinfo import _spatial_dims

    chosen = {id(b) for b in blocks}
    found: list[_Observed] = []
    spatial = 0
    for name, module in model.named_modules():
        probe = (name or type(module).__name__)[-MAX_NAME:]
        dims = _spatial_dims(module)
        if dims is not None:
            spatial = dims
        if isinstance(module, nn.Tanh | nn.Sigmoid):
            kind = "sigmoid" if isinstance(module, nn.Sigmoid) else "tanh"
            found.append(_Observed(probe, module, kind, spatial))
        elif id(module) in chosen or isinstance(
            module, nn.TransformerEncoderLayer | nn.TransformerDecoderLayer
        ):
            found.append(_Observed(probe, module, "block"))
        elif isinstance(module, nn.MultiheadAttention):  # one given as a block stays a block
            found.append(_Observed(probe, module, "attention"))
    missing = chosen - {id(o.module) for o in found}
    if missing:
        raise ValueError(f"collapsewatch: {len(missing)} of the blocks are not part of the model")
    return found


class Observers:
    """Hooks on saturating activations, attention and transformer blocks; see the module
    docstring."""

    def __init__(
        self,
        model: nn.Module,
        blocks: Iterable[nn.Module] | None,
        *,
        sampling: Callable[[], bool],
        log_once: LogOnce,
    ) -> None:
        self._found = find(model, blocks or ())
        self._sampling = sampling
        self._log_once = log_once
        self._seconds = 0.0

    def infos(self, start: int) -> list[ProbeInfo]:
        """Probe descriptions, ordered after the ``start`` probes the monitor already has."""
        out = []
        for i, o in enumerate(self._found):
            width = getattr(getattr(o.module, "linear2", None), "out_features", None)
            if o.kind == "attention":
                width = getattr(o.module, "embed_dim", None)
            module = type(o.module).__name__[:128]
            kind = o.probe_kind
            info = ProbeInfo(name=o.name, kind=kind, module=module, order=start + i, width=width)
            out.append(info)
        return out

    def install(self) -> list[Any]:
        """Register the forward hooks; returns their handles."""
        handles = []
        for o in self._found:
            if o.kind == "block":
                hook = o.module.register_forward_hook(self._block_hook(o), with_kwargs=True)
            elif o.kind == "attention":
                hook = o.module.register_forward_hook(self._attention_hook(o), with_kwargs=True)
            else:
                hook = o.module.register_forward_hook(self._saturation_hook(o))
            handles.append(hook)
        return handles

    def flush(self, pack: StepPack, step: int) -> float:
        """File the sampled step's records into ``pack``, start fresh accumulators, and return
        the seconds the hooks spent since the last flush (for the SDK's time budget)."""
        for o in self._found:
            acc, o.acc = o.acc, o.fresh()
            if acc.n:
                stats = pack.record(o.name, o.probe_kind.value, step)
                acc.pack(stats, pack)
                if o.kind == "attention":
                    self._pack_sigma(o, stats, pack)
        seconds, self._seconds = self._seconds, 0.0
        return seconds

    def reset(self) -> None:
        """Drop partial statistics (a sampled step cut short)."""
        for o in self._found:
            o.acc = o.fresh()
        self._seconds = 0.0

    # ------------------------------------------------------------------------------ hooks

    def _failed(self, o: _Observed, exc: Exception) -> None:
        o.disabled = True
        o.acc = o.fresh()
        message = f"collapsewatch: stopped observing {o.name!r} after an error: {exc!r}"
        self._log_once(f"observer:{o.name}", message, exc)

    def _saturation_hook(self, o: _Observed) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if not self._sampling() or o.disabled or not module.training:
                return
            t0 = time.perf_counter()
            try:
                import torch

                with torch.no_grad():
                    assert isinstance(o.acc, SaturationAccumulator)
                    o.acc.add(as_rows(output, o.spatial_dims))
            except Exception as exc:
                self._failed(o, exc)
            self._seconds += time.perf_counter() - t0

        return hook

    def _pack_sigma(self, o: _Observed, stats: dict[str, Any], pack: StepPack) -> None:
        """``qk_sigma`` from the weights as they are at the end of the step; an error leaves it
        out of this record only (logged once): the entropies are still worth sending."""
        try:
            import torch

            with torch.no_grad():
                pack.put(stats, "qk_sigma", qk_sigma(o.module))  # type: ignore[arg-type]
        except Exception as exc:
            message = f"collapsewatch: no qk_sigma for {o.name!r} after an error: {exc!r}"
            self._log_once(f"qk_sigma:{o.name}", message, exc)

    def _attention_hook(self, o: _Observed) -> Any:
        def hook(module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
            if not self._sampling() or o.disabled or not module.training:
                return
            t0 = time.perf_counter()
            try:
                import torch

                with torch.no_grad():
                    assert isinstance(o.acc, AttentionAccumulator)
                    o.acc.add_mha(module, args, kwargs)  # type: ignore[arg-type]
            except Exception as exc:
                self._failed(o, exc)
            self._seconds += time.perf_counter() - t0

        return hook

    def _block_hook(self, o: _Observed) -> Any:
        def hook(module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
            if not self._sampling() or o.disabled or not module.training:
                return
            t0 = time.perf_counter()
            try:
                import torch

                with torch.no_grad():
                    assert isinstance(o.acc, TokenAccumulator)
                    o.acc.add(output, *block_inputs(module, args, kwargs))
            except Exception as exc:
                self._failed(o, exc)
            self._seconds += time.perf_counter() - t0

        return hook
