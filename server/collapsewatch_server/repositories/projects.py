"""Projects: found by name, added, listed with their run counts."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from collapsewatch_server import errors
from collapsewatch_server.repositories.sql import inserted
from collapsewatch_server.tables import Project, Run
from collapsewatch_web.api_schemas.runs import ProjectPublic


def find(s: Session, name: str) -> Project | None:
    """The project of that name, or None."""
    return s.scalar(select(Project).where(Project.name == name))


def get(s: Session, name: str) -> Project:
    """The project of that name (NotFound otherwise)."""
    project = find(s, name)
    if project is None:
        raise errors.NotFound(errors.PROJECT_NOT_FOUND.format(project=name))
    return project


def add(s: Session, name: str) -> Project:
    """A new project of that name, flushed (it has its id)."""
    project = Project(name=name)
    return inserted(s, project)


def with_run_counts(s: Session) -> list[ProjectPublic]:
    """Every project by name, with how many runs it has."""
    rows = s.execute(
        select(Project.name, Project.created_at, func.count(Run.id))
        .outerjoin(Run, Run.project_id == Project.id)
        .group_by(Project.id)
        .order_by(Project.name)
    ).all()
    return [ProjectPublic(name=n, created_at=c, runs=k) for n, c, k in rows]
