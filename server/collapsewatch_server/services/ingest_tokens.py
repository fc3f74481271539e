"""Ingest tokens: created with a secret shown once, stored as a hash, revocable; and the
check that an ingest request's token may write into its batch's project."""

from __future__ import annotations

from collapsewatch_server import auth, errors
from collapsewatch_server.repositories import ingest_tokens, projects
from collapsewatch_server.services.context import ServiceContext
from collapsewatch_server.services.projects import project_for_writing
from collapsewatch_server.tables import utcnow
from collapsewatch_web.api_schemas.ingest_tokens import TokenCreated, TokenPublic


def create_token(ctx: ServiceContext, project: str, name: str = "") -> TokenCreated:
    """A new ingest token for ``project`` (created if needed); the secret is returned once."""
    secret = auth.new_token()
    with ctx.db.write() as s:
        proj = project_for_writing(s, project)
        row = ingest_tokens.add(
            s, proj.id, name, auth.display_prefix(secret), auth.hash_token(secret)
        )
        return TokenCreated(**ingest_tokens.public(row, proj.name).model_dump(), token=secret)


def list_tokens(ctx: ServiceContext, project: str) -> list[TokenPublic]:
    """The project's tokens, oldest first (NotFound for an unknown project)."""
    with ctx.db.read() as s:
        proj = projects.get(s, project)
        return [ingest_tokens.public(t, proj.name) for t in ingest_tokens.of_project(s, proj.id)]


def revoke_token(ctx: ServiceContext, project: str, token_id: int) -> TokenPublic:
    """Revoke a token (ingest with it is refused from now on); revoking twice is harmless."""
    with ctx.db.write() as s:
        row = ingest_tokens.get(s, project, token_id)
        if row.revoked_at is None:
            row.revoked_at = utcnow()
        return ingest_tokens.public(row, project)


def check_ingest(
    ctx: ServiceContext, token: str | None, project: str, *, admin: bool = True
) -> None:
    """Ingest needs the admin token or an unrevoked ingest token of the batch's project
    (Unauthorized, or Forbidden for another project's token). ``admin=False``: the admin
    token is not tried (its guesses are throttled), ingest tokens still are."""
    if admin and auth.is_admin(ctx.settings, token):
        return
    if token is None:
        raise errors.Unauthorized(errors.AUTH_MISSING)
    with ctx.db.read() as s:
        owner = ingest_tokens.project_of_hash(s, auth.hash_token(token))
    if owner is None:
        raise errors.Unauthorized(errors.AUTH_INVALID)
    if owner != project:
        raise errors.Forbidden(errors.AUTH_WRONG_PROJECT.format(project=owner))
