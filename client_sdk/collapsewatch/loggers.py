"""The monitor's explicit loggers: collapses that live in tensors no forward hook on a Linear
layer sees (attention probabilities, code indices, posteriors, router logits, generated text,
validation NLL, generated samples, recurrent states).

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
the wrong shape, say) is logged once per logger name and never reaches the caller.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from collapsewatch.runinfo import MAX_NAME
from collapsewatch.schemas import ProbeKind

if TYPE_CHECKING:
    from collapsewatch.packing import StepPack

LogOnce = Callable[[str, str, BaseException], None]

#: Evaluation records waiting for a host copy; past this many they are copied at once.
MAX_PENDING = 256


class Accumulator(Protocol):
    """Sums of one logger name over the calls of one step, kept on the device."""

    def pack(self, stats: dict[str, Any], pack: StepPack) -> None:
        """File the statistics into a record's ``stats`` (tensors through ``pack.put``)."""


IN_LOOP = frozenset({ProbeKind.attention, ProbeKind.codes, ProbeKind.posterior, ProbeKind.routing})


class _Open:
    __slots__ = ("acc", "in_loop", "kind", "name", "step")

    def __init__(self, name: str, kind: ProbeKind, step: int, acc: Accumulator) -> None:
        self.name = name
        self.kind = kind
        self.step = step
        self.acc = acc
        self.in_loop = kind in IN_LOOP


class Loggers:
    """Open accumulators of the explicit loggers, by (name, step), until the monitor files them.

    ``sampling()`` says whether the current step is sampled, ``step()`` which step it is;
    ``add_probe(name, kind)`` registers a name on first use.
    """

    def __init__(
        self,
        *,
        sampling: Callable[[], bool],
        step: Callable[[], int],
        add_probe: Callable[[str, ProbeKind], None],
        log_once: LogOnce,
    ) -> None:
        self._sampling = sampling
        self._step = step
        self._add_probe = add_probe
        self._log_once = log_once
        self._kinds: dict[str, ProbeKind] = {}
        self._open: dict[tuple[str, int], _Open] = {}
        self._memory: dict[str, dict[str, Any]] = {}
        #: time spent by in-loop loggers since the last flush (the SDK's time budget)
        self.seconds = 0.0

    def wants(self, kind: ProbeKind) -> bool:
        """Whether a call of this kind is reduced now (the one check on unsampled steps)."""
        return kind not in IN_LOOP or self._sampling()

    def add(
        self,
        name: str,
        kind: ProbeKind,
        make: Callable[[], Accumulator],
        add: Callable[[Any], None],
    ) -> None:
        """Reduce one call: ``add(acc)`` on the open accumulator of ``(name, step)`` (made with
        ``make()`` on first use), under ``no_grad``. Never raises."""
        if not self.wants(kind):
            return
        t0 = time.perf_counter()
        try:
            import torch

            self._check(name, kind)
            key = (name, self._step())
            entry = self._open.get(key)
            acc = entry.acc if entry is not None else make()
            with torch.no_grad():
                add(acc)  # accumulators update only once everything is computed
            if entry is None:
                self._open[key] = _Open(name, kind, key[1], acc)
        except Exception as exc:
            self._log_once(
                f"logger:{name}",
                f"collapsewatch: {kind.value} logger {name!r} failed, this call is left out "
                f"(logged once): {exc!r}",
                exc,
            )
        if kind in IN_LOOP:
            self.seconds += time.perf_counter() - t0

    def memory(self, name: str) -> dict[str, Any]:
        """What a logger keeps of ``name`` from one record to the next (reduced statistics,
        never the user's tensors), e.g. the last reference of ``log_samples``."""
        return self._memory.setdefault(name, {})

    def _check(self, name: str, kind: ProbeKind) -> None:
        known = self._kinds.get(name)
        if known == kind:
            return
        if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME:
            raise ValueError(f"a logger name must be a string of 1 to {MAX_NAME} characters")
        if known is not None:
            raise ValueError(f"{name!r} is already used by the {known.value} logger")
        self._add_probe(name, kind)  # refuses a name a layer or another probe has
        self._kinds[name] = kind

    @property
    def pending(self) -> int:
        """Evaluation records waiting for a host copy."""
        return sum(not e.in_loop for e in self._open.values())

    def flush(self, pack: StepPack, evaluations_only: bool = False) -> float:
        """File the open records into ``pack`` (in the order they were opened) and return the
        in-loop seconds since the last flush. ``evaluations_only`` leaves the in-loop records of
        a sampled step in progress open."""
        for key, entry in list(self._open.items()):
            if evaluations_only and entry.in_loop:
                continue
            del self._open[key]
            entry.acc.pack(pack.record(entry.name, entry.kind.value, entry.step), pack)
        seconds, self.seconds = self.seconds, 0.0
        return seconds

    def reset(self) -> None:
        """Drop the in-loop records of a sampled step cut short; evaluations are kept."""
        self._open = {k: e for k, e in self._open.items() if not e.in_loop}
        self.seconds = 0.0
