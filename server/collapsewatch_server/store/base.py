"""What every part of the store shares: sessions, dialect helpers, project and run lookups."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, NamedTuple

from sqlalchemy import Engine, event, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

from collapsewatch_server import errors
from collapsewatch_server.models import AlertEvent, Project, Run
from collapsewatch_web.api_schemas.alerts import AlertEventPublic, EventStatus, Severity

#: Session flag: this transaction wrote deliveries to the outbox.
ENQUEUED = "collapsewatch_deliveries_enqueued"


class NewPoint(NamedTuple):
    """An indicator point just stored, as alert rules see it (value NaN when not finite)."""

    probe_id: int
    probe: str
    indicator: str
    step: int
    value: float


class StoreBase:
    """Sessions and lookups; each public store method opens and owns one transaction."""

    def __init__(
        self, engine: Engine, *, stalled_after_s: float = 300.0, base_url: str = ""
    ) -> None:
        self.engine = engine
        self.stalled_after = timedelta(seconds=stalled_after_s)
        #: Where the dashboard lives, for links in alert events and webhooks.
        self.base_url = base_url.rstrip("/")
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self.dialect = engine.dialect.name
        self._insert: Any = pg_insert if self.dialect == "postgresql" else sqlite_insert
        #: Called after a commit that put deliveries in the outbox: wakes this process's
        #: deliverer at once instead of at its next poll (other processes poll).
        self.on_enqueued: Callable[[], None] | None = None
        event.listen(self._sessions, "after_commit", self._after_commit)
        event.listen(self._sessions, "after_rollback", self._after_rollback)

    def _after_commit(self, session: Session) -> None:
        if session.info.pop(ENQUEUED, False) and self.on_enqueued is not None:
            self.on_enqueued()

    @staticmethod
    def _after_rollback(session: Session) -> None:
        session.info.pop(ENQUEUED, False)

    def ping(self) -> bool:
        """True when the database answers."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    def _project(self, s: Session, name: str) -> Project:
        """The project of that name, created (with its default rules) when new."""
        project = s.scalar(select(Project).where(Project.name == name))
        if project is None:
            project = Project(name=name)
            s.add(project)
            s.flush()
            self._on_new_project(s, project)
        return project

    def _existing_project(self, s: Session, name: str) -> Project:
        project = s.scalar(select(Project).where(Project.name == name))
        if project is None:
            raise errors.NotFound(errors.PROJECT_NOT_FOUND.format(project=name))
        return project

    def _on_new_project(self, s: Session, project: Project) -> None:
        """Hook: a project was just created in this transaction (the rule store fills it)."""

    def _on_points(
        self, s: Session, project: Project, run: Run, points: Sequence[NewPoint]
    ) -> None:
        """Hook: ``points`` (in step order) were stored in this transaction (alert rules)."""

    def _run_url(self, run_id: uuid.UUID | str, step: int | None) -> str:
        """The dashboard page of a run, at ``step`` when given (links in alerts and webhooks)."""
        return f"{self.base_url}/runs/{run_id}" + (f"?step={step}" if step is not None else "")

    def _event_public(self, ev: AlertEvent, project: str, run_name: str) -> AlertEventPublic:
        """An alert event row as the API and the webhook payloads show it."""
        return AlertEventPublic(
            id=uuid.UUID(ev.id),
            project=project,
            run_id=uuid.UUID(ev.run_id),
            run_name=run_name,
            rule_id=ev.rule_id,
            rule_name=ev.rule_name,
            status=EventStatus(ev.status),
            severity=Severity(ev.severity),
            indicator=ev.indicator,
            probe=ev.probe,
            value=ev.value,
            threshold=ev.threshold,
            step=ev.step,
            reminder=ev.reminder,
            message=ev.message,
            created_at=ev.created_at,
            url=self._run_url(ev.run_id, ev.step),
        )

    def _get_run(self, s: Session, run_id: uuid.UUID) -> tuple[Run, str]:
        row = s.execute(
            select(Run, Project.name)
            .join(Project, Project.id == Run.project_id)
            .where(Run.id == str(run_id))
        ).first()
        if row is None:
            raise errors.NotFound(errors.RUN_NOT_FOUND.format(run_id=run_id))
        return row[0], row[1]
