"""Alert states: where each (rule, run, probe) stands, as the alert engine's
:class:`~collapsewatch_server.alerts.engine.SeriesState`; read for the pages' health."""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ScalarSelect, delete, func, select
from sqlalchemy.orm import Session

from collapsewatch_server.alerts.engine import SeriesState
from collapsewatch_server.alerts.evaluation import StateKey
from collapsewatch_server.tables import AlertStateRow, Probe, Project, Rule, Run
from collapsewatch_web.api_schemas.alerts import AlertState, AlertStatePublic, Severity
from collapsewatch_web.api_schemas.health import FiringAlert

#: The state fields persisted in ``alert_states`` (all of :class:`SeriesState`).
_STATE_FIELDS = SeriesState.__slots__


@dataclass(frozen=True)
class StateCount:
    """How many (rule, probe) states of a run's indicator are in one state at one severity."""

    run_id: uuid.UUID
    indicator: str
    state: AlertState
    severity: str
    count: int


def open_alerts_count() -> ScalarSelect[int]:
    """Firing states of enabled rules of the enclosing query's run (a correlated subquery):
    ``select(Run, open_alerts_count())`` lists runs with their open alerts in one query."""
    return (
        select(func.count(AlertStateRow.id))
        .join(Rule, Rule.id == AlertStateRow.rule_id)
        .where(
            AlertStateRow.run_id == Run.id,
            AlertStateRow.state == AlertState.firing.value,
            Rule.enabled.is_(True),
        )
        .correlate(Run)
        .scalar_subquery()
    )


# ------------------------------------------------------------------------------- evaluation


def lock(s: Session, run_id: str, rule_ids: Sequence[int]) -> dict[StateKey, AlertStateRow]:
    """The run's states under these rules, in one query. FOR UPDATE (Postgres): a concurrent
    batch of the same run waits, then judges the committed states."""
    rows = s.scalars(
        select(AlertStateRow)
        .where(AlertStateRow.run_id == run_id, AlertStateRow.rule_id.in_(rule_ids))
        .with_for_update()
    )
    return {(row.rule_id, row.probe_id): row for row in rows}


def state_of(row: AlertStateRow) -> SeriesState:
    """A stored state as the engine sees it."""
    fields: dict[str, Any] = {f: getattr(row, f) for f in _STATE_FIELDS}
    fields["state"] = AlertState(row.state)
    return SeriesState(**fields)


def save(
    s: Session,
    run_id: str,
    rows: Mapping[StateKey, AlertStateRow],
    states: Mapping[StateKey, SeriesState],
    now: datetime,
) -> None:
    """Write ``states`` into their ``rows`` (locked by :func:`lock`), adding rows for states
    the run did not have."""
    for key, state in states.items():
        row = rows.get(key)
        if row is None:
            row = AlertStateRow(rule_id=key[0], run_id=run_id, probe_id=key[1])
            s.add(row)
        for f in _STATE_FIELDS:
            setattr(row, f, getattr(state, f))
        row.state = state.state.value
        last = state.last_value  # NaN is not portable across backends
        row.last_value = last if last is not None and math.isfinite(last) else None
        row.updated_at = now


def clear_for_rule(s: Session, rule_id: int) -> None:
    """Forget every state of a rule (it now watches other series)."""
    s.execute(delete(AlertStateRow).where(AlertStateRow.rule_id == rule_id))


# ------------------------------------------------------------------------------------ reads


def of_run(s: Session, run_id: str) -> list[AlertStatePublic]:
    """Where every (rule, probe) of a run stands, by rule then probe in model order."""
    rows = s.execute(
        select(AlertStateRow, Rule.name, Rule.severity, Probe.name)
        .join(Rule, Rule.id == AlertStateRow.rule_id)
        .join(Probe, Probe.id == AlertStateRow.probe_id)
        .where(AlertStateRow.run_id == run_id)
        .order_by(Rule.id, Probe.order, Probe.id)
    ).all()
    return [
        AlertStatePublic(
            rule_id=st.rule_id,
            rule_name=rule_name,
            run_id=uuid.UUID(st.run_id),
            probe=probe,
            state=AlertState(st.state),
            severity=Severity(severity),
            last_step=st.last_step,
            last_value=st.last_value,
            since=st.since,
        )
        for st, rule_name, severity, probe in rows
    ]


def counts(s: Session, run_ids: Sequence[uuid.UUID]) -> list[StateCount]:
    """States of enabled rules on these runs that are not normal, counted per (run,
    indicator, state, severity): the health of a whole runs page in one query."""
    if not run_ids:
        return []
    rows = s.execute(
        select(
            AlertStateRow.run_id,
            Rule.indicator,
            AlertStateRow.state,
            Rule.severity,
            func.count(AlertStateRow.id),
        )
        .join(Rule, Rule.id == AlertStateRow.rule_id)
        .where(
            AlertStateRow.run_id.in_([str(r) for r in run_ids]),
            AlertStateRow.state != AlertState.normal.value,
            Rule.enabled.is_(True),
        )
        .group_by(AlertStateRow.run_id, Rule.indicator, AlertStateRow.state, Rule.severity)
    ).all()
    return [StateCount(uuid.UUID(r), ind, AlertState(st), sev, n) for r, ind, st, sev, n in rows]


def any_firing(s: Session, run_id: str) -> bool:
    """Whether some (rule, probe) of the run fires, under any rule (a cheap read before
    :func:`firing`: most runs fire nothing most of the time)."""
    query = select(AlertStateRow.id).where(
        AlertStateRow.run_id == run_id, AlertStateRow.state == AlertState.firing.value
    )
    return s.execute(query.limit(1)).first() is not None


def firing(
    s: Session, project_id: int | None = None, limit: int = 200, run_id: str | None = None
) -> list[FiringAlert]:
    """Every (rule, run, probe) firing now under an enabled rule, newest first; of one project
    or one run when given."""
    query = (
        select(AlertStateRow, Rule, Run.name, Project.name, Probe.name)
        .join(Rule, Rule.id == AlertStateRow.rule_id)
        .join(Run, Run.id == AlertStateRow.run_id)
        .join(Project, Project.id == Run.project_id)
        .join(Probe, Probe.id == AlertStateRow.probe_id)
        .where(AlertStateRow.state == AlertState.firing.value, Rule.enabled.is_(True))
    )
    if project_id is not None:
        query = query.where(Project.id == project_id)
    if run_id is not None:
        query = query.where(AlertStateRow.run_id == run_id)
    rows = s.execute(query.order_by(AlertStateRow.since.desc()).limit(limit)).all()
    return [
        FiringAlert(
            project=proj,
            run_id=uuid.UUID(st.run_id),
            run_name=run_name,
            rule_id=rule.id,
            rule_name=rule.name,
            indicator=rule.indicator,
            probe=probe,
            severity=Severity(rule.severity),
            since=st.since,
            last_step=st.last_step,
            last_value=st.last_value,
        )
        for st, rule, run_name, proj, probe in rows
    ]
