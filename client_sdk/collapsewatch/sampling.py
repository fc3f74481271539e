"""Which steps are sampled: a fixed interval, or one that widens to keep the SDK within budget."""

from __future__ import annotations

START_EVERY = 10
MAX_EVERY = 1000
#: Share of the training wall time the SDK may take on sampled steps.
BUDGET = 0.03


class Sampler:
    """Steps with ``step % every == 0`` are sampled (so step 0 always is).

    Adaptive mode (``every=None``) starts at ``START_EVERY`` and doubles the interval, up to
    ``MAX_EVERY``, while the SDK's measured share of wall time exceeds ``BUDGET``. Doubling keeps
    every later sampled step a multiple of the earlier interval, so sampled steps line up across
    runs. The interval never shrinks: a run's cost does not fall much once it has risen.
    """

    def __init__(self, every: int | None) -> None:
        if every is not None and every < 1:
            raise ValueError(f"collapsewatch: every must be >= 1, got {every}")
        self.adaptive = every is None
        self.every = START_EVERY if every is None else every
        self._step_time: float | None = None  # smoothed wall time of an unsampled step

    def sampled(self, step: int) -> bool:
        return step % self.every == 0

    def observe(self, sampled: bool, wall: float, overhead: float) -> None:
        """Feed one finished step: its wall time and, if sampled, the SDK's own time in it."""
        if not self.adaptive:
            return
        if not sampled:
            # exponential average: robust to the odd slow step (data loading, checkpoints)
            self._step_time = (
                wall if self._step_time is None else 0.8 * self._step_time + 0.2 * wall
            )
            return
        if self._step_time is None or overhead <= 0:
            return
        while self.every < MAX_EVERY and self.share(overhead) > BUDGET:
            self.every = min(MAX_EVERY, self.every * 2)

    def share(self, overhead: float) -> float:
        """The SDK's share of wall time at the current interval, for one sample's overhead."""
        base = (self._step_time or 0.0) * self.every
        return overhead / (overhead + base) if overhead + base > 0 else 0.0
