"""Why a collapse run was missed, from what the server stored (public API only).

The causes issue 10 names, tried in this order on the layers whose truth crossed:

- discovery: none of them has a series of the reference's indicator (the layer where the
  units die, a BatchNorm say, is not watched, or nothing computes the indicator there);
- no rule: the project has no enabled above/below rule on the indicator;
- rule timing: some points after the crossing are beyond the rule's threshold, yet nothing
  fired (pending points, recovery, warm-up);
- sampling: fewer points after the crossing than the rule needs to fire (its pending points,
  plus the records a windowed indicator sums over, minus one);
- warm-up: enough points after the crossing, too few of them after the rule's warm-up;
- threshold: enough judged points, none beyond the threshold (the indicator, as sampled and
  windowed, reads differently from the truth).
"""

from __future__ import annotations

import itertools
import statistics
from dataclasses import dataclass

from collapsewatch_demo.harness import RunResult
from collapsewatch_demo.validation.api import Server


@dataclass(frozen=True)
class Diagnosis:
    cause: str
    facts: str

    def __str__(self) -> str:
        return f"{self.cause}: {self.facts}"


def _beyond(value: float | None, condition: str, threshold: float) -> bool:
    if value is None:  # NaN/inf is stored as None: a breach for the engine as for us
        return True
    return value > threshold if condition == "above" else value < threshold


def _probe_of(name: str, series: dict[str, int]) -> str:
    """The series probe of a layer: its own name, else one of its parameters' (a weight's
    statistics are filed under ``<layer>.weight``, or ``<layer>.weight_orig`` once pruned)."""
    if name in series:
        return name
    return next((p for p in series if p.startswith(f"{name}.")), name)


def diagnose(server: Server, project: str, run: RunResult) -> Diagnosis | None:
    """The likeliest cause of a miss on ``run`` (None when its truth never crossed)."""
    ref, crossed = run.reference, run.crossed_at
    if crossed is None or run.run_id is None:
        return None
    indicator = ref.indicator
    collapsed = run.layers_beyond()
    series = server.sampled(run.run_id, indicator, fallback=False)
    probes = {layer: _probe_of(ref.probe(layer), series) for layer in collapsed}
    watched = [layer for layer in collapsed if series.get(probes[layer], 0) > 0]
    if not watched:
        return Diagnosis(
            "discovery",
            f"collapsed {', '.join(collapsed)} have no {indicator} series "
            f"(series on: {', '.join(series) or 'nothing'})",
        )
    rules = [
        r
        for r in server.rules(project)
        if r["indicator"] == indicator
        and r["enabled"]
        and r["condition"] in ("above", "below")
        and r["threshold"] is not None
    ]
    if not rules:
        return Diagnosis("no rule", f"no enabled above/below rule on {indicator}")
    rule = rules[0]
    cond, threshold = str(rule["condition"]), float(rule["threshold"])
    pending = int(rule.get("pending_points") or 1)
    warmup = int(rule.get("warmup_steps") or 0)
    window = server.windows.get(indicator, 1)
    needed = pending + window - 1
    best: tuple[int, int, int, str, list[int], list[float | None]] | None = None
    for layer in watched:
        points = server.points(run.run_id, indicator, probes[layer])
        after = [(s, v) for s, v in points if s >= crossed]
        judged = [(s, v) for s, v in after if s >= warmup]
        n_beyond = sum(_beyond(v, cond, threshold) for _, v in judged)
        key = (
            n_beyond,
            len(judged),
            len(after),
            layer,
            [s for s, _ in after],
            [v for _, v in after],
        )
        best = key if best is None or key[:3] > best[:3] else best
    assert best is not None
    n_beyond, n_judged, n_after, layer, steps, values = best
    gap = statistics.median(b - a for a, b in itertools.pairwise(steps)) if len(steps) > 1 else None
    shown = ", ".join(
        f"{s}:{'nan' if v is None else f'{v:.3g}'}"
        for s, v in zip(steps[:8], values[:8], strict=False)
    )
    rule_text = f"rule {cond} {threshold:g}, {pending} pending point(s), warm-up {warmup}" + (
        f", {window}-record window" if window > 1 else ""
    )
    facts = (
        f"{layer}: {n_after} point(s) from the crossing at {crossed}"
        + (f" (every ~{gap:g} steps)" if gap else "")
        + f" [{shown}{', ...' if len(steps) > 8 else ''}]; {rule_text}"
    )
    if n_beyond:
        return Diagnosis("rule timing", f"{n_beyond} judged point(s) beyond; {facts}")
    if n_after < needed:
        return Diagnosis("sampling", f"needs {needed} point(s); {facts}")
    if n_judged < needed:
        return Diagnosis("warm-up", facts)
    return Diagnosis("threshold", facts)
