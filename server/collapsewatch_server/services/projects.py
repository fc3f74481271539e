"""Projects: created on first use with the default rule pack; listed."""

from __future__ import annotations

from sqlalchemy.orm import Session

from collapsewatch_server.alerts.default_rules import default_rules
from collapsewatch_server.repositories import projects, rules
from collapsewatch_server.services.context import ServiceContext
from collapsewatch_server.tables import Project, utcnow
from collapsewatch_web.api_schemas.runs import ProjectPublic


def project_for_writing(s: Session, name: str) -> Project:
    """The project of that name in the caller's transaction, created when new: a new project
    starts with the default rule pack (editable, and each rule can be disabled). Ingest,
    tokens and webhooks create projects; everything else answers NotFound for an unknown one."""
    project = projects.find(s, name)
    if project is None:
        project = projects.add(s, name)
        rules.add_defaults(s, project.id, default_rules(), utcnow())
    return project


def list_projects(ctx: ServiceContext) -> list[ProjectPublic]:
    """Every project by name, with its run count."""
    with ctx.db.read() as s:
        return projects.with_run_counts(s)
