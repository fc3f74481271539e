"""Finding the classifier and pairing its features with labels, for ``classes.py``.

The classifier is given (``watch(..., classifier=module)``) or found: the ``nn.Linear`` whose
output (or a view of it) the criterion receives on a sampled step. Its input (the penultimate
features) and output (the logits) are captured on sampled steps and reduced when the labels
arrive: from the criterion's targets, or from ``monitor.step(labels=...)``.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from collapsewatch.classes import ClassAccumulator

if TYPE_CHECKING:
    import torch
    from torch import nn

    from collapsewatch.packing import StepPack

logger = logging.getLogger("collapsewatch")

#: Sampled criterion calls without a Linear (and integer labels) feeding it before giving up.
DETECT_STEPS = 3
_MAX_CAPTURES = 8


class ClassWatcher:
    """Finds the classifier, captures its input and output on sampled steps, and pairs them
    with the labels of the criterion (or of ``monitor.step(labels=...)``).

    Without an explicit classifier, the classifier is the ``nn.Linear`` whose output (or a
    view of it) is the criterion's input on a sampled step. Errors are logged once and stop
    the class statistics; they never reach the training loop.
    """

    def __init__(
        self,
        model: nn.Module,
        classifier: nn.Module | None,
        *,
        sampling: Callable[[], bool],
        step: Callable[[], int],
        on_probe: Callable[[str, nn.Module], None],
        log_once: Callable[[str, str, BaseException], None],
    ) -> None:
        from torch import nn

        self._model_ref = weakref.ref(model)
        self._sampling, self._step = sampling, step
        self._on_probe, self._log_once = on_probe, log_once
        self._handles: list[Any] = []
        self._classifier: nn.Module | None = None
        self._explicit = classifier is not None
        self._acc: ClassAccumulator | None = None
        self._name = ""
        # (features, logits) of the classifier's forward calls on this sampled step, detached;
        # a detached tensor shares its storage, which identifies what the criterion got
        self._captures: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._candidates: dict[int, tuple[nn.Module, torch.Tensor, torch.Tensor]] = {}
        self._misses = 0
        self._late = False  # a sampled step ended with features but no labels
        self._hinted = False
        self.disabled = False
        self.overhead = 0.0  # seconds spent reducing, taken by the monitor
        if classifier is not None:
            self._attach(classifier)
            return
        for module in model.modules():
            if isinstance(module, nn.Linear):
                self._handles.append(module.register_forward_hook(self._candidate_hook))

    # ------------------------------------------------------------------------ monitor side

    def on_criterion(self, args: Any) -> None:
        """The criterion ran (grad enabled): its targets are the labels if they are integers."""
        if self.disabled or not self._sampling() or len(args) < 2:
            return
        try:
            logits, labels = args[0], args[1]
            if self._classifier is None and not (_integer(labels) and self._detect(logits)):
                self._missed()
                return
            if not _integer(labels):  # e.g. MSE or soft targets
                return
            found = [i for i, (_, out) in enumerate(self._captures) if _same_storage(out, logits)]
            if not found and self._explicit:  # e.g. the criterion gets logits / temperature
                found = self._rows(labels.numel())
            if found:
                self._add(*self._captures.pop(found[-1]), labels)
        except Exception as exc:
            self._fail(exc)

    def on_labels(self, labels: Any) -> None:
        """``monitor.step(labels=...)``: pair with the latest capture of as many rows."""
        if self.disabled or self._classifier is None:
            return
        try:
            if not _integer(labels):
                return
            found = self._rows(labels.numel())
            if found:
                self._add(*self._captures.pop(found[-1]), labels)
            elif self._late and not self._hinted:
                self._hinted = True
                logger.info(
                    "collapsewatch: labels arrived after their step ended; call "
                    "monitor.step(labels=...) before optimizer.step()"
                )
        except Exception as exc:
            self._fail(exc)

    def flush(self, pack: StepPack) -> None:
        """End of a sampled step: file the class record into the step's pack."""
        self._late = bool(self._captures)
        self._captures.clear()
        self._candidates.clear()
        acc = self._acc
        if self.disabled or acc is None or acc.empty:
            return
        try:
            acc.pack(pack.record(self._name, "classes", acc.step), pack)
        except Exception as exc:
            self._fail(exc)

    def reset(self) -> None:
        """Drop a partial step (the run ends in the middle of one)."""
        self._captures.clear()
        if self._acc is not None:
            self._acc.clear()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._captures.clear()
        self._candidates.clear()

    # --------------------------------------------------------------------------- internals

    def _attach(self, module: nn.Module) -> None:
        weight = getattr(module, "weight", None)
        if weight is None or weight.dim() != 2:
            raise TypeError("the classifier needs a 2-D weight [classes, features]")
        model = self._model_ref()
        names = {id(m): n for n, m in model.named_modules()} if model is not None else {}
        self._name = (names.get(id(module)) or "classifier")[-256:]
        self._classifier = module
        self._weight: torch.Tensor = weight  # a parameter: optimizers update it in place
        self._acc = ClassAccumulator(int(weight.shape[0]))
        self._handles.append(module.register_forward_hook(self._capture_hook))
        self._on_probe(self._name, module)

    def _rows(self, rows: int) -> list[int]:
        return [i for i, (_, out) in enumerate(self._captures) if out.shape[:-1].numel() == rows]

    def _capture_hook(self, module: nn.Module, args: Any, output: Any) -> None:
        if self.disabled or not self._sampling() or not module.training:
            return
        try:
            if _tensors(args, output):
                self._captures.append((args[0].detach(), output.detach()))
                del self._captures[:-_MAX_CAPTURES]
        except Exception as exc:
            self._fail(exc)

    def _candidate_hook(self, module: nn.Module, args: Any, output: Any) -> None:
        if self._classifier is not None or not self._sampling() or not module.training:
            return
        try:
            if _tensors(args, output):
                self._candidates[id(module)] = (module, args[0].detach(), output.detach())
        except Exception as exc:
            self._fail(exc)

    def _detect(self, logits: Any) -> bool:
        for module, h, out in self._candidates.values():
            if _same_storage(out, logits):
                for handle in self._handles:
                    handle.remove()
                self._handles.clear()
                self._candidates.clear()
                self._attach(module)
                self._captures.append((h, out))
                return True
        return False

    def _missed(self) -> None:
        """A sampled criterion call without a classifier found; give up after a few."""
        self._misses += 1
        if self._misses >= DETECT_STEPS:
            self.disabled = True
            self.remove()
            logger.info(
                "collapsewatch: no Linear layer feeds the criterion with integer labels; pass "
                "watch(..., classifier=module) for neural-collapse statistics"
            )

    def _add(self, h: torch.Tensor, out: torch.Tensor, labels: torch.Tensor) -> None:
        import torch

        assert self._acc is not None and self._classifier is not None
        t0 = time.perf_counter()
        with torch.no_grad():
            self._acc.add(
                h,
                out,
                labels.detach().to(h.device),
                self._weight,
                getattr(self._classifier, "bias", None),
                self._step(),
            )
        self.overhead += time.perf_counter() - t0

    def _fail(self, exc: BaseException) -> None:
        self.disabled = True
        self.remove()
        self._acc = None
        self._log_once(
            "classes",
            f"collapsewatch: stopped neural-collapse statistics after an error: {exc!r}",
            exc,
        )


def _tensors(args: Any, output: Any) -> bool:
    """A forward call the statistics can read: a tensor in, a tensor out."""
    import torch

    return bool(args) and isinstance(args[0], torch.Tensor) and isinstance(output, torch.Tensor)


def _integer(labels: Any) -> bool:
    import torch

    return isinstance(labels, torch.Tensor) and not (
        labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool
    )


def _same_storage(out: Any, other: Any) -> bool:
    """``other`` is ``out`` or a view of it (``logits.view(-1, V)``, as language models do)."""
    import torch

    return (
        isinstance(out, torch.Tensor)
        and isinstance(other, torch.Tensor)
        and out.numel() == other.numel()
        and out.data_ptr() == other.data_ptr()
    )
