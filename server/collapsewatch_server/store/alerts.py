"""Alert evaluation in the ingest transaction, alert events and states, stalled runs (nodata).

Nothing is cached in the process: rules and states are read from the database in the
transaction that stores the points, so any number of server processes can share it.
"""

from __future__ import annotations

import math
import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Any

from sqlalchemy import ScalarSelect, func, select, update
from sqlalchemy.orm import Session

from collapsewatch.schemas import RunStatus
from collapsewatch_server.alerts.engine import RuleSpec, SeriesState, Transition, evaluate
from collapsewatch_server.models import (
    AlertEvent,
    AlertStateRow,
    Probe,
    Project,
    Rule,
    Run,
    utcnow,
)
from collapsewatch_server.store.base import NewPoint, StoreBase
from collapsewatch_web.api_schemas.alerts import (
    AlertEventPublic,
    AlertState,
    AlertStatePublic,
    Condition,
    EventStatus,
    Reference,
    Severity,
)

NODATA_MESSAGE = "run {run} sent nothing for {seconds} s"

#: The state fields persisted in ``alert_states`` (all of :class:`SeriesState`).
_STATE_FIELDS = SeriesState.__slots__


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


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _spec(rule: Rule) -> RuleSpec:
    return RuleSpec(
        name=rule.name,
        indicator=rule.indicator,
        condition=Condition(rule.condition),
        threshold=rule.threshold,
        low=rule.low,
        high=rule.high,
        percent=rule.percent,
        reference=Reference(rule.reference),
        baseline_points=rule.baseline_points,
        pending_points=rule.pending_points,
        pending_steps=rule.pending_steps,
        recovery=rule.recovery,
        warmup_steps=rule.warmup_steps,
        severity=Severity(rule.severity),
        repeat_interval_s=rule.repeat_interval_s,
    )


def _state(row: AlertStateRow) -> SeriesState:
    fields: dict[str, Any] = {f: getattr(row, f) for f in _STATE_FIELDS}
    fields["state"] = AlertState(row.state)
    return SeriesState(**fields)


def _store_state(row: AlertStateRow, state: SeriesState, now: datetime) -> None:
    for f in _STATE_FIELDS:
        setattr(row, f, getattr(state, f))
    row.state = state.state.value
    row.last_value = _finite(state.last_value)  # NaN is not portable across backends
    row.updated_at = now


