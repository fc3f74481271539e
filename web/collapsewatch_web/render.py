"""Page rendering: a Jinja environment over ``templates/`` and one function per page.

Functions take API schemas and figure JSON and return HTML. Whatever a template would have to
compute (latest values, severities, grouping by family) is computed here, in Python, so the
templates stay logic-light and the computation stays testable.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from jinja2 import Environment, PackageLoader, StrictUndefined, Template, select_autoescape

from collapsewatch._version import __version__
from collapsewatch.schemas import ProbeKind
from collapsewatch_web import figures, views
from collapsewatch_web.api_schemas.alerts import (
    AlertEventPublic,
    Condition,
    EventStatus,
    RuleCreate,
    RulePublic,
    Severity,
)
from collapsewatch_web.api_schemas.catalogue import IndicatorInfo
from collapsewatch_web.api_schemas.charts import LatestValue
from collapsewatch_web.api_schemas.health import FamilyHealth, FiringAlert, RunHealth, RunOverview
from collapsewatch_web.api_schemas.ingest_tokens import TokenPublic
from collapsewatch_web.api_schemas.runs import RunDetail, RunPublic
from collapsewatch_web.api_schemas.silences import SilencePublic
from collapsewatch_web.api_schemas.webhooks import WEBHOOK_FORMATS, DeliveryPublic, WebhookPublic
from collapsewatch_web.assets import PLOTLY_JS, plotly_version


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


def format_clock(moment: datetime | None) -> str:
    """The time of day, ``HH:MM`` UTC: alert lists show when, the title says which day."""
    return format_time(moment)[11:16]


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
    env.filters["clock"] = format_clock
    env.globals["static_url"] = _static_url
    env.globals["version"] = __version__
    # every page: the Plotly relayout patch per colour scheme, read by app.js
    env.globals["themes"] = {name: figures.theme_layout(t) for name, t in figures.THEMES.items()}
    return env


_ENV = _environment()


def template(name: str) -> Template:
    """A template of this package, in the pages' environment (filters, macros, themes)."""
    return _ENV.get_template(name)


def render_runs_page(
    runs: Sequence[RunOverview],
    *,
    projects: Sequence[str] = (),
    project: str | None = None,
    q: str | None = None,
    tag: str | None = None,
    show_logout: bool = False,
) -> str:
    """The runs list, newest first as given, with each run's health per family and tags;
    ``project``, ``q`` and ``tag`` when the list is filtered (to one project, to names
    containing ``q``, to runs carrying ``tag``)."""
    return _ENV.get_template("runs.html").render(
        runs=runs,
        projects=projects,
        project=project,
        q=q,
        tag=tag,
        show_logout=show_logout,
        nav="runs",
    )


@dataclass(frozen=True)
class CardView:
    """One indicator's card on the run page; its charts load when it scrolls into view."""

    dom_id: str
    info: IndicatorInfo
    probes: int
    judgement: str
    latest: list[LatestValue]

    @property
    def heatmap(self) -> bool:
        """A heatmap needs layers to stack: one probe (the loss) has none."""
        return self.probes > 1


@dataclass
class FamilyView:
    family: str
    title: str
    health: FamilyHealth | None
    cards: list[CardView] = field(default_factory=list)


def chart_dom_id(indicator: str) -> str:
    """The element id of an indicator's line chart (also what the scripts look up); its card
    is ``{id}-card``, its heatmap ``{id}-heat``."""
    return "chart-" + re.sub(r"[^A-Za-z0-9_-]", "-", indicator)


#: Probes listed under a card before its charts load, worst first.
CARD_LATEST = 8


