"""Units at activation functions (family 9, dead and saturated units), probe kind
``activation`` with per-unit counts only:

- every ``nn.Tanh`` and ``nn.Sigmoid`` module: its saturated outputs (``n``, ``width``, ``sat``;
  the server's ``saturated_fraction``);
- the input of a ReLU that no watched layer feeds directly (a BatchNorm's output, say): its
  positive values (``n``, ``width``, ``pos``; the server's ``dead_fraction``), gathered by
  :class:`collapsewatch.probes.functions.FunctionProbe`. A ReLU after a watched Linear or
  Conv counts in that layer's record instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from collapsewatch.probes.activations import as_rows
from collapsewatch.probes.base import Hooks, Probe
from collapsewatch.schemas import ProbeInfo, ProbeKind

if TYPE_CHECKING:
    import torch
    from torch import nn

    from collapsewatch.pipeline.packing import StepPack

#: |tanh| above this is saturated (gradient 1 - y^2 < 0.02).
TANH_SATURATED = 0.99
#: sigmoid below this or above 1 - this is saturated (gradient y (1 - y) < 0.01).
SIGMOID_SATURATED = 0.01


class UnitCounts:
    """Per-unit count of the values a test picked, over every row added: packs as ``n`` (rows),
    ``width`` (units) and the counts under the name :attr:`STAT` of ``ActivationStat``."""

    __slots__ = ("counts", "n", "width")
    #: The name the counts are packed under.
    STAT: ClassVar[str] = ""

    def __init__(self) -> None:
        self.n = 0
        self.width = 0
        self.counts: torch.Tensor | None = None

    def count(self, picked: torch.Tensor) -> None:
        """Add ``picked`` (``[m, units]`` booleans, one row a value of every unit)."""
        counts = picked.sum(0)
        self.counts = counts if self.counts is None else self.counts + counts
        self.n += picked.shape[0]
        self.width = picked.shape[1]

    def pack(self, stats: dict[str, Any], pack: StepPack) -> None:
        assert self.counts is not None
        stats["n"] = float(self.n)
        stats["width"] = float(self.width)
        pack.put(stats, self.STAT, self.counts)


class SaturationAccumulator(UnitCounts):
    """Per-unit count of saturated values of a Tanh or Sigmoid output (``ActivationStat.sat``)."""

    __slots__ = ("sigmoid",)
    STAT = "sat"

    def __init__(self, sigmoid: bool) -> None:
        super().__init__()
        self.sigmoid = sigmoid

    def add(self, rows: torch.Tensor) -> None:
        """Add ``rows`` (``[m, units]``); call under no_grad."""
        if rows.shape[0] == 0:
            return
        if self.sigmoid:
            self.count((rows < SIGMOID_SATURATED) | (rows > 1 - SIGMOID_SATURATED))
        else:
            self.count(rows.abs() > TANH_SATURATED)


class PositiveCounts(UnitCounts):
    """Per-unit count of positive values at a ReLU's input (``ActivationStat.pos``)."""

    __slots__ = ()
    STAT = "pos"

    def add(self, x: torch.Tensor) -> None:
        """Add one input: units in dim 1 of a 4-D or 5-D (convolutional) tensor, else in the
        last dim; call under no_grad."""
        rows = as_rows(x, x.dim() - 2) if x.dim() >= 4 else x.reshape(-1, x.shape[-1])
        if self.width and rows.shape[1] != self.width:
            raise ValueError(f"{rows.shape[1]} units, {self.width} before at this ReLU")
        self.count(rows > 0)


class SaturationProbe(Probe):
    """One ``nn.Tanh`` or ``nn.Sigmoid`` module; its units are in the channel dim after a
    ConvNd (``spatial_dims`` dims follow them), else in the last dim."""

    def __init__(self, name: str, module: nn.Module, spatial_dims: int) -> None:
        from torch import nn

        super().__init__()
        self.name = name
        self.label = f"activation {name!r}"
        self.module = module
        self.sigmoid = isinstance(module, nn.Sigmoid)
        self.spatial_dims = spatial_dims
        self.acc = SaturationAccumulator(self.sigmoid)

    def infos(self, order: int) -> list[ProbeInfo]:
        kind, module = ProbeKind.activation, type(self.module).__name__[:128]
        return [ProbeInfo(name=self.name, kind=kind, module=module, order=order)]

    def install(self, hooks: Hooks) -> None:
        hooks.forward(self.module, self, self._on_output)

    def _on_output(self, module: nn.Module, args: Any, output: Any) -> None:
        self.acc.add(as_rows(output, self.spatial_dims))

    def flush(self, pack: StepPack, step: int) -> None:
        acc, self.acc = self.acc, SaturationAccumulator(self.sigmoid)
        if acc.n:
            acc.pack(pack.record(self.name, ProbeKind.activation.value, step), pack)

    def reset(self) -> None:
        self.acc = SaturationAccumulator(self.sigmoid)
