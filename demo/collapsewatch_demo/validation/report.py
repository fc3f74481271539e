"""The printed tables: one row per pair, one summary line per half."""

from __future__ import annotations

import math
from collections.abc import Callable

from collapsewatch_demo.validation.judge import Summary, Verdict

Print = Callable[[str], object]

COLUMNS = (
    ("pair", 34),
    ("half", 7),
    ("steps", 5),
    ("det", 3),
    ("alert", 5),
    ("truth", 5),
    ("delay%", 6),
    ("loss", 5),
    ("control alarms", 28),
    ("sampled/layer", 20),
    ("secs", 9),
)


def _step(step: int | None) -> str:
    return "-" if step is None else str(step)


def _sampled(points: dict[str, int]) -> str:
    """``12`` when every layer has the same count, else ``min-max (n layers)``."""
    if not points:
        return "none"
    lo, hi = min(points.values()), max(points.values())
    return f"{lo}" if lo == hi else f"{lo}-{hi} ({len(points)})"


def _row(cells: list[str]) -> str:
    return " ".join(c.ljust(w)[: max(w, len(c))] for c, (_, w) in zip(cells, COLUMNS, strict=True))


def header() -> str:
    return _row([name for name, _ in COLUMNS])


def row(v: Verdict) -> str:
    delay = v.delay_pct
    alarms = ", ".join(sorted({f"{a.indicator}@{a.probe}" for a in v.control_alarms})) or "none"
    return _row(
        [
            v.pair.name,
            v.pair.half,
            str(v.pair.steps),
            "yes" if v.detected else "NO",
            _step(v.first_alert),
            _step(v.collapse.crossed_at),
            "-" if math.isinf(delay) else f"{delay:+.1f}",
            _step(v.loss_change),
            alarms,
            f"{_sampled(v.sampled)}/{_sampled(v.sampled_control)}",
            f"{v.collapse.seconds:.0f}+{v.control.seconds:.0f}",
        ]
    )


def details(v: Verdict) -> list[str]:
    """Indented lines under a row: what fired, which layers the truth calls collapsed, the
    truth's extremes on both runs, and anything that makes the pair unreliable here."""
    ref = v.collapse.reference
    worst = max if ref.high_is_bad else min
    lines = [
        f"    mechanism: {v.pair.mechanism()}",
        f"    fired: {', '.join(map(str, v.fired)) or 'nothing of the family'}; truth "
        f"({ref.indicator}, {'>' if ref.high_is_bad else '<'} {ref.threshold:g}) collapsed "
        f"layers: {', '.join(v.collapse.layers_beyond()) or 'none'}; worst collapse "
        f"{worst(v.collapse.worst()):.3g}, control {worst(v.control.worst()):.3g}",
        "    sampled per layer (collapse): " + ", ".join(f"{k} {n}" for k, n in v.sampled.items()),
    ]
    if v.miss is not None:
        lines.append(f"    missed, {v.miss}")
    sdk = v.collapse.sdk
    lines.append(
        f"    SDK (collapse): final interval {sdk.get('every')}, {sdk.get('sampled_steps')} "
        f"sampled steps"
        + (f"; {sdk}" if sdk.get("spooled") or sdk.get("dropped") or sdk.get("failures") else "")
    )
    if not v.valid:
        lines.append(
            "    INVALID here: the collapse's truth never crossed"
            if v.collapse.crossed_at is None
            else "    INVALID here: the control's truth crossed too"
        )
    return lines


def summary_line(s: Summary) -> str:
    if not s.pairs:
        return f"{s.half}: no pairs run"
    delay = "inf" if math.isinf(s.median_delay_pct) else f"{s.median_delay_pct:+.1f}%"
    invalid = f", {s.invalid} invalid" if s.invalid else ""
    return (
        f"{s.half}: detected {s.detected}/{s.pairs} ({s.detection_rate:.0%}), "
        f"false-alarm controls {s.false_alarms}/{s.pairs}, median delay {delay}{invalid}"
        f" -> {'meets' if s.meets_bar else 'misses'} the bar"
    )


def print_report(verdicts: list[Verdict], summaries: list[Summary], out: Print = print) -> None:
    out(header())
    for v in verdicts:
        out(row(v))
        for line in details(v):
            out(line)
    out("")
    for s in summaries:
        out(summary_line(s))
