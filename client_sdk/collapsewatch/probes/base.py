"""The one probe protocol and the one guard between the training loop and collapsewatch.

Every source of statistics (a layer's outputs, the parameters, the loss, a classifier, the
attention of a module, an explicit logger...) is a :class:`Probe`. The monitor drives them all
the same way:

- ``install(hooks)`` at the start of every sampled step: register the hooks the probe reads
  through on ``hooks``; they are removed when the step ends, so an unsampled step runs the
  model with no collapsewatch hook at all (and a copy or pickle of the model made then carries
  none);
- ``flush(pack, step)`` at the end of a sampled step: file the step's records into the pack
  (tensors stay on their device until the pack's one host copy);
- ``reset()`` when a sampled step is cut short (the run ends in the middle of it);
- ``attach(hooks)`` once, for the few hooks that must see every step (the loss); those are
  removed when the monitor stops.

Every call into a probe from the training thread goes through :class:`Guard.run`: it times the
call against the SDK's budget, runs it under ``no_grad`` with autocast off (reductions of
bf16/fp16 activations run in float32 even inside the user's ``autocast``), and turns an
exception into one log
line (and, for most probes, the end of that probe) instead of an error in the user's loop.

Hooks are :class:`GuardedHook` objects rather than closures: they ignore any module that is not
the instance they were registered on (a shallow copy shares the hooks dict), deep-copy into
an inert hook and pickle as one, so ``copy.deepcopy(model)``, ``AveragedModel(model)`` and
``torch.save(model)`` work on a watched model and the copy is not watched.

Under ``torch.compile`` a hook that dynamo traces does nothing (its first test is
``torch.compiler.is_compiling()``, which dynamo reads as a constant): no graph break, no guard
on collapsewatch's state. Sampled steps run eagerly (:mod:`collapsewatch.compiled`), so only
the hooks that see every step (a criterion called inside a compiled function) are traced.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from collapsewatch.pipeline.packing import StepPack
    from collapsewatch.schemas import ProbeInfo

LogOnce = Callable[[str, str, BaseException], None]

#: Longest probe name the wire takes; deeper module paths keep their (more specific) tail.
MAX_NAME = 256


class Probe:
    """A source of statistics; see the module docstring for the lifecycle.

    Subclasses override what they need; every method's default does nothing.
    """

    #: Names the probe in log lines ("layer 'fc2'", "logger 'codes'").
    label: str = "probe"
    #: True: an error stops the probe for the rest of the run (a hook that cannot read its
    #: module's output will fail every time). False: the failing call is left out and the
    #: probe goes on (explicit loggers, whose next call may well be valid).
    stop_on_error: bool = True

    def __init__(self) -> None:
        self.disabled = False

    def infos(self, order: int) -> list[ProbeInfo]:
        """The probes this source records under, numbered from ``order`` (model order)."""
        return []

    def install(self, hooks: Hooks) -> None:
        """Register this sampled step's hooks on ``hooks``."""

    def flush(self, pack: StepPack, step: int) -> None:
        """File the sampled step's records into ``pack``."""

    def reset(self) -> None:
        """Drop the statistics of a sampled step cut short."""

    def attach(self, hooks: Hooks) -> None:
        """Register hooks that see every step, sampled or not (most probes have none)."""


