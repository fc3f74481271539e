"""Finding the classifier and pairing its features with labels, for the neural-collapse
statistics of :mod:`collapsewatch.probes.neural_collapse`.

The classifier is given (``watch(..., classifier=module)``) or found: the ``nn.Linear`` whose
output (or a view of it) the criterion receives on a sampled step. Its input (the penultimate
features) and output (the logits) are captured on sampled steps and reduced when the labels
arrive: from the criterion's targets, or from ``monitor.step(labels=...)``.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from collapsewatch.distributed import is_sharded
from collapsewatch.probes.activations import parameter_count
from collapsewatch.probes.base import MAX_NAME, Hooks, Probe
from collapsewatch.probes.neural_collapse import ClassAccumulator
from collapsewatch.schemas import ProbeInfo, ProbeKind

if TYPE_CHECKING:
    import torch
    from torch import nn

    from collapsewatch.pipeline.packing import StepPack

logger = logging.getLogger("collapsewatch")

#: Sampled steps without a Linear feeding a classification loss (with integer labels) before
#: the search for a classifier stops.
DETECT_STEPS = 3
_MAX_CAPTURES = 8


class ClassProbe(Probe):
    """Finds the classifier, captures its input and output on sampled steps, and pairs them
    with the labels of the criterion (or of ``monitor.step(labels=...)``); probe kind
    ``classes``, named after the classifier.

    Without an explicit classifier, the classifier is the ``nn.Linear`` whose output (or a
    view of it) is the criterion's input on a sampled step; ``on_found(info)`` (set by the
    monitor) tells the monitor about the probe then. Errors stop the class statistics (the
    guard logs them); they never reach the training loop.
    """

    label = "the neural-collapse statistics"

    def __init__(
        self,
        model: nn.Module,
        classifier: nn.Module | None,
        *,
        step: Callable[[], int],
    ) -> None:
        super().__init__()
        self._model_ref = weakref.ref(model)
        self._step = step
        self.on_found: Callable[[ProbeInfo], None] | None = None
        self._info: ProbeInfo | None = None
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
        if classifier is not None and is_sharded(getattr(classifier, "weight", None)):
            self.disabled = True  # said by the monitor (distributed.SHARDED_NOTE)
        elif classifier is not None:
            self._attach(classifier)

    def infos(self, order: int) -> list[ProbeInfo]:
        """The probe of a classifier given to ``watch()``; a found one is announced later."""
        if self._info is None:
            return []
        return [self._info.model_copy(update={"order": order})]

    def install(self, hooks: Hooks) -> None:
        from torch import nn

        if self._classifier is not None:
            hooks.forward(self._classifier, self, self._on_capture)
            return
        model = self._model_ref()
        for module in model.modules() if model is not None else ():
            if isinstance(module, nn.Linear):
                hooks.forward(module, self, self._on_candidate)

    # ------------------------------------------------------------------------ monitor side

    def on_criterion(self, args: Any) -> None:
        """The criterion ran on a sampled step (grad enabled): its targets are the labels if
        they are integers."""
        if len(args) < 2:
            return
        logits, labels = args[0], args[1]
        if self._classifier is None and not (_integer(labels) and self._detect(logits)):
            return
        if not _integer(labels):  # e.g. MSE or soft targets
            return
        found = [i for i, (_, out) in enumerate(self._captures) if _same_storage(out, logits)]
        if not found and self._explicit:  # e.g. the criterion gets logits / temperature
            found = self._rows(labels.numel())
        if found:
            self._add(*self._captures.pop(found[-1]), labels)

    def on_labels(self, labels: Any) -> None:
        """``monitor.step(labels=...)``: pair with the latest capture of as many rows."""
        if self._classifier is None or not _integer(labels):
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

    def flush(self, pack: StepPack, step: int) -> None:
        """End of a sampled step: file the class record into the step's pack."""
        if self._classifier is None:
            self._missed()
        self._late = bool(self._captures)
        self._captures.clear()
        self._candidates.clear()
        acc = self._acc
        if acc is not None and not acc.empty:
            acc.pack(pack.record(self._name, ProbeKind.classes.value, acc.step), pack)

    def reset(self) -> None:
        """Drop a partial step (the run ends in the middle of one)."""
        self._captures.clear()
        self._candidates.clear()
        if self._acc is not None:
            self._acc.clear()

    # --------------------------------------------------------------------------- internals

    def _attach(self, module: nn.Module) -> None:
        weight = getattr(module, "weight", None)
        if weight is None or weight.dim() != 2:
            raise TypeError("the classifier needs a 2-D weight [classes, features]")
        if is_sharded(weight):  # gathering it would be a collective that rank 0 alone starts
            raise TypeError("the classifier's weight is sharded across ranks (FSDP)")
        model = self._model_ref()
        names = {id(m): n for n, m in model.named_modules()} if model is not None else {}
        self._name = (names.get(id(module)) or "classifier")[-MAX_NAME:]
        self._classifier = module
        self._weight: torch.Tensor = weight  # a parameter: optimizers update it in place
        self._acc = ClassAccumulator(int(weight.shape[0]))
        self._info = ProbeInfo(
            name=self._name,
            kind=ProbeKind.classes,
            module=type(module).__name__[:128],
            order=0,
            width=int(weight.shape[1]),
            params=parameter_count(module),
        )
        if self.on_found is not None:
            self.on_found(self._info)

    def _rows(self, rows: int) -> list[int]:
        return [i for i, (_, out) in enumerate(self._captures) if out.shape[:-1].numel() == rows]

    def _on_capture(self, module: nn.Module, args: Any, output: Any) -> None:
        if _tensors(args, output):
            self._captures.append((args[0].detach(), output.detach()))
            del self._captures[:-_MAX_CAPTURES]

    def _on_candidate(self, module: nn.Module, args: Any, output: Any) -> None:
        if self._classifier is None and _tensors(args, output):
            self._candidates[id(module)] = (module, args[0].detach(), output.detach())

    def _detect(self, logits: Any) -> bool:
        for module, h, out in self._candidates.values():
            if _same_storage(out, logits):
                self._candidates.clear()
                self._attach(module)
                self._captures.append((h, out))
                return True
        return False

    def _missed(self) -> None:
        """A sampled step without a classifier found; give up after a few."""
        self._misses += 1
        if self._misses >= DETECT_STEPS:
            self.disabled = True
            self.reset()
            logger.info(
                "collapsewatch: no Linear layer feeds the criterion with integer labels; pass "
                "watch(..., classifier=module) for neural-collapse statistics"
            )

    def _add(self, h: torch.Tensor, out: torch.Tensor, labels: torch.Tensor) -> None:
        assert self._acc is not None and self._classifier is not None
        self._acc.add(
            h,
            out,
            labels.detach().to(h.device),
            self._weight,
            getattr(self._classifier, "bias", None),
            self._step(),
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