def run_families(
    indicators: Sequence[IndicatorInfo],
    latest: Sequence[LatestValue],
    health: Sequence[FamilyHealth] = (),
) -> list[FamilyView]:
    """A section per family (reading order), a card per indicator (the order given: the
    catalogue's), each with its probes' newest values worst first."""
    by_indicator: dict[str, list[LatestValue]] = {}
    for value in latest:
        by_indicator.setdefault(value.indicator, []).append(value)
    health_of = {h.family: h for h in health}
    groups: dict[str, FamilyView] = {}
    for info in indicators:
        values = views.worst_first(by_indicator.get(info.name, []), info.direction)
        family = groups.setdefault(
            info.family,
            FamilyView(info.family, views.family_title(info.family), health_of.get(info.family)),
        )
        family.cards.append(
            CardView(
                dom_id=chart_dom_id(info.name),
                info=info,
                probes=len(values),
                judgement=values[0].judgement if values else "none",
                latest=values[:CARD_LATEST],
            )
        )
    return sorted(groups.values(), key=lambda g: views.family_order(g.family))


def render_run_page(
    run: RunDetail,
    *,
    indicators: Sequence[IndicatorInfo],
    latest: Sequence[LatestValue],
    health: RunHealth,
    cursor: int,
    alerts_after: datetime,
    step: int | None = None,
    focus: str | None = None,
    unheard: Sequence[str] = (),
    show_logout: bool = False,
) -> str:
    """One run: header and model, health by family, the worst layers now, and a section per
    family whose charts the browser loads when they scroll into view (``live`` is what
    run.js needs: the SSE cursors, the indicators' cards, themes; live points arrive judged)."""
    families = run_families(indicators, latest, health.families)
    worst = views.worst_layers(latest, WORST_ROWS)
    activations = [p.name for p in run.probes if p.kind == ProbeKind.activation]
    live = {
        "run_id": str(run.run_id),
        "cursor": cursor,
        "alerts_after": alerts_after.isoformat(),
        "step": step,
        "last_step": run.last_step,
        "indicators": {
            info.name: {
                "dom_id": chart_dom_id(info.name),
                "title": info.title,
                "direction": info.direction,
            }
            for info in indicators
        },
        "worst": [v.model_dump(mode="json") for v in worst],
        "worst_limit": WORST_ROWS,
        "focus": focus,
        "palette": list(figures.PALETTE),
        "trace_style": figures.trace_style(0),
    }
    titles = {info.name: info.title for info in indicators}
    return _ENV.get_template("run.html").render(
        unheard=unheard,
        run=run,
        families=families,
        worst=worst,
        titles=titles,
        dom_ids={info.name: chart_dom_id(info.name) for info in indicators},
        health=health,
        model=views.model_summary(run.probes),
        sampling=views.sampling_text(run.sampling),
        coverage=views.coverage_rows(run.coverage),
        spectrum_probes=activations,
        spectrum_probe=_spectrum_probe(worst, activations),
        live=live,
        show_logout=show_logout,
        nav="runs",
    )


#: Rows of the "worst layers now" table.
WORST_ROWS = 12


def _spectrum_probe(worst: Sequence[LatestValue], activations: Sequence[str]) -> str | None:
    """The layer whose spectrum the page opens with: the worst activation layer, else the
    first one."""
    for value in worst:
        if value.probe in activations:
            return value.probe
    return activations[0] if activations else None


def render_compare_page(
    runs: Sequence[RunDetail],
    *,
    options: Mapping[str, Sequence[str]],
    titles: Mapping[str, str],
    others: Sequence[RunPublic] = (),
    indicator: str | None = None,
    probe: str | None = None,
    show_logout: bool = False,
) -> str:
    """Runs side by side on one indicator and layer; the chosen pair defaults to the first
    indicator (catalogue order) and its first layer."""
    if indicator not in options:
        indicator = next(iter(options), None)
    probes = list(options.get(indicator, ())) if indicator else []
    if probe not in probes:
        probe = probes[0] if probes else None
    data = {
        "runs": [str(r.run_id) for r in runs],
        "options": options,
        "indicator": indicator,
        "probe": probe,
    }
    return _ENV.get_template("compare.html").render(
        runs=runs,
        options=options,
        titles=titles,
        others=others,
        indicator=indicator,
        probe=probe,
        probes=probes,
        data=data,
        show_logout=show_logout,
        nav="compare",
    )


