"""Alert rules of a project: rows written from rule schemas and read back as them."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from collapsewatch_server import errors
from collapsewatch_server.alerts.engine import RuleSpec, spec_from
from collapsewatch_server.repositories.sql import inserted, owned_row
from collapsewatch_server.tables import AlertStateRow, Project, Rule
from collapsewatch_web.api_schemas.alerts import RuleCreate, RulePublic

#: Schema field -> column, where the names differ.
_COLUMN = {"probe": "probe_glob", "run": "run_glob"}


def columns(rule: RuleCreate) -> dict[str, Any]:
    """A rule schema as column values."""
    return {_COLUMN.get(k, k): v for k, v in rule.model_dump(mode="json").items()}


def fields(row: Rule) -> dict[str, Any]:
    """The stored rule as schema fields (what a ``RuleCreate`` of it would hold)."""
    return {name: getattr(row, _COLUMN.get(name, name)) for name in RuleCreate.model_fields}


def public(row: Rule, project: str) -> RulePublic:
    """A rule row as the API shows it."""
    return RulePublic.model_validate(
        {
            **fields(row),
            "id": row.id,
            "project": project,
            "is_default": row.is_default,
            "created_at": row.created_at,
            "updated_at": row.updated_at,
        }
    )


def spec_of(row: Rule) -> RuleSpec:
    """What the alert engine needs of a stored rule."""
    return spec_from(fields(row))


def add(
    s: Session, project_id: int, rule: RuleCreate, now: datetime, *, is_default: bool = False
) -> Rule:
    """A new rule row, flushed (it has its id)."""
    row = Rule(
        project_id=project_id,
        is_default=is_default,
        created_at=now,
        updated_at=now,
        **columns(rule),
    )
    return inserted(s, row)


def add_defaults(s: Session, project_id: int, rules: Iterable[RuleCreate], now: datetime) -> None:
    """The default rule pack of a new project (rows marked ``is_default``)."""
    s.add_all(
        Rule(project_id=project_id, is_default=True, created_at=now, updated_at=now, **columns(r))
        for r in rules
    )


def get(s: Session, project: Project, rule_id: int) -> Rule:
    """A rule of the project (NotFound otherwise)."""
    missing = errors.RULE_NOT_FOUND.format(rule_id=rule_id, project=project.name)
    return owned_row(s, Rule, project, rule_id, missing)


def check_name_free(s: Session, project: Project, name: str, rule_id: int | None = None) -> None:
    """Conflict when another rule of the project (not ``rule_id``) has that name."""
    query = select(Rule.id).where(Rule.project_id == project.id, Rule.name == name)
    if rule_id is not None:
        query = query.where(Rule.id != rule_id)
    if s.scalar(query) is not None:
        raise errors.Conflict(errors.RULE_NAME_TAKEN.format(project=project.name, name=name))


def of_project(s: Session, project_id: int) -> list[Rule]:
    """The rules of a project, in creation order."""
    return list(s.scalars(select(Rule).where(Rule.project_id == project_id).order_by(Rule.id)))


def enabled_for(s: Session, project_id: int, indicators: Iterable[str]) -> list[Rule]:
    """The project's enabled rules of these indicators, in creation order."""
    return list(
        s.scalars(
            select(Rule)
            .where(
                Rule.project_id == project_id,
                Rule.enabled.is_(True),
                Rule.indicator.in_(sorted(set(indicators))),
            )
            .order_by(Rule.id)
        )
    )


def delete_with_states(s: Session, row: Rule) -> None:
    """Delete a rule and its states; its past events stay (they carry the rule's name)."""
    # explicit, not only ON DELETE CASCADE: a SQLite connection may lack foreign_keys=ON
    s.execute(delete(AlertStateRow).where(AlertStateRow.rule_id == row.id))
    s.delete(row)
