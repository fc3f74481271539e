"""What the dashboards draw: figures per indicator, spectra, comparisons, the thresholds in
force, and the health of runs by indicator family. Reads only; each function reads what it
needs in one session and hands schemas to the ``collapsewatch_web`` builders.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from collapsewatch.resume import RESUMED_KEY
from collapsewatch_server import errors
from collapsewatch_server.alerts.default_rules import check_indicator
from collapsewatch_server.indicators import CATALOGUE
from collapsewatch_server.repositories import (
    alert_states,
    point_bins,
    points,
    runs,
    stat_records,
)
from collapsewatch_server.services import alerts, retention
from collapsewatch_server.services import runs as run_reads
from collapsewatch_server.services.context import ServiceContext
from collapsewatch_server.services.rules import rules_in
from collapsewatch_web import figures, heatmaps, views
from collapsewatch_web.api_schemas.alerts import AlertEventPublic, EventStatus, RulePublic
from collapsewatch_web.api_schemas.catalogue import IndicatorInfo
from collapsewatch_web.api_schemas.charts import (
    ComparePublic,
    IndicatorFigures,
    SpectrumView,
    Threshold,
)
from collapsewatch_web.api_schemas.health import FamilyHealth, RunHealth, RunOverview
from collapsewatch_web.api_schemas.runs import RunPublic, SeriesPoints
from collapsewatch_web.plotly_json import Figure, update_layout

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


def run_thresholds(ctx: ServiceContext, run: RunPublic) -> dict[str, list[Threshold]]:
    """The thresholds in force for each catalogue indicator on a run: its project's enabled
    rules, else the catalogue's levels."""
    with ctx.db.read() as s:
        project_rules = rules_in(s, run.project)
    return {
        name: views.thresholds_for(ind.info(), project_rules, run.name)
        for name, ind in CATALOGUE.items()
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
        if e.step is not None and e.status in (EventStatus.firing, EventStatus.resolved)
    ]


