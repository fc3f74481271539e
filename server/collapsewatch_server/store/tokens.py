"""Ingest tokens: created with a secret shown once, stored as a hash, revocable."""

from __future__ import annotations

from sqlalchemy import select

from collapsewatch_server import auth, errors
from collapsewatch_server.models import IngestToken, Project, utcnow
from collapsewatch_server.store.base import StoreBase
from collapsewatch_web.api_schemas.ingest_tokens import TokenCreated, TokenPublic


class TokenStore(StoreBase):
    def create_token(self, project: str, name: str = "") -> TokenCreated:
        """A new ingest token for ``project`` (created if needed); the secret is returned once."""
        secret = auth.new_token()
        with self._sessions.begin() as s:
            proj = self._project(s, project)
            row = IngestToken(
                project_id=proj.id,
                name=name,
                prefix=auth.display_prefix(secret),
                token_hash=auth.hash_token(secret),
            )
            s.add(row)
            s.flush()
            return TokenCreated(**self._token_public(row, proj.name).model_dump(), token=secret)

    @staticmethod
    def _token_public(row: IngestToken, project: str) -> TokenPublic:
        return TokenPublic(
            id=row.id,
            project=project,
            name=row.name,
            prefix=row.prefix,
            created_at=row.created_at,
            revoked_at=row.revoked_at,
        )

    def list_tokens(self, project: str) -> list[TokenPublic]:
        """The project's tokens, oldest first (NotFound for an unknown project)."""
        with self._sessions() as s:
            proj = self._existing_project(s, project)
            rows = s.scalars(
                select(IngestToken)
                .where(IngestToken.project_id == proj.id)
                .order_by(IngestToken.id)
            ).all()
        return [self._token_public(t, proj.name) for t in rows]

    def revoke_token(self, project: str, token_id: int) -> TokenPublic:
        with self._sessions.begin() as s:
            row = s.execute(
                select(IngestToken, Project.name)
                .join(Project, Project.id == IngestToken.project_id)
                .where(Project.name == project, IngestToken.id == token_id)
            ).first()
            if row is None:
                raise errors.NotFound(
                    errors.TOKEN_NOT_FOUND.format(token_id=token_id, project=project)
                )
            token, proj = row
            if token.revoked_at is None:
                token.revoked_at = utcnow()
            return self._token_public(token, proj)

    def token_project(self, secret: str) -> str | None:
        """The project an unrevoked ingest token belongs to, or None."""
        with self._sessions() as s:
            return s.scalar(
                select(Project.name)
                .join(IngestToken, IngestToken.project_id == Project.id)
                .where(
                    IngestToken.token_hash == auth.hash_token(secret),
                    IngestToken.revoked_at.is_(None),
                )
            )
