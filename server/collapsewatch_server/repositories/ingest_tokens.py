"""Ingest tokens of a project, stored as the hash of their secret."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from collapsewatch_server import errors
from collapsewatch_server.repositories.sql import inserted
from collapsewatch_server.tables import IngestToken, Project
from collapsewatch_web.api_schemas.ingest_tokens import TokenPublic


def public(row: IngestToken, project: str) -> TokenPublic:
    """A token row as lists show it: never the secret, only its first characters."""
    return TokenPublic(
        id=row.id,
        project=project,
        name=row.name,
        prefix=row.prefix,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


def add(s: Session, project_id: int, name: str, prefix: str, token_hash: str) -> IngestToken:
    """A new token row, flushed (it has its id)."""
    row = IngestToken(project_id=project_id, name=name, prefix=prefix, token_hash=token_hash)
    return inserted(s, row)


def of_project(s: Session, project_id: int) -> list[IngestToken]:
    """The project's tokens, oldest first, revoked ones included."""
    return list(
        s.scalars(
            select(IngestToken).where(IngestToken.project_id == project_id).order_by(IngestToken.id)
        )
    )


def get(s: Session, project: str, token_id: int) -> IngestToken:
    """A token of the project of that name (NotFound otherwise)."""
    row = s.scalar(
        select(IngestToken)
        .join(Project, Project.id == IngestToken.project_id)
        .where(Project.name == project, IngestToken.id == token_id)
    )
    if row is None:
        raise errors.NotFound(errors.TOKEN_NOT_FOUND.format(token_id=token_id, project=project))
    return row


def project_of_hash(s: Session, token_hash: str) -> str | None:
    """The project of the unrevoked token with that hash, or None."""
    return s.scalar(
        select(Project.name)
        .join(IngestToken, IngestToken.project_id == Project.id)
        .where(IngestToken.token_hash == token_hash, IngestToken.revoked_at.is_(None))
    )