def indicator_figures(
    ctx: ServiceContext, run_id: uuid.UUID, indicator: str, max_points: int | None = None
) -> IndicatorFigures:
    """What the run page draws of one indicator: lines (of the worst layers only, when there
    are more than the palette's colours) and a heatmap of every layer from one binned read, the
    thresholds in force, alert markers and each probe's newest value, worst first."""
    info = info_of(indicator)
    with ctx.db.read() as s:
        run, project = runs.get(s, run_id)
        newest = points.newest(s, run.id, indicator)
        if not newest:
            raise errors.NotFound(
                errors.INDICATOR_NOT_IN_RUN.format(indicator=indicator, run_id=run_id)
            )
        project_rules = rules_in(s, project)
        bins = point_bins.indicator_bins(s, run.id, indicator, bins_for(len(newest), max_points))
    names = [p.probe for p in newest]
    thresholds = views.thresholds_for(info, project_rules, run.name, names)
    latest = views.latest_values(newest, {indicator: thresholds})
    markers = markers_of(alerts.run_alert_events(ctx, run_id, indicator, MAX_MARKERS))
    # past a palette's worth of layers, lines only for the worst: the heatmap has every layer
    worst = views.highlighted(latest, info.direction, len(figures.PALETTE))
    drawn = set(figures.drawn_probes([pb.probe for pb in bins.probes], worst))
    lines = figures.indicator_figure(
        info,
        figures.lines_from_bins(
            bins.model_copy(update={"probes": [pb for pb in bins.probes if pb.probe in drawn]})
        ),
        thresholds=thresholds,
        markers=markers,
        resumed=_resumed(run.config),
        worst_of=len(bins.probes),
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


def health(
    ctx: ServiceContext, run_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[FamilyHealth]]:
    """Each run's worst alert state per indicator family, from one query for all runs."""
    with ctx.db.read() as s:
        counts = alert_states.counts(s, run_ids)
    per: dict[uuid.UUID, list[alert_states.StateCount]] = {r: [] for r in run_ids}
    for c in counts:
        per[c.run_id].append(c)
    fam = family_of()
    return {r: views.family_health(rows, fam) for r, rows in per.items()}


def run_families(ctx: ServiceContext, run_id: uuid.UUID) -> list[str]:
    """The families a run has series of, in reading order."""
    with ctx.db.read() as s:
        run, _ = runs.get(s, run_id)
        names = points.indicator_names(s, run.id)
    present = {CATALOGUE[n].family for n in names if n in CATALOGUE}
    return sorted(present, key=views.family_order)


def run_health(ctx: ServiceContext, run_id: uuid.UUID, families: Sequence[str] = ()) -> RunHealth:
    """Open alerts of a run by family (``families`` listed even when calm) and its latest
    alert events."""
    run = run_reads.get_run(ctx, run_id)
    with ctx.db.read() as s:
        counts = alert_states.counts(s, [run_id])
    return RunHealth(
        run_id=run_id,
        families=views.family_health(counts, family_of(), families),
        open_alerts=run.open_alerts,
        recent=alerts.run_alert_events(ctx, run_id, None, RECENT_ALERTS),
    )


def runs_overview(ctx: ServiceContext, listed: Sequence[RunPublic]) -> list[RunOverview]:
    """The runs ``listed`` (by :func:`collapsewatch_server.services.runs.list_runs`), each
    with its health per family: a few queries for the whole list."""
    per = health(ctx, [r.run_id for r in listed])
    return [RunOverview(**r.model_dump(), health=per[r.run_id]) for r in listed]


def compare(
    ctx: ServiceContext,
    run_ids: Sequence[uuid.UUID],
    indicator: str,
    probe: str,
    max_points: int,
) -> ComparePublic:
    """One indicator on one probe across runs: a line per run (runs without it are left out)."""
    check_indicator(indicator, loc=("query", "indicator"))
    info = info_of(indicator)
    series: list[SeriesPoints] = []
    names: list[str] = []
    for run_id in run_ids:
        run = run_reads.get_run(ctx, run_id)
        try:
            found = run_reads.get_points(ctx, run_id, indicator, probe, max_points)
        except errors.NotFound:
            continue
        series.append(found)
        names.append(run.name if run.name not in names else f"{run.name} ({str(run_id)[:8]})")
    renamed = [s.model_copy(update={"probe": n}) for s, n in zip(series, names, strict=True)]
    # the thresholds in force in the first run's project, as its run page draws them
    project_rules: list[RulePublic] = []
    first_name = ""
    if run_ids:
        with ctx.db.read() as s:
            first, project = runs.get(s, run_ids[0])
            project_rules, first_name = rules_in(s, project), first.name
    thresholds = views.thresholds_for(info, project_rules, first_name, [probe])
    fig = _compare_layout(figures.indicator_figure(info, renamed, thresholds=thresholds))
    return ComparePublic(
        indicator=indicator, probe=probe, series=series, figure=figures.figure_json(fig)
    )


def _compare_layout(fig: Figure) -> Figure:
    """A line per run: here the legend is the only key to the colours, so it is shown."""
    return update_layout(
        fig,
        {
            "showlegend": True,
            "legend": {
                "orientation": "h",
                "y": 1.02,
                "yanchor": "bottom",
                "x": 0,
                "xanchor": "left",
            },
            "margin": {"t": 36},
            "height": 380,
        },
    )


def spectrum_view(
    ctx: ServiceContext, run_id: uuid.UUID, probe: str, step: int, against: int | None = None
) -> SpectrumView:
    """A probe's spectrum at ``step`` beside the one at ``against`` (default: its first)."""
    with ctx.db.read() as s:
        run, _ = runs.get(s, run_id)
        try:
            now = stat_records.spectrum(s, run.id, probe, step)
            then = stat_records.spectrum(s, run.id, probe, 0 if against is None else against)
        except errors.NotFound as exc:
            note = retention.note(ctx)  # the records may have been deleted: say so
            raise errors.NotFound(f"{exc.message}; {note}" if note else exc.message) from None
    spectra = [then, now] if then.step != now.step else [now]
    fig = heatmaps.spectrum_figure(spectra)
    return SpectrumView(probe=probe, spectra=spectra, figure=figures.figure_json(fig))


def _resumed(config: dict[str, Any] | None) -> list[int]:
    """The steps a run resumed at (``watch(..., resume=True)``), from its config."""
    steps = (config or {}).get(RESUMED_KEY)
    return [s for s in steps if isinstance(s, int)] if isinstance(steps, list) else []