class Guard:
    """Runs collapsewatch code on the training thread: timed, under ``no_grad``, never raising.

    ``seconds`` adds up the time spent in guarded calls; the monitor takes it at the end of
    each step for the sampler's budget (only what the training thread pays is counted).
    """

    def __init__(self, log_once: LogOnce) -> None:
        self._log_once = log_once
        self.seconds = 0.0
        self._depth = 0  # a guarded call may call into another probe: time the outer one only
        #: A torch function mode of ours is active (:mod:`collapsewatch.probes.functions`):
        #: guarded code runs with torch functions handled natively, not through the mode.
        self.functions_watched = False

    def run(self, probe: Probe, fn: Callable[..., object], *args: Any) -> None:
        """``fn(*args)`` for ``probe``; an exception is logged once and handled as the probe
        says (see :attr:`Probe.stop_on_error`)."""
        if probe.disabled:
            return
        import torch

        t0 = time.perf_counter()
        self._depth += 1
        try:
            with torch.no_grad(), _native(self.functions_watched), _full_precision():
                fn(*args)
        except Exception as exc:
            self.fail(probe, exc)
        finally:
            self._depth -= 1
        if self._depth == 0:
            self.seconds += time.perf_counter() - t0

    def fail(self, probe: Probe, exc: BaseException) -> None:
        """Log ``exc`` once per probe; stop the probe unless it goes on after errors."""
        if probe.stop_on_error:
            probe.disabled = True
            probe.reset()
            message = f"collapsewatch: stopped observing {probe.label} after an error: {exc!r}"
        else:
            message = f"collapsewatch: {probe.label} failed; this call is left out: {exc!r}"
        self._log_once(probe.label, message + " (logged once)", exc)

    def take(self) -> float:
        """The seconds counted since the last take."""
        seconds, self.seconds = self.seconds, 0.0
        return seconds


class Unwatched:
    """What a collapsewatch hook becomes in a deep copy or a pickle of a watched model: a hook
    that does nothing (the copy is not watched)."""

    __slots__ = ()

    def __call__(self, *args: Any) -> None:
        return None


class StepHook:
    """The monitor's own hook on the optimizer (the end of a step): calls ``fn``, and like a
    :class:`GuardedHook` becomes inert in a copy or a pickle of the optimizer."""

    __slots__ = ("_fn",)

    def __init__(self, fn: Callable[..., None]) -> None:
        self._fn = fn

    def __call__(self, *args: Any) -> None:
        if not _compiling():
            self._fn(*args)

    def __deepcopy__(self, memo: dict[int, Any]) -> Unwatched:
        return Unwatched()

    def __reduce__(self) -> tuple[type[Unwatched], tuple[()]]:
        return (Unwatched, ())


class GuardedHook:
    """A hook of one probe on one module (or optimizer), behind the guard.

    ``fn(module, *hook_args)`` runs only for the module instance the hook was registered on,
    and only for training passes: with ``training_only`` while the module is in training mode,
    with ``grad_only`` while autograd records (a validation loss is computed under no_grad and
    must not join the training loss). The hook never replaces the module's inputs or output.
    """

    __slots__ = (
        "__weakref__",
        "_fn",
        "_grad_only",
        "_guard",
        "_module",
        "_probe",
        "_training_only",
    )

    def __init__(
        self,
        guard: Guard,
        probe: Probe,
        module: Any,
        fn: Callable[..., object],
        *,
        training_only: bool = True,
        grad_only: bool = False,
    ) -> None:
        self._guard = guard
        self._probe = probe
        self._module = weakref.ref(module)
        self._fn = fn
        self._training_only = training_only
        self._grad_only = grad_only

    def __call__(self, module: Any, *args: Any) -> None:
        if _compiling():
            return None  # traced by torch.compile: see the module docstring
        watched = self._module()
        if watched is None or module is not watched:
            return None  # a copy of the watched module, sharing its hooks
        if self._training_only and not watched.training:
            return None
        if self._grad_only and not _grad_enabled():
            return None
        self._guard.run(self._probe, self._fn, module, *args)
        return None

    @property
    def probe(self) -> Probe:
        return self._probe

    def __deepcopy__(self, memo: dict[int, Any]) -> Unwatched:
        return Unwatched()

    def __reduce__(self) -> tuple[type[Unwatched], tuple[()]]:
        return (Unwatched, ())


