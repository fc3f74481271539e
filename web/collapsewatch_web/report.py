"""A run's report: one HTML file with everything inside (styles, Plotly.js, the figures), to
attach to an issue or a paper review and open offline years later.

The dashboard's pages load Plotly and data from the server; the report inlines both, so it
needs no server and no network.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from collapsewatch_web import figures, render, views
from collapsewatch_web.api_schemas.alerts import AlertEventPublic
from collapsewatch_web.api_schemas.catalogue import IndicatorInfo
from collapsewatch_web.api_schemas.charts import IndicatorFigures
from collapsewatch_web.api_schemas.health import RunHealth
from collapsewatch_web.api_schemas.runs import RunDetail
from collapsewatch_web.assets import STATIC_DIR, plotly_js_path


@dataclass(frozen=True)
class ReportChart:
    """One indicator of the report: its catalogue entry and the figures the run page draws."""

    info: IndicatorInfo
    figures: IndicatorFigures


def report_filename(run: RunDetail) -> str:
    """``<project>-<run name>-report.html``, the names made of safe characters only."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{run.project}-{run.name}")
    return f"{safe}-report.html"


def render_report(
    run: RunDetail,
    *,
    health: RunHealth,
    events: Sequence[AlertEventPublic],
    charts: Sequence[ReportChart],
    generated_at: datetime,
) -> str:
    """The report of a run: header, health by family, every alert event, and each family's
    charts (lines and heatmap of every indicator) drawn in the light theme."""
    families: dict[str, list[ReportChart]] = {}
    for chart in charts:
        families.setdefault(chart.info.family, []).append(chart)
    ordered = sorted(families.items(), key=lambda item: views.family_order(item[0]))
    titles = {f.family: f.title for f in health.families}
    return render.template("report.html").render(
        run=run,
        health=health,
        events=events,
        families=[
            (name, titles.get(name, name.replace("_", " ").title()), c) for name, c in ordered
        ],
        chart_id=render.chart_dom_id,
        generated_at=generated_at,
        styles=(STATIC_DIR / "style.css").read_text(encoding="utf-8"),
        plotly_js=plotly_js_path().read_text(encoding="utf-8"),
        theme=figures.theme_layout(figures.THEMES["light"]),
        model=views.model_summary(run.probes),
        sampling=views.sampling_text(run.sampling),
    )
