"""What a model computes with torch functions rather than modules, seen on sampled steps.

Hooks see modules; much of a real model is function calls inside its own ``forward``:
``F.scaled_dot_product_attention`` in a hand-written attention, ``F.relu`` between two
layers, ``F.cross_entropy`` in a loop (or inside a Hugging Face model's forward). On a sampled
step, a :class:`torch.overrides.TorchFunctionMode` is entered when the model's forward starts
and left when the step ends (or at the next forward), and reads a few functions as they are
called:

- ``F.scaled_dot_product_attention``: the attention entropy per head, recomputed for a sample
  of queries (:func:`collapsewatch.probes.attention.sdpa_probs`), probe kind ``attention``
  named after the module whose ``forward`` made the call (calls made by a watched
  ``nn.MultiheadAttention`` are that probe's already);
- ``F.relu`` and its variants (``nn.ReLU`` calls it): which watched layers feed a ReLU, the
  only layers whose never-positive units are dead (the others send no positive counts); the
  input of a ReLU fed by anything else (a BatchNorm) gets positive counts of its own, probe
  kind ``activation`` named after the ``nn.ReLU`` module or, for a functional call,
  ``<module>.relu`` (``.relu2``, ``.relu3`` for the later calls of that module's forward);
- ``F.cross_entropy`` and ``F.nll_loss``, when ``watch()`` got no criterion module: integer
  targets are the labels of the neural-collapse statistics;
- ``Tensor.backward``, when no criterion module and no ``monitor.step(loss=...)`` gives the
  loss: the loss the user backpropagates (on sampled steps).

The mode sees only the calls made from Python while it is active and costs a Python call per
torch function then, on sampled steps only; an unsampled step runs without it. It never
changes what a function returns, and an error while reading a call is the guard's.
"""

from __future__ import annotations

import functools
import sys
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from collapsewatch.probes.activation_functions import PositiveCounts
from collapsewatch.probes.activations import LayerOutputs
from collapsewatch.probes.attention import AttentionAccumulator, sdpa_probs
from collapsewatch.probes.base import MAX_NAME, Guard, Hooks, Probe
from collapsewatch.schemas import ProbeInfo, ProbeKind

if TYPE_CHECKING:
    from types import FrameType

    import torch
    from torch import nn

    from collapsewatch.pipeline.packing import StepPack

#: Frames looked at above a function call to find the module whose forward made it.
_MAX_FRAMES = 12
#: ``F.scaled_dot_product_attention``'s parameters, in order (to read positional arguments).
_SDPA_ARGS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale")


