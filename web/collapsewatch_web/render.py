"""Page rendering: a Jinja environment over ``templates/`` and one function per page.

Functions take wire schemas and figure JSON and return HTML. Whatever a template would have to
compute (latest values, severities, grouping by family) is computed here, in Python, so the
templates stay logic-light and the computation stays testable.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from collapsewatch._version import __version__
from collapsewatch.schemas import IndicatorInfo, RunDetail, RunPublic
from collapsewatch_web import figures
from collapsewatch_web.assets import PLOTLY_JS, plotly_version

#: Families in the order researchers read them; unknown families follow, by name.
FAMILY_TITLES: dict[str, str] = {
    "dead_units": "Dead units",
    "dimensional": "Dimensional collapse",
    "complete": "Complete collapse",
    "training": "Training health",
    "scalars": "Logged scalars",
}
_SEVERITY_RANK = {"critical": 0, "warn": 1}


def format_value(value: float | None) -> str:
    """A value to three significant digits; ``NaN`` for a missing (non-finite) one.

    app.js formats live values the same way.
    """
    if value is None or not math.isfinite(value):
        return "NaN"
    if value != 0 and (abs(value) >= 1e4 or abs(value) < 1e-3):
        return f"{value:.2e}"
    return f"{float(f'{value:.3g}'):g}"


def format_time(moment: datetime | None) -> str:
    """A timestamp as ``YYYY-MM-DD HH:MM UTC`` (naive datetimes from SQLite are UTC)."""
    if moment is None:
        return ""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _static_url(name: str) -> str:
    # the version in the query makes browsers fetch the new file after an upgrade
    version = plotly_version() if name == PLOTLY_JS else __version__
    return f"/static/{name}?v={version}"


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("collapsewatch_web", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,  # a misspelt variable fails a test instead of rendering ""
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["value"] = format_value
    env.filters["time"] = format_time
    env.globals["static_url"] = _static_url
    env.globals["version"] = __version__
    return env


_ENV = _environment()


@dataclass(frozen=True)
class Latest:
    """The newest point of one probe's line in a chart."""

    probe: str
    colour: str
    step: int | None
    value: float | None
    severity: figures.Severity


@dataclass(frozen=True)
class ChartView:
    """What the run page shows of one indicator: the figure and its probes' latest values."""

    dom_id: str
    info: IndicatorInfo
    figure: dict[str, Any]
    latest: list[Latest]

    @property
    def severity(self) -> str:
        """The worst severity among the probes, for the card's badge."""
        found = {item.severity for item in self.latest}
        return next((s for s in ("critical", "warn", "ok") if s in found), "none")


@dataclass
class FamilyView:
    family: str
    title: str
    charts: list[ChartView] = field(default_factory=list)


def chart_dom_id(indicator: str) -> str:
    """The element id of an indicator's chart (also what app.js looks up)."""
    return "chart-" + re.sub(r"[^A-Za-z0-9_-]", "-", indicator)


def _latest(info: IndicatorInfo, figure: dict[str, Any]) -> list[Latest]:
    out = []
    for trace in figure.get("data", []):
        xs, ys = trace.get("x") or [], trace.get("y") or []
        # the last point, even when it is NaN: a run that just diverged must not show an old value
        step, value = (xs[-1], ys[-1]) if xs else (None, None)
        out.append(
            Latest(
                probe=str(trace.get("name", "")),
                colour=str(trace.get("line", {}).get("color", "")),
                step=step,
                value=value,
                severity=figures.severity(info, value),
            )
        )
    return out


def _chart_view(info: IndicatorInfo, figure: dict[str, Any]) -> ChartView:
    layout = dict(figure.get("layout", {}))
    # the page lists the probes beside each chart with their latest value: that list is the
    # legend, so Plotly's own is hidden and its room at the top given back to the plot
    layout["showlegend"] = False
    layout["margin"] = {**layout.get("margin", {}), "t": 12}
    figure = {**figure, "layout": layout}
    return ChartView(chart_dom_id(info.name), info, figure, _latest(info, figure))


def _families(charts: Sequence[ChartView]) -> list[FamilyView]:
    groups: dict[str, FamilyView] = {}
    for chart in charts:
        family = chart.info.family
        if family not in groups:
            title = FAMILY_TITLES.get(family, family.replace("_", " ").capitalize())
            groups[family] = FamilyView(family, title)
        groups[family].charts.append(chart)
    known = list(FAMILY_TITLES)
    return sorted(
        groups.values(),
        key=lambda g: (known.index(g.family) if g.family in known else len(known), g.family),
    )


def _attention(charts: Sequence[ChartView]) -> list[tuple[ChartView, Latest]]:
    """Every (chart, probe) past a threshold, critical first, then in page order."""
    hits = [(c, item) for c in charts for item in c.latest if item.severity in _SEVERITY_RANK]
    return sorted(hits, key=lambda hit: _SEVERITY_RANK[hit[1].severity])


def render_runs_page(
    runs: Sequence[RunPublic], *, project: str | None = None, show_logout: bool = False
) -> str:
    """The runs list, newest first as given; ``project`` when the list is filtered to one."""
    return _ENV.get_template("runs.html").render(
        runs=runs, project=project, show_logout=show_logout, nav="runs"
    )


def render_run_page(
    run: RunDetail,
    charts: Sequence[tuple[IndicatorInfo, dict[str, Any]]],
    cursor: int,
    *,
    show_logout: bool = False,
) -> str:
    """One run: its metadata, a chart per indicator grouped by family, and what app.js needs
    to keep the charts live (the SSE cursor the figures were read at, thresholds, themes)."""
    views = [_chart_view(info, figure) for info, figure in charts]
    live = {
        "run_id": str(run.run_id),
        "cursor": cursor,
        "charts": [
            {
                "dom_id": v.dom_id,
                "indicator": v.info.name,
                "direction": v.info.direction,
                "warn": v.info.warn,
                "critical": v.info.critical,
                "figure": v.figure,
            }
            for v in views
        ],
        "themes": {name: figures.theme_layout(t) for name, t in figures.THEMES.items()},
        "palette": list(figures.PALETTE),
        "trace_style": figures.trace_style(0),
    }
    return _ENV.get_template("run.html").render(
        run=run,
        families=_families(views),
        attention=_attention(views),
        live=live,
        show_logout=show_logout,
        nav="runs",
    )


def render_login_page(error: str | None = None, next_url: str = "/") -> str:
    """The admin-token form; ``error`` is shown above it after a rejected token."""
    return _ENV.get_template("login.html").render(
        error=error, next_url=next_url, show_logout=False, nav="login"
    )


def render_error_page(status: int, message: str, *, show_logout: bool = False) -> str:
    """A plain page for 404 and friends, with a way back to the runs."""
    return _ENV.get_template("error.html").render(
        status=status, message=message, show_logout=show_logout, nav=""
    )
