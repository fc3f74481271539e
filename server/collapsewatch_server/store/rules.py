"""Alert rules of a project: CRUD, enable/disable, and the default pack of a new project."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from collapsewatch_server import errors
from collapsewatch_server.alerts.rules import default_rules
from collapsewatch_server.models import AlertStateRow, Project, Rule, utcnow
from collapsewatch_server.store.base import StoreBase
from collapsewatch_web.api_schemas.alerts import RuleCreate, RulePublic, RuleUpdate

#: Schema field -> column, where the names differ.
_COLUMN = {"probe": "probe_glob", "run": "run_glob"}
#: Fields that choose which series a rule watches: changing one starts its states afresh.
_SELECTION = ("indicator", "probe", "run")
_INVALID_UPDATE = "the updated rule is not valid"


def _columns(rule: RuleCreate) -> dict[str, Any]:
    return {_COLUMN.get(k, k): v for k, v in rule.model_dump(mode="json").items()}


def _fields(row: Rule) -> dict[str, Any]:
    """The stored rule as schema fields (what a ``RuleCreate`` of it would hold)."""
    return {name: getattr(row, _COLUMN.get(name, name)) for name in RuleCreate.model_fields}


def _public(row: Rule, project: str) -> RulePublic:
    return RulePublic.model_validate(
        {
            **_fields(row),
            "id": row.id,
            "project": project,
            "is_default": row.is_default,
            "created_at": row.created_at,
            "updated_at": row.updated_at,
        }
    )


class RuleStore(StoreBase):
    """Rules per project. The indicator is checked against the catalogue by the caller
    (:func:`collapsewatch_server.alerts.rules.check_indicator`); the shape by the schemas."""

    def _on_new_project(self, s: Session, project: Project) -> None:
        """Every new project starts with the default rule pack (editable, can be disabled)."""
        super()._on_new_project(s, project)
        now = utcnow()
        s.add_all(
            Rule(project_id=project.id, is_default=True, created_at=now, updated_at=now, **cols)
            for cols in map(_columns, default_rules())
        )

    def _rule(self, s: Session, project: str, rule_id: int) -> tuple[Rule, Project]:
        proj = self._existing_project(s, project)
        row = s.scalar(select(Rule).where(Rule.id == rule_id, Rule.project_id == proj.id))
        if row is None:
            raise errors.NotFound(errors.RULE_NOT_FOUND.format(rule_id=rule_id, project=project))
        return row, proj

    @staticmethod
    def _name_free(s: Session, proj: Project, name: str, rule_id: int | None = None) -> None:
        query = select(Rule.id).where(Rule.project_id == proj.id, Rule.name == name)
        if rule_id is not None:
            query = query.where(Rule.id != rule_id)
        if s.scalar(query) is not None:
            raise errors.Conflict(errors.RULE_NAME_TAKEN.format(project=proj.name, name=name))

    def create_rule(self, project: str, rule: RuleCreate) -> RulePublic:
        """A new rule in an existing project (NotFound otherwise; Conflict on a taken name)."""
        try:
            with self._sessions.begin() as s:
                proj = self._existing_project(s, project)
                self._name_free(s, proj, rule.name)
                now = utcnow()
                row = Rule(project_id=proj.id, created_at=now, updated_at=now, **_columns(rule))
                s.add(row)
                s.flush()
                return _public(row, proj.name)
        except IntegrityError as exc:  # a concurrent create took the name first
            raise errors.Conflict(
                errors.RULE_NAME_TAKEN.format(project=project, name=rule.name)
            ) from exc

    def list_rules(self, project: str) -> list[RulePublic]:
        """The rules of a project, in creation order."""
        with self._sessions() as s:
            proj = self._existing_project(s, project)
            rows = s.scalars(select(Rule).where(Rule.project_id == proj.id).order_by(Rule.id))
            return [_public(r, proj.name) for r in rows]

    def get_rule(self, project: str, rule_id: int) -> RulePublic:
        with self._sessions() as s:
            row, proj = self._rule(s, project, rule_id)
            return _public(row, proj.name)

    def update_rule(self, project: str, rule_id: int, update: RuleUpdate) -> RulePublic:
        """Merge the given fields into the stored rule and validate the whole again (Invalid,
        nothing stored, when the result does not hold together). A change of what the rule
        watches (indicator, probe or run glob) clears its states: they were about other series.
        """
        given = update.model_dump(mode="json", exclude_unset=True)
        with self._sessions.begin() as s:
            row, proj = self._rule(s, project, rule_id)
            current = _fields(row)
            try:
                merged = RuleCreate.model_validate({**current, **given})
            except ValidationError as exc:
                problems = exc.errors(include_url=False, include_input=False, include_context=False)
                for p in problems:
                    p["loc"] = ["body", *p["loc"]]
                raise errors.Invalid(_INVALID_UPDATE, problems=problems) from exc
            if merged.name != row.name:
                self._name_free(s, proj, merged.name, rule_id)
            columns = _columns(merged)
            for name, value in columns.items():
                setattr(row, name, value)
            row.updated_at = utcnow()
            if any(current[f] != getattr(merged, f) for f in _SELECTION):
                s.execute(delete(AlertStateRow).where(AlertStateRow.rule_id == row.id))
            s.flush()
            return _public(row, proj.name)

    def set_rule_enabled(self, project: str, rule_id: int, enabled: bool) -> RulePublic:
        """Enable or disable a rule. A disabled rule is not evaluated and its firing states do
        not count as open alerts; enabled again, it continues from where its states stood."""
        with self._sessions.begin() as s:
            row, proj = self._rule(s, project, rule_id)
            if row.enabled != enabled:
                row.enabled = enabled
                row.updated_at = utcnow()
            return _public(row, proj.name)

    def delete_rule(self, project: str, rule_id: int) -> None:
        """Delete a rule and its states; its past events stay (with the rule's name)."""
        with self._sessions.begin() as s:
            row, _ = self._rule(s, project, rule_id)
            # explicit, not only ON DELETE CASCADE: a SQLite connection may lack foreign_keys=ON
            s.execute(delete(AlertStateRow).where(AlertStateRow.rule_id == row.id))
            s.delete(row)
