"""Rule back-test: what a rule, not saved, would have done on a stored run of the project."""

from __future__ import annotations

import numpy as np

from collapsewatch_server import errors
from collapsewatch_server.alerts import backtest as replay
from collapsewatch_server.alerts.default_rules import check_indicator
from collapsewatch_server.repositories import points, projects, runs
from collapsewatch_server.services import retention
from collapsewatch_server.services.charts import info_of
from collapsewatch_server.services.context import ServiceContext
from collapsewatch_server.services.runs import downsampled
from collapsewatch_web import figures, views
from collapsewatch_web.api_schemas.alerts import glob_matches
from collapsewatch_web.api_schemas.backtest import BacktestRequest, BacktestResult


def backtest(ctx: ServiceContext, project: str, request: BacktestRequest) -> BacktestResult:
    """Replay the rule over every point of the run it watches, with the alert engine: where it
    would have fired, on a chart of those points with the rule's thresholds. NotFound for an
    unknown project or run; Invalid for a run of another project or an unknown indicator."""
    rule = request.rule
    check_indicator(rule.indicator, loc=("body", "rule", "indicator"))
    info = info_of(rule.indicator)
    with ctx.db.read() as s:
        projects.get(s, project)
        run, run_project = runs.get(s, request.run_id)
        if run_project != project:
            raise errors.Invalid(
                errors.RUN_IN_OTHER_PROJECT.format(
                    run_id=request.run_id, actual=run_project, given=project
                ),
                loc=("body", "run_id"),
            )
        try:
            series = points.of_indicator(s, run.id, rule.indicator)
        except errors.NotFound:
            series = []
    run_matches = glob_matches(run.name, rule.run)
    watched = replay.watched(rule, series)
    events, judged = replay.replay(rule, watched) if run_matches else ([], 0)
    shown = [
        downsampled(
            rule.indicator,
            p.probe,
            np.asarray(p.steps, dtype=np.int64),
            np.asarray(p.values, dtype=np.float64),
            request.max_points,
        )
        for p in watched
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
        run_id=request.run_id,
        run_name=run.name,
        run_matches=run_matches,
        probes=[p.probe for p in watched],
        points_judged=judged,
        events=events,
        series=shown,
        figure=figures.figure_json(fig),
        note=retention.note(ctx),
    )
