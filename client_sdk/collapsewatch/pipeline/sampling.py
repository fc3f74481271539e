"""Which steps are sampled: a fixed interval, or one that adapts to a time budget above a floor
of density that detection can rely on.

Adaptive sampling (``every=None``) keeps the interval a power of two and samples the steps that
are multiples of it, so sampled steps line up across runs and a change of interval never
skips more than one interval. At each sampled step the interval is set anew, up or down, from
two medians, robust to the odd slow step (a checkpoint, a data-loader stall):

- what a sampled step cost the training thread (its hooks, the flush and the host copy; the
  sender thread's work is not counted), over the last few sampled steps;
- the wall time of an unsampled step, over the last few dozen.

The interval is the smallest power of two that keeps cost / (interval x step time) within
``BUDGET``, but never above the density floor ``cap(step)``: ``FLOOR_MIN_EVERY`` until
``FLOOR_RATIO x FLOOR_MIN_EVERY`` steps, then ``step / FLOOR_RATIO`` rounded down to a power of
two. That is at least 35 sampled steps in the first 300, at least 60 in the first 1000, and 16
more each time the run doubles. On top of it, a step is sampled whenever ``MAX_GAP_S`` seconds
of training went by since the last sampled one, and at most ``MAX_RATE`` steps a second are
sampled (a large model's sampled steps cost little relative to its step, but the server still
has to take them).
"""

from __future__ import annotations

import statistics
from collections import deque

#: Share of the training thread's time the SDK may take on sampled steps.
BUDGET = 0.03
#: The density floor: the interval is at most this until FLOOR_RATIO times it ...
FLOOR_MIN_EVERY = 8
#: ... then at most step / FLOOR_RATIO (rounded down to a power of two).
FLOOR_RATIO = 16
#: The widest interval, however cheap the steps.
MAX_EVERY = 1024
#: Longest stretch of training, in seconds, without a sampled step.
MAX_GAP_S = 5.0
#: Most sampled steps in a second of training.
MAX_RATE = 10.0
#: Sampled steps whose cost enters the median, and unsampled steps whose wall time does.
COST_WINDOW = 5
WALL_WINDOW = 32


def floor_every(step: int) -> int:
    """The widest interval the density floor allows at ``step`` (a power of two)."""
    limit = max(FLOOR_MIN_EVERY, step // FLOOR_RATIO)
    return min(MAX_EVERY, 1 << (limit.bit_length() - 1))


class Sampler:
    """Says which steps are sampled; see the module docstring.

    ``every`` given: steps with ``step % every == 0`` (so step 0 always is), nothing adapts.
    """

    def __init__(self, every: int | None) -> None:
        if every is not None and every < 1:
            raise ValueError(f"collapsewatch: every must be >= 1, got {every}")
        self.adaptive = every is None
        self.every = FLOOR_MIN_EVERY if every is None else every
        self._costs: deque[float] = deque(maxlen=COST_WINDOW)
        self._walls: deque[float] = deque(maxlen=WALL_WINDOW)
        self._since_sample = 0.0  # training seconds since the last sampled step

    def sampled(self, step: int) -> bool:
        """Whether ``step`` is sampled."""
        if step % self.every == 0:
            return True
        return self.adaptive and self._since_sample >= MAX_GAP_S

    def observe(self, step: int, sampled: bool, wall: float, cost: float) -> None:
        """Feed one finished step: its wall time and, if sampled, what it cost the training
        thread; then set the interval for the steps that follow."""
        if not self.adaptive:
            return
        if not sampled:
            self._walls.append(wall)
            self._since_sample += wall
            return
        self._since_sample = 0.0
        self._costs.append(cost)
        self.every = self._interval(step)

    def _interval(self, step: int) -> int:
        cap = floor_every(step)
        if not self._walls:
            return cap
        step_time = statistics.median(self._walls)
        if step_time <= 0:
            return cap
        # the budget: cost <= BUDGET * every * step_time; the rate: every * step_time >= 1/rate
        needed = max(statistics.median(self._costs) / BUDGET, 1.0 / MAX_RATE) / step_time
        every = 1
        while every < needed and every < cap:
            every *= 2
        return every

    def share(self) -> float:
        """The SDK's expected share of the training thread's time at the current interval."""
        if not self._costs or not self._walls:
            return 0.0
        cost = statistics.median(self._costs)
        base = statistics.median(self._walls) * self.every
        return cost / (cost + base) if cost + base > 0 else 0.0