class BeforeUpdateHook(GuardedHook):
    """An optimizer step pre-hook that runs ``fn(optimizer, args, kwargs)`` just before the
    parameters change: at once, or, when ``step`` gets a closure (LBFGS, Lightning), after the
    closure's first call, which runs the step's forward and backward: the statistics are of
    this step, not one step late."""

    __slots__ = ()

    def __call__(self, optimizer: Any, *hook_args: Any) -> Any:
        args, kwargs = hook_args  # args start with the optimizer itself: (self, closure?)
        closure = kwargs.get("closure", args[1] if len(args) > 1 else None)
        if _compiling() or not callable(closure):
            return super().__call__(optimizer, args, kwargs)
        done = False

        def closure_then_read() -> Any:
            nonlocal done
            result = closure()
            if not done:
                done = True
                super(BeforeUpdateHook, self).__call__(optimizer, args, kwargs)
            return result

        if "closure" in kwargs:
            return args, {**kwargs, "closure": closure_then_read}
        return (args[0], closure_then_read, *args[2:]), kwargs


class Hooks:
    """The hooks of one lifetime (one sampled step, or the monitor's whole life): each behind
    the guard, all removed together by :meth:`remove`."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard
        self._handles: list[Any] = []

    def forward(
        self,
        module: nn.Module,
        probe: Probe,
        fn: Callable[..., object],
        *,
        with_kwargs: bool = False,
        training_only: bool = True,
        grad_only: bool = False,
    ) -> None:
        """``fn(module, args, output)`` (``fn(module, args, kwargs, output)`` with
        ``with_kwargs``) after each forward call of ``module``; see :class:`GuardedHook` for
        which calls count."""
        hook = GuardedHook(
            self.guard, probe, module, fn, training_only=training_only, grad_only=grad_only
        )
        self._handles.append(module.register_forward_hook(hook, with_kwargs=with_kwargs))

    def forward_pre(
        self, module: nn.Module, probe: Probe, fn: Callable[..., object], *, grad_only: bool = False
    ) -> None:
        """``fn(module, args)`` before each forward call of ``module`` (training mode only; with
        ``grad_only``, while autograd records)."""
        hook = GuardedHook(self.guard, probe, module, fn, grad_only=grad_only)
        self._handles.append(module.register_forward_pre_hook(hook))

    def optimizer_pre(self, optimizer: Any, probe: Probe, fn: Callable[..., object]) -> None:
        """``fn(optimizer, args, kwargs)`` in each ``optimizer.step()`` before the update (after
        the first call of a closure; see :class:`BeforeUpdateHook`)."""
        hook = BeforeUpdateHook(self.guard, probe, optimizer, fn, training_only=False)
        self._handles.append(optimizer.register_step_pre_hook(hook))

    def add_handle(self, handle: Any) -> None:
        """Own a handle registered elsewhere (the monitor's step hook), to remove it with the
        rest."""
        self._handles.append(handle)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __len__(self) -> int:
        return len(self._handles)


def _native(watched: bool) -> Any:
    """Torch functions without any ``__torch_function__`` handling, while ours is active."""
    import contextlib

    import torch

    return torch._C.DisableTorchFunction() if watched else contextlib.nullcontext()


def _full_precision() -> Any:
    """Autocast off for every device type where it is on (bf16/fp16 matmuls would round the
    statistics); nothing to do, and a null context, outside autocast."""
    import contextlib

    import torch

    on = [d for d in ("cuda", "cpu", "mps", "xpu") if _autocast_on(torch, d)]
    if not on:
        return contextlib.nullcontext()
    stack = contextlib.ExitStack()
    for device in on:
        stack.enter_context(torch.autocast(device, enabled=False))
    return stack


def _autocast_on(torch: Any, device: str) -> bool:
    try:
        return bool(torch.is_autocast_enabled(device))
    except (RuntimeError, TypeError):  # a device type this build does not know
        return False


def _compiling() -> bool:
    import torch

    return torch.compiler.is_compiling()


def _grad_enabled() -> bool:
    import torch

    return torch.is_grad_enabled()