class AlertStore(StoreBase):
    """Evaluates rules on new points; lists events and states; raises nodata for stalled runs."""

    # ---------------------------------------------------------------------- evaluation

    def _on_points(
        self, s: Session, project: Project, run: Run, points: Sequence[NewPoint]
    ) -> None:
        """Run the project's enabled rules over ``points`` (in step order), in the ingest
        transaction: states are updated, events and their deliveries written with the points.
        """
        super()._on_points(s, project, run, points)
        if not points:
            return
        rules = [
            r
            for r in s.scalars(
                select(Rule)
                .where(
                    Rule.project_id == project.id,
                    Rule.enabled.is_(True),
                    Rule.indicator.in_(sorted({p.indicator for p in points})),
                )
                .order_by(Rule.id)
            )
            if r.run_glob is None or fnmatchcase(run.name, r.run_glob)
        ]
        if not rules:
            return
        by_indicator: dict[str, list[tuple[Rule, RuleSpec]]] = defaultdict(list)
        for r in rules:
            by_indicator[r.indicator].append((r, _spec(r)))
        # One query for every state of this run under these rules. FOR UPDATE (Postgres):
        # a concurrent batch of the same run waits and then judges the committed states.
        rows = {
            (row.rule_id, row.probe_id): row
            for row in s.scalars(
                select(AlertStateRow)
                .where(
                    AlertStateRow.run_id == run.id,
                    AlertStateRow.rule_id.in_([r.id for r in rules]),
                )
                .with_for_update()
            )
        }
        states = {key: _state(row) for key, row in rows.items()}
        matches: dict[tuple[int, str], bool] = {}
        changed: set[tuple[int, int]] = set()
        events: list[AlertEvent] = []
        now = utcnow()
        for point in points:
            for rule, spec in by_indicator.get(point.indicator, ()):
                seen = matches.get((rule.id, point.probe))
                if seen is None:
                    seen = matches[(rule.id, point.probe)] = fnmatchcase(
                        point.probe, rule.probe_glob
                    )
                if not seen:
                    continue
                key = (rule.id, point.probe_id)
                old = states.get(key) or SeriesState()
                new, transitions = evaluate(spec, old, point.step, point.value, now, point.probe)
                if new is not old:
                    states[key] = new
                    changed.add(key)
                events += (self._event(project, run, rule, point, t, now) for t in transitions)
        for key in changed:
            row = rows.get(key)
            if row is None:
                row = AlertStateRow(rule_id=key[0], run_id=run.id, probe_id=key[1])
                s.add(row)
            _store_state(row, states[key], now)
        if events:
            s.add_all(events)
            s.flush()  # no ORM relationships: events exist before their deliveries
            for event in events:
                self._enqueue_deliveries(s, event)

    @staticmethod
    def _event(
        project: Project, run: Run, rule: Rule, point: NewPoint, t: Transition, now: datetime
    ) -> AlertEvent:
        return AlertEvent(
            id=str(uuid.uuid4()),
            project_id=project.id,
            run_id=run.id,
            rule_id=rule.id,
            rule_name=rule.name,
            probe=point.probe,
            indicator=rule.indicator,
            status=t.status.value,
            severity=t.severity.value,
            value=_finite(t.value),
            threshold=_finite(t.threshold),
            step=t.step,
            reminder=t.reminder,
            message=t.message[:2000],
            created_at=now,
        )

    # --------------------------------------------------------------------------- nodata

    def scan_stalled(self, now: datetime | None = None) -> int:
        """Raise one ``nodata`` event for each running run silent longer than ``stalled_after``
        and not yet told about; returns how many were raised.

        Each run is claimed with a conditional UPDATE (``stalled_notified_at`` still NULL) in
        its own transaction: of several server processes scanning at once, exactly one wins.
        New data clears the claim, so a run that stalls again raises a new event.
        """
        now = now or utcnow()
        cutoff = now - self.stalled_after
        silent = (
            Run.status == RunStatus.running.value,
            Run.last_seen_at < cutoff,
            Run.stalled_notified_at.is_(None),
        )
        with self._sessions() as s:
            candidates = s.scalars(select(Run.id).where(*silent)).all()
        raised = 0
        for run_id in candidates:
            with self._sessions.begin() as s:
                claimed = s.execute(
                    update(Run)
                    .where(Run.id == run_id, *silent)
                    .values(stalled_notified_at=now)
                    .execution_options(synchronize_session=False)
                )
                if claimed.rowcount != 1:
                    continue  # another process claimed it, or the run spoke meanwhile
                run = s.get_one(Run, run_id)
                seconds = int((now - run.last_seen_at).total_seconds())
                event = AlertEvent(
                    id=str(uuid.uuid4()),
                    project_id=run.project_id,
                    run_id=run.id,
                    status=EventStatus.nodata.value,
                    severity=Severity.warning.value,
                    step=run.last_step,
                    message=NODATA_MESSAGE.format(run=run.name, seconds=seconds),
                    created_at=now,
                )
                s.add(event)
                s.flush()
                self._enqueue_deliveries(s, event)
                raised += 1
        return raised

    # ---------------------------------------------------------------------------- reads

    def list_alerts(
        self,
        project: str | None = None,
        run_id: uuid.UUID | None = None,
        state: EventStatus | None = None,
        severity: Severity | None = None,
        limit: int = 100,
    ) -> list[AlertEventPublic]:
        """Alert events, newest first; ``state`` filters on the event's status."""
        with self._sessions() as s:
            query = (
                select(AlertEvent, Project.name, Run.name)
                .join(Project, Project.id == AlertEvent.project_id)
                .join(Run, Run.id == AlertEvent.run_id)
            )
            if project is not None:
                query = query.where(AlertEvent.project_id == self._existing_project(s, project).id)
            if run_id is not None:
                query = query.where(AlertEvent.run_id == self._get_run(s, run_id)[0].id)
            if state is not None:
                query = query.where(AlertEvent.status == EventStatus(state).value)
            if severity is not None:
                query = query.where(AlertEvent.severity == Severity(severity).value)
            # events of one batch share a time: the step orders a firing before its resolve
            order = (AlertEvent.created_at.desc(), AlertEvent.step.desc(), AlertEvent.id)
            rows = s.execute(query.order_by(*order).limit(limit)).all()
        return [self._event_public(e, proj, run_name) for e, proj, run_name in rows]

    def list_alert_states(self, run_id: uuid.UUID) -> list[AlertStatePublic]:
        """Where every (rule, probe) of a run stands, by rule then probe in model order."""
        with self._sessions() as s:
            run, _ = self._get_run(s, run_id)
            rows = s.execute(
                select(AlertStateRow, Rule.name, Rule.severity, Probe.name)
                .join(Rule, Rule.id == AlertStateRow.rule_id)
                .join(Probe, Probe.id == AlertStateRow.probe_id)
                .where(AlertStateRow.run_id == run.id)
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

    def open_alert_counts(self, run_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
        """Open (firing) alerts of enabled rules per run; runs without any are absent."""
        with self._sessions() as s:
            rows = s.execute(
                select(AlertStateRow.run_id, func.count(AlertStateRow.id))
                .join(Rule, Rule.id == AlertStateRow.rule_id)
                .where(
                    AlertStateRow.run_id.in_([str(r) for r in run_ids]),
                    AlertStateRow.state == AlertState.firing.value,
                    Rule.enabled.is_(True),
                )
                .group_by(AlertStateRow.run_id)
            ).all()
        return {uuid.UUID(run_id): n for run_id, n in rows}
