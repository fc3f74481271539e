"""A run's self-contained HTML report: the run, its health, every alert event and every
indicator's figures, read here and rendered by :mod:`collapsewatch_web.report`."""

from __future__ import annotations

import uuid

from collapsewatch_server.indicators import CATALOGUE
from collapsewatch_server.repositories import points
from collapsewatch_server.repositories import runs as run_rows
from collapsewatch_server.services import alerts, charts, runs
from collapsewatch_server.services.context import ServiceContext
from collapsewatch_server.tables import utcnow
from collapsewatch_web.report import ReportChart, render_report, report_filename

#: Alert events listed in a report at most (newest first).
MAX_EVENTS = 1000


def run_report(ctx: ServiceContext, run_id: uuid.UUID) -> tuple[str, str]:
    """The report of a run and its file name (NotFound for an unknown run)."""
    run = runs.get_run(ctx, run_id)
    with ctx.db.read() as s:
        row, _ = run_rows.get(s, run_id)
        present = set(points.indicator_names(s, row.id))
    names = [name for name in CATALOGUE if name in present]
    figures = [
        ReportChart(CATALOGUE[name].info(), charts.indicator_figures(ctx, run_id, name))
        for name in names
    ]
    families = charts.run_families(ctx, run_id)
    html = render_report(
        run,
        health=charts.run_health(ctx, run_id, families),
        events=alerts.run_alert_events(ctx, run_id, None, MAX_EVENTS),
        charts=figures,
        generated_at=utcnow(),
    )
    return html, report_filename(run)
