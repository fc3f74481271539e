"""The dashboards' service: store reads + catalogue + ``collapsewatch_web`` builders -> the
schemas of the dashboard endpoints (the pages' own data: :mod:`.page_data`).

Routes call these and stay a few lines; everything here is reads, nothing is written.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from fnmatch import fnmatchcase

import numpy as np

from collapsewatch_server import errors
from collapsewatch_server.alerts import backtest as backtest_replay
from collapsewatch_server.alerts.rules import check_indicator
from collapsewatch_server.downsample import minmax_downsample
from collapsewatch_server.indicators import CATALOGUE
from collapsewatch_server.store import Store
from collapsewatch_server.store.dashboards import StateCount
from collapsewatch_web import figures, heatmaps, views
from collapsewatch_web.api_schemas.alerts import AlertEventPublic
from collapsewatch_web.api_schemas.backtest import BacktestRequest, BacktestResult
from collapsewatch_web.api_schemas.catalogue import IndicatorInfo
from collapsewatch_web.api_schemas.charts import (
    ComparePublic,
    IndicatorFigures,
    SpectrumView,
    Threshold,
)
from collapsewatch_web.api_schemas.health import FamilyHealth, RunHealth, RunOverview
from collapsewatch_web.api_schemas.runs import RunDetail, RunPublic, SeriesPoints

#: Points a line chart draws in all, shared among its probes: 4 layers get 1000 points each,
#: 200 layers 300 each (the heatmap's columns are the same bins).
POINT_BUDGET = 120_000
MIN_BINS, MAX_BINS = 150, 500
#: Alert events drawn as markers on one chart.
MAX_MARKERS = 500
#: Events in the run page's health summary.
RECENT_ALERTS = 5


def info_of(indicator: str) -> IndicatorInfo:
    """The catalogue entry of an indicator (NotFound, as a path parameter, when unknown)."""
    found = CATALOGUE.get(indicator)
    if found is None:
        raise errors.NotFound(errors.UNKNOWN_INDICATOR.format(indicator=indicator))
    return found.info()


def family_of() -> dict[str, str]:
    """Indicator -> family, from the catalogue as it is now (others add indicators)."""
    return {name: ind.family for name, ind in CATALOGUE.items()}


def run_thresholds(store: Store, run: RunPublic | RunDetail) -> dict[str, list[Threshold]]:
    """The thresholds in force for each catalogue indicator on a run: its project's enabled
    rules, else the catalogue's levels."""
    rules = store.list_rules(run.project)
    return {
        name: views.thresholds_for(ind.info(), rules, run.name) for name, ind in CATALOGUE.items()
    }


