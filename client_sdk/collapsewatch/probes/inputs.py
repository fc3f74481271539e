"""The model's input data: how many directions it has (its effective rank), a bound on what
any layer can have.

A generator fed a 2-D latent, a network on 8 input features or on low-rank images cannot have
a representation of many more directions than its data, whatever the widths of its layers:
judged against their widths, such healthy layers read as collapsed. On a few sampled steps
(the first three, then one in ``EVERY``) the first floating-point tensor the model's forward
gets is reduced like a layer's output (rows = samples, each flattened) to a projected
covariance; its effective rank, computed with the other spectra in the sender thread, goes
into every activation record of the steps after it as ``data_rank``. Token ids (integers) are
not data of that kind and give no bound.
"""

from __future__ import annotations

import math
import weakref
from typing import TYPE_CHECKING, Any

from collapsewatch.probes.activations import COV_DIM, row_moments
from collapsewatch.probes.base import Hooks, Probe
from collapsewatch.probes.spectra import eigenvalues

if TYPE_CHECKING:
    import torch
    from torch import nn

    from collapsewatch.pipeline.packing import StepPack

#: Sampled steps between two measures of the data's rank (after the first three).
EVERY = 8


class DataRank:
    """The latest effective rank of the model's input; written and read in the sender thread,
    where the deferred work of each pack runs in filing order (the input's first)."""

    def __init__(self) -> None:
        self.value: float | None = None

    def stats(self) -> dict[str, Any]:
        """What an activation record gets: ``data_rank`` once it has been measured."""
        return {} if self.value is None else {"data_rank": self.value}


class InputProbe(Probe):
    """Measures :class:`DataRank` from the model's input; files no record of its own."""

    label = "the model's input"

    def __init__(self, model: nn.Module, rank: DataRank) -> None:
        super().__init__()
        self._model = weakref.ref(model)
        self.rank = rank
        self.rows: torch.Tensor | None = None  # this step's input rows, a copy
        self._sampled = 0

    def install(self, hooks: Hooks) -> None:
        model = self._model()
        if model is not None and (self._sampled < 3 or self._sampled % EVERY == 0):
            hooks.forward_pre(model, self, self._on_input)
        self._sampled += 1

    def _on_input(self, module: nn.Module, args: Any) -> None:
        import torch

        x = next((a for a in args if isinstance(a, torch.Tensor)), None)
        if x is None or not x.is_floating_point() or x.dim() < 2 or self.rows is not None:
            return  # no data of that kind, or measured already on this step
        rows = x.detach().reshape(x.shape[0], -1)
        rows = rows[:: max(1, rows.shape[0] // COV_DIM)]
        self.rows = rows.to(torch.float32, memory_format=torch.contiguous_format, copy=True)

    def flush(self, pack: StepPack, step: int) -> None:
        rows, self.rows = self.rows, None
        if rows is not None:  # the covariance and its spectrum: in the sender thread
            pack.defer({}, [rows], lambda r: self._measured(row_moments(r)[0]), owned=True)

    def _measured(self, cov: torch.Tensor) -> dict[str, Any]:
        lam = eigenvalues(cov).double()
        total = float(lam.sum())
        if total > 0 and math.isfinite(total):
            p = lam[lam > 0] / total
            self.rank.value = float(math.exp(-(p * p.log()).sum()))
        return {}

    def reset(self) -> None:
        self.rows = None
