"""What the server said about a pair, read through its public HTTP API, against the truth.

- Detected: the collapse run has a firing, non-reminder alert event (``GET /api/v1/alerts``)
  whose indicator belongs to the pair's family (``GET /api/v1/indicators``), any severity.
- Delay: the first such event's step minus the step where the brute-force reference crosses
  the family's threshold, as a percentage of the run length (negative: alerted before).
- False alarm: any firing, non-reminder warning or critical event on the control, any family.
- Sampled steps per layer: the points of each series (``GET /api/v1/runs/{id}/series``).

The bar (issue 10) for one half: at least 95% of its collapse runs detected, no false alarm
on any control, median delay at most 5% of the run length, where a missed collapse counts as
an infinite delay.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from collapsewatch_demo.harness import RunResult, loss_change_step
from collapsewatch_demo.validation.api import Alarm, Server
from collapsewatch_demo.validation.diagnosis import Diagnosis, diagnose
from collapsewatch_demo.validation.registry import Half, Pair

DETECTION_BAR = 0.95
DELAY_BAR_PCT = 5.0
FALSE_ALARM_SEVERITIES = ("warning", "critical")


@dataclass
class Verdict:
    """A pair's two runs and what the server said about them."""

    pair: Pair
    collapse: RunResult
    control: RunResult
    fired: list[Alarm]  # own-family alarms on the collapse run
    control_alarms: list[Alarm]  # warning/critical alarms on the control, any family
    sampled: dict[str, int]  # points per layer of the collapse run
    sampled_control: dict[str, int]
    miss: Diagnosis | None = None  # why the collapse was missed, when it was
    loss_change: int | None = field(init=False)

    def __post_init__(self) -> None:
        self.loss_change = loss_change_step(self.collapse.losses, self.control.losses)

    @property
    def detected(self) -> bool:
        return bool(self.fired)

    @property
    def first_alert(self) -> int | None:
        steps = [a.step for a in self.fired if a.step is not None]
        return min(steps) if steps else None

    @property
    def valid(self) -> bool:
        """The recipe did what it claims: the collapse's truth crosses, the control's not."""
        return self.collapse.crossed_at is not None and self.control.crossed_at is None

    @property
    def delay_pct(self) -> float:
        """First alert minus the truth's crossing, in % of the run; inf when missed (or when
        the truth never crossed)."""
        first, crossed = self.first_alert, self.collapse.crossed_at
        if first is None or crossed is None:
            return math.inf
        return 100.0 * (first - crossed) / self.pair.steps


def judge(
    server: Server, project: str, pair: Pair, collapse: RunResult, control: RunResult
) -> Verdict:
    """Read what the server made of the pair's two runs (in ``project``)."""
    assert collapse.run_id is not None and control.run_id is not None, "runs were not watched"
    indicator = collapse.reference.indicator
    fired = [a for a in server.alarms(collapse.run_id) if a.family == pair.family]
    return Verdict(
        pair=pair,
        collapse=collapse,
        control=control,
        fired=fired,
        control_alarms=[
            a for a in server.alarms(control.run_id) if a.severity in FALSE_ALARM_SEVERITIES
        ],
        sampled=server.sampled(collapse.run_id, indicator),
        sampled_control=server.sampled(control.run_id, indicator),
        miss=None if fired else diagnose(server, project, collapse),
    )


@dataclass(frozen=True)
class Summary:
    """One half's figures against the bar."""

    half: Half
    pairs: int
    detected: int
    false_alarms: int
    median_delay_pct: float
    invalid: int  # pairs whose truth did not behave as designed on this machine

    @property
    def detection_rate(self) -> float:
        return self.detected / self.pairs if self.pairs else math.nan

    @property
    def meets_bar(self) -> bool:
        return (
            self.pairs > 0
            and self.detection_rate >= DETECTION_BAR
            and self.false_alarms == 0
            and self.median_delay_pct <= DELAY_BAR_PCT
        )


def summarise(verdicts: list[Verdict], half: Half) -> Summary:
    mine = [v for v in verdicts if v.pair.half == half]
    delays = [v.delay_pct for v in mine]
    return Summary(
        half=half,
        pairs=len(mine),
        detected=sum(v.detected for v in mine),
        false_alarms=sum(bool(v.control_alarms) for v in mine),
        median_delay_pct=statistics.median(delays) if delays else math.nan,
        invalid=sum(not v.valid for v in mine),
    )
