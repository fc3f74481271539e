"""What the dashboard pages are rendered from: a few store reads per page, shaped for
``collapsewatch_web.render``. Page routes call one function here and render its result."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from collapsewatch_server.dashboards import run_health, run_thresholds
from collapsewatch_server.indicators import CATALOGUE
from collapsewatch_server.store import Store
from collapsewatch_web import views
from collapsewatch_web.api_schemas.alerts import AlertEventPublic, EventStatus, RulePublic, Severity
from collapsewatch_web.api_schemas.catalogue import IndicatorInfo
from collapsewatch_web.api_schemas.charts import LatestValue, Threshold
from collapsewatch_web.api_schemas.health import FiringAlert, RunHealth
from collapsewatch_web.api_schemas.ingest_tokens import TokenPublic
from collapsewatch_web.api_schemas.runs import RunDetail, RunPublic
from collapsewatch_web.api_schemas.webhooks import WebhookPublic


@dataclass(frozen=True)
class RunPage:
    """What the run page is rendered from: a handful of cheap queries whatever the run's size
    (the charts themselves load from :func:`indicator_figures` as they scroll into view)."""

    run: RunDetail
    indicators: list[IndicatorInfo]
    latest: list[LatestValue]
    thresholds: dict[str, list[Threshold]]
    health: RunHealth
    focus: str | None = None


def run_page(
    store: Store, run_id: uuid.UUID, step: int | None = None, indicator: str | None = None
) -> RunPage:
    """The run, its indicators in catalogue order, every series' newest point judged against
    the thresholds in force, and its health by family. With ``step`` (a link from an alert),
    ``focus`` is the indicator to scroll to: the one given, else the one of an alert raised
    at that step."""
    run = store.get_run(run_id)
    present = set(store.indicator_names(run_id))
    # catalogue order puts related indicators together; one that left the catalogue has no
    # metadata to draw it with and is skipped
    indicators = [ind.info() for name, ind in CATALOGUE.items() if name in present]
    thresholds = run_thresholds(store, run)
    latest = views.latest_values(store.latest_points(run_id), thresholds)
    families = sorted({i.family for i in indicators}, key=views.family_order)
    focus = indicator if indicator in present else None
    if focus is None and step is not None:
        at_step = (e.indicator for e in store.run_alert_events(run_id) if e.step == step)
        focus = next((name for name in at_step if name in present), None)
    health = run_health(store, run_id, families)
    return RunPage(run, indicators, latest, thresholds, health, focus)


@dataclass(frozen=True)
class ComparePage:
    """The compare page: the runs, what they can be compared on, and other runs to add."""

    runs: list[RunDetail]
    options: dict[str, list[str]]  # indicator (catalogue order) -> probes (model order)
    titles: dict[str, str]
    others: list[RunPublic]


def compare_page(store: Store, run_ids: Sequence[uuid.UUID]) -> ComparePage:
    """Runs to overlay (NotFound for an unknown one) and the indicators and probes they have;
    ``others``: recent runs that could be added, the first run's project first."""
    runs = [store.get_run(r) for r in run_ids]
    index = store.series_index(run_ids) if run_ids else {}
    options = {name: index[name] for name in CATALOGUE if name in index}
    titles = {name: CATALOGUE[name].title for name in options}
    chosen = set(run_ids)
    recent = [r for r in store.find_runs(limit=100) if r.run_id not in chosen]
    if runs:
        recent.sort(key=lambda r: r.project != runs[0].project)  # stable: newest first within
    return ComparePage(runs, options, titles, recent)


@dataclass(frozen=True)
class AlertsPage:
    """The alerts page: what fires now, past events, and the chosen project's rules."""

    projects: list[str]
    runs: list[RunPublic]
    firing: list[FiringAlert]
    events: list[AlertEventPublic]
    rules: list[RulePublic]
    indicators: list[IndicatorInfo]


def alerts_page(
    store: Store,
    project: str | None = None,
    run_id: uuid.UUID | None = None,
    state: EventStatus | None = None,
    severity: Severity | None = None,
    limit: int = 200,
) -> AlertsPage:
    """Firing states and events under the filters (NotFound for an unknown project or run);
    with a project, its rules and runs (for the editor's back-test)."""
    firing = store.firing_states(project)
    if run_id is not None:
        firing = [f for f in firing if f.run_id == run_id]
    if severity is not None:
        firing = [f for f in firing if f.severity == severity]
    events = store.list_alerts(project, run_id, state, severity, limit)
    return AlertsPage(
        projects=[p.name for p in store.list_projects()],
        runs=store.find_runs(project, limit=200) if project else [],
        firing=firing if state in (None, EventStatus.firing) else [],
        events=events,
        rules=store.list_rules(project) if project else [],
        indicators=[ind.info() for ind in CATALOGUE.values()],
    )


@dataclass(frozen=True)
class SettingsPage:
    """A project's settings page: its ingest tokens and webhooks."""

    project: str
    tokens: list[TokenPublic]
    webhooks: list[WebhookPublic]


def settings_page(store: Store, project: str) -> SettingsPage:
    """Tokens and webhooks of an existing project (NotFound otherwise)."""
    return SettingsPage(project, store.list_tokens(project), store.list_webhooks(project))
