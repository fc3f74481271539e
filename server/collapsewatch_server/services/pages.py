"""The dashboard pages: a few reads per page, handed once to ``collapsewatch_web.render``,
which returns the HTML. Data goes one way, from here to the web package; the page routes only
parse, call one function here and wrap its HTML.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from collapsewatch_server.indicators import CATALOGUE
from collapsewatch_server.repositories import points
from collapsewatch_server.repositories import runs as run_rows
from collapsewatch_server.services import (
    alerts,
    charts,
    ingest_tokens,
    projects,
    rules,
    runs,
    silences,
)
from collapsewatch_server.services.context import ServiceContext
from collapsewatch_server.services.webhooks import list_webhooks, project_notifications, unheard
from collapsewatch_web import render, views
from collapsewatch_web.api_schemas.alerts import EventStatus, Severity


def _show_logout(ctx: ServiceContext) -> bool:
    return ctx.settings.admin_token is not None


def error_page(ctx: ServiceContext, status: int, message: str) -> str:
    """A plain page for 404 and friends, with a way back to the runs."""
    return render.render_error_page(status, message, show_logout=_show_logout(ctx))


def runs_page(
    ctx: ServiceContext, project: str | None = None, q: str | None = None, tag: str | None = None
) -> str:
    """Every run, newest first, with its health per indicator family; of one project, whose
    name contains ``q`` and carrying ``tag``, when given (NotFound for an unknown project)."""
    listed = charts.runs_overview(ctx, runs.list_runs(ctx, project, q, tag=tag))
    names = [p.name for p in projects.list_projects(ctx)]
    return render.render_runs_page(
        listed, projects=names, project=project, q=q, tag=tag, show_logout=_show_logout(ctx)
    )


def run_page(
    ctx: ServiceContext, run_id: uuid.UUID, step: int | None = None, indicator: str | None = None
) -> str:
    """One run: its indicators in catalogue order, every series' newest point judged against
    the thresholds in force, and its health by family (the charts load as they scroll into
    view). With ``step`` (a link from an alert) the page scrolls to ``indicator`` when the run
    has it, else to the indicator of an alert raised at that step."""
    # The cursors are read before the data: a point or alert stored in between is then sent
    # twice (drawn once: the page skips steps it has) rather than never.
    cursor = runs.latest_cursor(ctx)
    alerts_after = datetime.now(UTC)
    run = runs.get_run(ctx, run_id)
    with ctx.db.read() as s:
        row, _ = run_rows.get(s, run_id)
        present = set(points.indicator_names(s, row.id))
        newest = points.newest(s, row.id)
    # catalogue order puts related indicators together; one that left the catalogue has no
    # metadata to draw it with and is skipped
    indicators = [ind.info() for name, ind in CATALOGUE.items() if name in present]
    thresholds = charts.run_thresholds(ctx, run)
    families = sorted({i.family for i in indicators}, key=views.family_order)
    focus = indicator if indicator in present else None
    if focus is None and step is not None:
        at_step = (e.indicator for e in alerts.run_alert_events(ctx, run_id) if e.step == step)
        focus = next((name for name in at_step if name in present), None)
    return render.render_run_page(
        run,
        indicators=indicators,
        latest=views.latest_values(newest, thresholds),
        health=charts.run_health(ctx, run_id, families),
        cursor=cursor,
        alerts_after=alerts_after,
        step=step,
        focus=focus,
        unheard=unheard(ctx, [f.project for f in alerts.firing_alerts(ctx, run.project)]),
        show_logout=_show_logout(ctx),
    )


def compare_page(
    ctx: ServiceContext,
    run_ids: Sequence[uuid.UUID],
    indicator: str | None = None,
    probe: str | None = None,
) -> str:
    """Runs to overlay (NotFound for an unknown one) on the indicators and probes they have,
    and recent runs that could be added, the first run's project first. Without a valid
    indicator and layer it opens where the runs differ most at their newest points."""
    chosen = [runs.get_run(ctx, r) for r in run_ids]
    with ctx.db.read() as s:
        index = points.probes_by_indicator(s, run_ids) if run_ids else {}
        options = {name: index[name] for name in CATALOGUE if name in index}
        narrowed = indicator if indicator in options else None
        if narrowed is None and probe:  # a layer alone: the first indicator that has it
            narrowed = next((name for name, probes in options.items() if probe in probes), None)
            indicator = narrowed
        if probe not in options.get(narrowed or "", ()):
            newest = [points.newest(s, str(r)) for r in run_ids]
            found = views.most_different(newest, list(CATALOGUE), narrowed)
            if found is not None:
                indicator, probe = found
    recent = [r for r in runs.list_runs(ctx, limit=100) if r.run_id not in set(run_ids)]
    if chosen:
        recent.sort(key=lambda r: r.project != chosen[0].project)  # stable: newest first within
    return render.render_compare_page(
        chosen,
        options=options,
        titles={name: CATALOGUE[name].title for name in options},
        others=recent,
        indicator=indicator,
        probe=probe,
        show_logout=_show_logout(ctx),
    )


def alerts_page(
    ctx: ServiceContext,
    filters: Mapping[str, str | None],
    limit: int = 200,
) -> str:
    """Firing states and events under ``filters`` (project, run_id, severity, state: valid
    values or None; NotFound for an unknown project or run); with a project, its rules and
    runs (for the rule editor's back-test)."""
    project, run_id = filters.get("project"), filters.get("run_id")
    state_value, severity_value = filters.get("state"), filters.get("severity")
    rid = uuid.UUID(run_id) if run_id else None
    state = EventStatus(state_value) if state_value else None
    severity = Severity(severity_value) if severity_value else None
    firing = alerts.firing_alerts(ctx, project)
    if rid is not None:
        firing = [f for f in firing if f.run_id == rid]
    if severity is not None:
        firing = [f for f in firing if f.severity == severity]
    events = alerts.list_alerts(ctx, project, rid, state, severity, limit)
    return render.render_alerts_page(
        projects=[p.name for p in projects.list_projects(ctx)],
        runs=runs.list_runs(ctx, project, limit=200) if project else [],
        firing=firing if state in (None, EventStatus.firing) else [],
        events=events,
        rules=rules.list_rules(ctx, project) if project else [],
        indicators=[ind.info() for ind in CATALOGUE.values()],
        filters=filters,
        silences=silences.list_silences(ctx, project) if project else [],
        notifications=project_notifications(ctx, project) if project else [],
        unheard=unheard(ctx, [f.project for f in alerts.firing_alerts(ctx, project)]),
        show_logout=_show_logout(ctx),
    )


def settings_page(ctx: ServiceContext, project: str) -> str:
    """An existing project's ingest tokens and webhooks (NotFound otherwise)."""
    return render.render_settings_page(
        project,
        tokens=ingest_tokens.list_tokens(ctx, project),
        webhooks=list_webhooks(ctx, project),
        server_url=ctx.settings.base_url,
        show_logout=_show_logout(ctx),
    )