def bins_for(probes: int, max_points: int | None) -> int:
    """Bins (two points each on the line chart) for a chart of ``probes`` lines."""
    if max_points is not None:
        return max(1, max_points // 2)
    return max(MIN_BINS, min(MAX_BINS, POINT_BUDGET // (2 * max(1, probes))))


def markers_of(events: Sequence[AlertEventPublic]) -> list[figures.Marker]:
    """Alert events as chart markers (nodata events belong to no chart)."""
    return [
        figures.Marker(
            step=e.step,
            value=e.value,
            status=e.status.value,
            severity=e.severity.value,
            text=f"{e.severity.value} · step {e.step}<br>{e.message}",
            probe=e.probe or "",
        )
        for e in events
        if e.step is not None and e.status.value in ("firing", "resolved")
    ]


def indicator_figures(
    store: Store, run_id: uuid.UUID, indicator: str, max_points: int | None = None
) -> IndicatorFigures:
    """What the run page draws of one indicator: lines and heatmap from one binned read, the
    thresholds in force, alert markers and each probe's newest value, worst first."""
    info = info_of(indicator)
    run = store.get_run(run_id)
    probes = store.latest_points(run_id, indicator)
    if not probes:
        raise errors.NotFound(
            errors.INDICATOR_NOT_IN_RUN.format(indicator=indicator, run_id=run_id)
        )
    names = [p.probe for p in probes]
    thresholds = views.thresholds_for(info, store.list_rules(run.project), run.name, names)
    latest = views.latest_values(probes, {indicator: thresholds})
    bins = store.indicator_bins(run_id, indicator, bins_for(len(probes), max_points))
    events = store.run_alert_events(run_id, indicator, MAX_MARKERS)
    markers = markers_of(events)
    lines = figures.indicator_figure(
        info,
        figures.lines_from_bins(bins),
        thresholds=thresholds,
        markers=markers,
        highlight=views.highlighted(latest, info.direction, len(figures.PALETTE)),
    )
    heatmap = (
        heatmaps.heatmap_figure(info, bins, thresholds, markers=markers) if len(names) > 1 else None
    )
    return IndicatorFigures(
        indicator=indicator,
        lines=figures.figure_json(lines),
        heatmap=figures.figure_json(heatmap) if heatmap is not None else None,
        latest=views.worst_first(latest, info.direction),
        thresholds=thresholds,
        total=bins.total,
        bin_width=bins.width,
    )


def health(store: Store, run_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[FamilyHealth]]:
    """Each run's worst alert state per indicator family, from one query for all runs."""
    counts: dict[uuid.UUID, list[StateCount]] = {r: [] for r in run_ids}
    for c in store.state_counts(run_ids):
        counts[c.run_id].append(c)
    fam = family_of()
    return {r: views.family_health(rows, fam) for r, rows in counts.items()}


def run_health(store: Store, run_id: uuid.UUID, families: Sequence[str] = ()) -> RunHealth:
    """Open alerts of a run by family (``families`` listed even when calm) and its latest
    alert events."""
    run = store.get_run(run_id)
    rows = store.state_counts([run_id])
    per = views.family_health(rows, family_of(), families)
    return RunHealth(
        run_id=run_id,
        families=per,
        open_alerts=run.open_alerts,
        recent=store.run_alert_events(run_id, None, RECENT_ALERTS),
    )


def runs_overview(
    store: Store, project: str | None = None, name: str | None = None, limit: int = 500
) -> list[RunOverview]:
    """Runs newest first with their health per family: two queries for the whole list."""
    runs = store.find_runs(project, name, limit)
    per = health(store, [r.run_id for r in runs])
    return [RunOverview(**r.model_dump(), health=per[r.run_id]) for r in runs]


def run_families(store: Store, run_id: uuid.UUID) -> list[str]:
    """The families a run has series of, in reading order."""
    present = {CATALOGUE[n].family for n in store.indicator_names(run_id) if n in CATALOGUE}
    return sorted(present, key=views.family_order)


def compare(
    store: Store, run_ids: Sequence[uuid.UUID], indicator: str, probe: str, max_points: int
) -> ComparePublic:
    """One indicator on one probe across runs: a line per run (runs without it are left out)."""
    check_indicator(indicator, loc=("query", "indicator"))
    info = info_of(indicator)
    series: list[SeriesPoints] = []
    names: list[str] = []
    for run_id in run_ids:
        run = store.get_run(run_id)
        try:
            points = store.get_points(run_id, indicator, probe, max_points)
        except errors.NotFound:
            continue
        series.append(points)
        names.append(run.name if run.name not in names else f"{run.name} ({str(run_id)[:8]})")
    renamed = [s.model_copy(update={"probe": n}) for s, n in zip(series, names, strict=True)]
    # the thresholds in force in the first run's project, as its run page draws them
    first = store.get_run(run_ids[0]) if run_ids else None
    rules = store.list_rules(first.project) if first else []
    thresholds = views.thresholds_for(info, rules, first.name if first else "", [probe])
    fig = figures.indicator_figure(info, renamed, thresholds=thresholds)
    # a line per run: here the legend is the only key to the colours
    fig.update_layout(
        showlegend=True,
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0, "xanchor": "left"},
        margin={"t": 36},
        height=380,
    )
    return ComparePublic(
        indicator=indicator, probe=probe, series=series, figure=figures.figure_json(fig)
    )


def spectrum_view(
    store: Store, run_id: uuid.UUID, probe: str, step: int, against: int | None = None
) -> SpectrumView:
    """A probe's spectrum at ``step`` beside the one at ``against`` (default: its first)."""
    now = store.spectrum(run_id, probe, step)
    then = store.spectrum(run_id, probe, 0 if against is None else against)
    spectra = [then, now] if then.step != now.step else [now]
    fig = heatmaps.spectrum_figure(spectra)
    return SpectrumView(probe=probe, spectra=spectra, figure=figures.figure_json(fig))


def backtest(store: Store, project: str, request: BacktestRequest) -> BacktestResult:
    """Replay a rule over a stored run of ``project``: where it would have fired, on a chart
    of the points it watches with its thresholds."""
    rule = request.rule
    check_indicator(rule.indicator, loc=("body", "rule", "indicator"))
    info = info_of(rule.indicator)
    store.list_rules(project)  # NotFound for an unknown project
    run = store.get_run(request.run_id)
    if run.project != project:
        raise errors.Invalid(
            errors.RUN_IN_OTHER_PROJECT.format(
                run_id=run.run_id, actual=run.project, given=project
            ),
            loc=("body", "run_id"),
        )
    try:
        series = store.series_points(run.run_id, rule.indicator)
    except errors.NotFound:
        series = []
    run_matches = rule.run is None or fnmatchcase(run.name, rule.run)
    probes = backtest_replay.watched(rule, series)
    events, judged = backtest_replay.replay(rule, probes) if run_matches else ([], 0)
    shown = [
        _downsampled(rule.indicator, p.probe, p.steps, p.values, request.max_points) for p in probes
    ]
    thresholds = views.thresholds_for(info, [rule.model_copy(update={"enabled": True})])
    markers = [
        figures.Marker(e.step, e.value, e.status, e.severity.value, e.message, e.probe)
        for e in events
    ]
    fig = figures.indicator_figure(
        info, shown, thresholds=thresholds, markers=markers, highlight=[e.probe for e in events]
    )
    return BacktestResult(
        run_id=run.run_id,
        run_name=run.name,
        run_matches=run_matches,
        probes=[p.probe for p in probes],
        points_judged=judged,
        events=events,
        series=shown,
        figure=figures.figure_json(fig),
    )


def _downsampled(
    indicator: str, probe: str, steps: Sequence[int], values: Sequence[float], max_points: int
) -> SeriesPoints:
    kept_steps, kept_values = minmax_downsample(
        np.asarray(steps, dtype=np.int64), np.asarray(values, dtype=np.float64), max_points
    )
    return SeriesPoints(
        indicator=indicator,
        probe=probe,
        steps=kept_steps.tolist(),
        values=[v if math.isfinite(v) else None for v in kept_values.tolist()],
        total=len(steps),
        downsampled=kept_steps.size < len(steps),
    )