#: What the rule editor and the filters offer, in the schemas' words.
RULE_CONDITIONS = [c.value for c in Condition]
SEVERITIES = [s.value for s in Severity]
EVENT_STATES = [e.value for e in EventStatus]


def render_alerts_page(
    *,
    projects: Sequence[str],
    runs: Sequence[RunPublic],
    firing: Sequence[FiringAlert],
    events: Sequence[AlertEventPublic],
    rules: Sequence[RulePublic],
    indicators: Sequence[IndicatorInfo],
    filters: Mapping[str, str | None],
    silences: Sequence[SilencePublic] = (),
    notifications: Sequence[DeliveryPublic] = (),
    unheard: Sequence[str] = (),
    show_logout: bool = False,
) -> str:
    """Alerts firing now and past events under ``filters`` (project, run_id, severity,
    state), and, for a chosen project, its notifications (groups of events sent to its
    receivers), its silences and its rules with the editor and back-test. ``unheard``:
    projects with alerts firing and no receiver (a banner says so)."""
    project = filters.get("project")
    data = {
        "project": project,
        "rules": [r.model_dump(mode="json") for r in rules],
        "defaults": RuleCreate(
            name="x", indicator="x", condition=Condition.above, threshold=0
        ).model_dump(mode="json", exclude={"name", "indicator", "condition", "threshold"}),
    }
    return _ENV.get_template("alerts.html").render(
        silences=silences,
        notifications=notifications,
        unheard=unheard,
        projects=projects,
        runs=runs,
        firing=firing,
        events=events,
        rules=rules,
        indicators=indicators,
        filters=filters,
        project=project,
        conditions=RULE_CONDITIONS,
        severities=SEVERITIES,
        states=EVENT_STATES,
        data=data,
        show_logout=show_logout,
        nav="alerts",
    )


def rule_summary(rule: RulePublic) -> str:
    """A rule's condition as people say it: "above 0.5 for 3 points"."""
    c = rule.condition
    if c in (Condition.above, Condition.below):
        text = f"{c.value} {format_value(rule.threshold)}"
    elif c == Condition.outside:
        text = f"outside [{format_value(rule.low)}, {format_value(rule.high)}]"
    else:
        text = f"{c.value} {rule.percent:g}% from its {rule.reference.value}"
    if rule.pending_points:
        text += f" for {rule.pending_points} point{'s' if rule.pending_points != 1 else ''}"
    elif rule.pending_steps:
        text += f" for {rule.pending_steps} steps"
    return text


def warmup_text(rule: RulePublic) -> str:
    """A rule's warm-up as people say it: when its judging starts (a dash without one)."""
    if not rule.warmup_steps:
        return "\u2013"  # the en dash of the pages' empty cells
    if rule.condition in (Condition.drop, Condition.rise):
        return f"from step {rule.warmup_steps}"
    return f"until step {rule.warmup_steps} or a healthy point"


_ENV.filters["rule_summary"] = rule_summary
_ENV.filters["warmup"] = warmup_text


def render_settings_page(
    project: str,
    *,
    tokens: Sequence[TokenPublic],
    webhooks: Sequence[WebhookPublic],
    server_url: str = "",
    show_logout: bool = False,
) -> str:
    """A project's ingest tokens and webhooks, with forms to add them (a secret is shown
    once, when created), revoke tokens, test webhooks and read their delivery logs."""
    return _ENV.get_template("settings.html").render(
        project=project,
        tokens=tokens,
        webhooks=webhooks,
        server_url=server_url,
        formats=WEBHOOK_FORMATS,
        severities=SEVERITIES,
        data={"project": project},
        show_logout=show_logout,
        nav="",
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
