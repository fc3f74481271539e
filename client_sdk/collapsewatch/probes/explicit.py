"""The explicit loggers' probes: collapses that live in tensors no forward hook on a layer sees
(attention probabilities, code indices, posteriors, router logits, generated text, validation
NLL, generated samples, recurrent states). Each name a user logs under is one
:class:`LoggerProbe`.

Two cadences, because they are called in two kinds of places:

- In the training loop (``log_attention``, ``log_codes``, ``log_posterior``, ``log_routing``):
  called on every step, reduced only on sampled steps; on any other step the call reads one
  flag and returns. Calls of one name within a sampled step add up into one record, sent with
  the step's other records, and their time counts against the SDK's time budget.
- In an evaluation (``log_tokens``, ``log_eval``, ``log_samples``, ``log_state``): every call
  is reduced, because evaluations are rare and dropping one would lose the only measurement.
  Calls of one name at one step add up (``log_eval`` per validation batch gives the whole
  set's perplexity); the record is copied to the host when that step ends, or with the next
  batch of records when no step ends.

Every call reduces its tensors on their device to the statistics of
:mod:`collapsewatch.schemas.stats` at once and keeps no reference to them. An error (a tensor of
the wrong shape, say) is logged once per logger name; the call is left out and later calls are
reduced as usual.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from collapsewatch.probes.base import Probe
from collapsewatch.schemas import ProbeInfo, ProbeKind

if TYPE_CHECKING:
    from collapsewatch.pipeline.packing import StepPack

#: Evaluation records waiting for a host copy; past this many they are copied at once.
MAX_PENDING = 256

#: Kinds of the loggers called in the training loop, reduced on sampled steps only.
IN_LOOP = frozenset({ProbeKind.attention, ProbeKind.codes, ProbeKind.posterior, ProbeKind.routing})


class Accumulator(Protocol):
    """Sums of one logger name over the calls of one step, kept on the device."""

    def pack(self, stats: dict[str, Any], pack: StepPack) -> None:
        """File the statistics into a record's ``stats`` (tensors through ``pack.put``)."""


#: Makes a fresh accumulator; gets the logger's memory (see :attr:`LoggerProbe.memory`).
MakeAccumulator = Callable[[dict[str, Any]], Accumulator]


class LoggerProbe(Probe):
    """One explicit logger name: its open accumulators, by step, until they are filed."""

    stop_on_error = False

    def __init__(self, name: str, kind: ProbeKind, make: MakeAccumulator) -> None:
        super().__init__()
        self.name = name
        self.kind = kind
        self.label = f"{kind.value} logger {name!r}"
        self.in_loop = kind in IN_LOOP
        self._make = make
        #: What the logger keeps from one record to the next (reduced statistics, never the
        #: user's tensors), e.g. the last reference of ``log_samples``.
        self.memory: dict[str, Any] = {}
        self._open: dict[int, Accumulator] = {}

    def infos(self, order: int) -> list[ProbeInfo]:
        return [ProbeInfo(name=self.name, kind=self.kind, order=order)]

    def add(self, step: int, reduce: Callable[[Any], object]) -> None:
        """Reduce one call into the accumulator of ``step`` (made on first use). Accumulators
        change only once everything is computed, so a failing call leaves them as they were."""
        acc = self._open.get(step)
        fresh = acc is None
        if acc is None:
            acc = self._make(self.memory)
        reduce(acc)
        if fresh:
            self._open[step] = acc

    @property
    def pending(self) -> int:
        """Records waiting to be filed."""
        return len(self._open)

    def flush(self, pack: StepPack, step: int) -> None:
        """File every open record, each at the step it was logged at."""
        opened, self._open = self._open, {}
        for logged_at, acc in sorted(opened.items()):
            acc.pack(pack.record(self.name, self.kind.value, logged_at), pack)

    def reset(self) -> None:
        """Drop the records of a sampled step cut short; evaluations are kept."""
        if self.in_loop:
            self._open.clear()


def fresh(cls: type[Any]) -> MakeAccumulator:
    """A logger's accumulator factory that ignores the logger's memory."""
    return lambda memory: cls()
