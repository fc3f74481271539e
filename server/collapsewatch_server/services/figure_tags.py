"""A tag of what an indicator's figures are drawn from, for HTTP revalidation (``ETag``).

A run page reloaded, or opened again, asks for the same figures; when nothing they are drawn
from has changed, the answer is ``304 Not Modified`` and the browser draws the body it has.
The tag is read in a few small queries, against the figures' rollups and figure building.

What goes in: the server's version (the figures' code), the run (its name and config: resumes
are drawn), the indicator's series counters (a stored point changes a count), the indicator's
alert events (markers) and the project's rules (thresholds), and the figures' size. The tag
is read before the figures, so a body is never older than the tag it is sent with.
"""

from __future__ import annotations

import hashlib
import json
import uuid

from sqlalchemy import func, select

from collapsewatch._version import __version__
from collapsewatch_server.repositories import runs
from collapsewatch_server.services.context import ServiceContext
from collapsewatch_server.services.rules import rules_in
from collapsewatch_server.tables import AlertEvent, Series


def figures_tag(
    ctx: ServiceContext, run_id: uuid.UUID, indicator: str, max_points: int | None
) -> str:
    """The ETag (quoted) of ``indicator_figures(run_id, indicator, max_points)`` as it would
    be drawn now (NotFound for an unknown run)."""
    with ctx.db.read() as s:
        run, project = runs.get(s, run_id)
        series = s.execute(
            select(
                func.count(),
                func.coalesce(func.sum(Series.points), 0),
                func.max(Series.last_step),
                func.max(Series.id),
            ).where(Series.run_id == run.id, Series.indicator == indicator)
        ).one()
        events = s.execute(
            select(func.count(), func.max(AlertEvent.created_at)).where(
                AlertEvent.run_id == run.id, AlertEvent.indicator == indicator
            )
        ).one()
        rules = [r.model_dump(mode="json") for r in rules_in(s, project)]
    parts = [__version__, run.id, run.name, run.config, list(series), list(events), rules]
    text = json.dumps([*parts, max_points], sort_keys=True, default=str)
    return '"' + hashlib.sha256(text.encode()).hexdigest()[:32] + '"'