class FunctionProbe(Probe):
    """The torch functions of a sampled step's forward passes; see the module docstring.

    ``names`` maps a module's id to its path in the model; ``outputs`` holds the watched
    layers' outputs of the step. ``criterion(args)`` is told of the inputs of a functional
    loss, ``loss(value)`` of a loss being backpropagated; each may be None.
    """

    label = "torch functions"

    def __init__(
        self,
        model: nn.Module,
        names: dict[int, str],
        outputs: LayerOutputs,
        *,
        optimizer: Any,
        skip: set[int],
        criterion: Callable[[Any], None] | None,
        loss: Callable[[torch.Tensor], None] | None,
    ) -> None:
        import torch.nn.functional as F
        from torch import Tensor

        super().__init__()
        self._model = weakref.ref(model)
        self._optimizer = optimizer
        self._names = names
        self._outputs = outputs
        self._skip = skip  # ids of modules whose attention another probe watches
        self._criterion, self._loss = criterion, loss
        self._attention: dict[str, AttentionAccumulator] = {}
        self._units: dict[str, PositiveCounts] = {}
        self._relu_calls: dict[int, int] = {}  # functional ReLU calls per module, this forward
        self._known: set[str] = set()
        #: Probes found so far: attention computed with SDPA, ReLU inputs of their own.
        self.attention_sites: set[str] = set()
        self.relu_sites: set[str] = set()
        self.on_found: Callable[[ProbeInfo], None] | None = None
        self._mode: Any = None
        self._guard: Guard | None = None
        before: dict[Any, Callable[..., None]] = {F.scaled_dot_product_attention: self._sdpa}
        for fn in (F.relu, F.relu6, *_torch_relus(), Tensor.relu, Tensor.relu_):
            before[fn] = self._on_relu
        after: dict[Any, Callable[..., None]] = {}
        if criterion is not None:
            after[F.cross_entropy] = after[F.nll_loss] = self._on_criterion
        if loss is not None:
            before[Tensor.backward] = self._on_backward
        self._before, self._after = before, after

    def install(self, hooks: Hooks) -> None:
        model = self._model()
        if model is not None:
            self._guard = hooks.guard
            # the model's children too: a model may be a container whose parts are called
            # one by one (an nn.ModuleDict of a generator and a discriminator)
            for module in (model, *model.children()):
                hooks.forward_pre(module, self, self._enter)
        if self._optimizer is not None:  # the optimizer's own ops are of no interest
            hooks.optimizer_pre(self._optimizer, self, lambda *args: self.leave())

    # --------------------------------------------------------------------------- the mode

    def _enter(self, module: nn.Module, args: Any) -> None:
        if self._mode is not None:
            if module is self._model():
                self._relu_calls.clear()  # another forward of the model in the same step
            return  # still active: a child called by the model, or gradient accumulation
        self._relu_calls.clear()
        mode = _make_mode(self)
        mode.__enter__()
        self._mode = mode
        if self._guard is not None:
            self._guard.functions_watched = True

    def leave(self) -> None:
        """Leave the mode (the step ends); other modes pushed above it since stay as they
        were."""
        mode, self._mode = self._mode, None
        if mode is not None:
            _remove_mode(mode)
        if self._guard is not None:
            self._guard.functions_watched = False

    def on_call(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The mode's ``__torch_function__``: read the call, never change its result."""
        guard = self._guard
        read = self._before.get(func)
        if read is not None and guard is not None:
            guard.run(self, read, args, kwargs)
        out = func(*args, **kwargs)
        read = self._after.get(func)
        if read is not None and guard is not None and _grad_enabled():
            guard.run(self, read, args, kwargs, out)  # a training loss, not a validation one
        return out

    # ------------------------------------------------------------------------- the calls

    def _sdpa(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        module = self._caller()
        if module is not None and id(module) in self._skip:
            return
        name = self._names.get(id(module), "") if module is not None else ""
        name = (name or "attention")[-MAX_NAME:]
        call = _bind(
            ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale"), args
        )
        call.update(kwargs)
        acc = self._attention.get(name) or AttentionAccumulator()
        acc.add_sequences(
            sdpa_probs(
                call["query"],
                call["key"],
                attn_mask=call.get("attn_mask"),
                is_causal=bool(call.get("is_causal", False)),
                scale=call.get("scale"),
            )
        )
        self._attention[name] = acc
        self.attention_sites.add(name)
        self._found(name, ProbeKind.attention, module)

    def _found(self, name: str, kind: ProbeKind, module: nn.Module | None) -> None:
        """Announce a probe on its first record."""
        if name not in self._known and self.on_found is not None:
            self._known.add(name)
            owner = type(module).__name__[:128] if module is not None else ""
            self.on_found(ProbeInfo(name=name, kind=kind, module=owner, order=0))

    def _on_relu(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        import torch
        from torch import nn

        x = args[0] if args else kwargs.get("input")
        if not isinstance(x, torch.Tensor) or x.dim() < 2:
            return
        layer = self._outputs.producer(x)
        if layer is not None:
            layer.relu_follows = True
            return
        module = self._caller()
        if module is None:
            return
        site = self._names[id(module)] or type(module).__name__
        if not isinstance(module, nn.ReLU | nn.ReLU6):
            calls = self._relu_calls[id(module)] = self._relu_calls.get(id(module), 0) + 1
            site = f"{site}.relu" + (str(calls) if calls > 1 else "")
        counts = self._units.get(site) or PositiveCounts()
        counts.add(x)
        self._units[site] = counts
        self.relu_sites.add(site)
        self._found(site, ProbeKind.activation, module)

    def _on_criterion(self, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
        call = _bind(("input", "target"), args)
        call.update(kwargs)
        if self._criterion is not None and "target" in call:
            self._criterion((call["input"], call["target"]))

    def _on_backward(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        import torch

        loss = args[0] if args else None
        if self._loss is not None and isinstance(loss, torch.Tensor) and loss.numel() == 1:
            self._loss(loss)

    def _caller(self) -> nn.Module | None:
        """The innermost module of the model whose ``forward`` is on the stack."""
        frame: FrameType | None = sys._getframe(1)
        for _ in range(_MAX_FRAMES):
            if frame is None:
                return None
            owner = frame.f_locals.get("self")
            if owner is not None and id(owner) in self._names:
                return owner  # type: ignore[no-any-return]
            frame = frame.f_back
        return None

    # -------------------------------------------------------------------------- the step

    def flush(self, pack: StepPack, step: int) -> None:
        self.leave()
        self._outputs.clear()
        attention, self._attention = self._attention, {}
        for name, acc in attention.items():
            if acc.n:
                acc.pack(pack.record(name, ProbeKind.attention.value, step), pack)
        units, self._units = self._units, {}
        for site, counts in units.items():
            counts.pack(pack.record(site, ProbeKind.activation.value, step), pack)

    def reset(self) -> None:
        self.leave()
        self._outputs.clear()
        self._attention, self._units = {}, {}


def _torch_relus() -> tuple[Any, ...]:
    import torch

    return (torch.relu, torch.relu_)


def _grad_enabled() -> bool:
    import torch

    return torch.is_grad_enabled()


def _bind(names: tuple[str, ...], args: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip(names, args, strict=False))


@functools.cache
def _mode_class() -> type:
    from torch.overrides import TorchFunctionMode

    class Watching(TorchFunctionMode):
        """Hands every torch function call to a :class:`FunctionProbe`."""

        def __init__(self, probe: FunctionProbe) -> None:
            super().__init__()
            self.probe = probe

        def __torch_function__(
            self,
            func: Any,
            types: Any,
            args: tuple[Any, ...] = (),
            kwargs: dict[str, Any] | None = None,
        ) -> Any:
            return self.probe.on_call(func, args, kwargs or {})

    return Watching


def _make_mode(probe: FunctionProbe) -> Any:
    return _mode_class()(probe)


def _remove_mode(mode: Any) -> None:
    """Take ``mode`` off the torch function mode stack, wherever it is in it."""
    import torch

    above = []  # modes entered after ours, to put back as they were
    while torch._C._len_torch_function_stack() > 0:
        top = torch._C._pop_torch_function_stack()
        if top is mode:
            break
        above.append(top)
    for other in reversed(above):
        torch._C._push_on_torch_function_stack(other)
