"""Ingest tokens of a project over HTTP: create (the secret is in that answer only), list,
revoke. Creating a token for a project that does not exist yet creates it, as the CLI does;
listing or revoking in an unknown project is a 404."""

from __future__ import annotations

from fastapi import APIRouter

from collapsewatch_server.api.deps import ContextDep, ReadAuth, RowId
from collapsewatch_server.api.webhooks import NewProject
from collapsewatch_server.services import ingest_tokens
from collapsewatch_web.api_schemas.ingest_tokens import TokenCreate, TokenCreated, TokenPublic

router = APIRouter(
    prefix="/api/v1/projects/{project}/tokens", tags=["tokens"], dependencies=[ReadAuth]
)

_ERRORS: dict[int | str, dict[str, str]] = {404: {"description": "unknown project or token"}}


@router.get("", response_model=list[TokenPublic], responses=_ERRORS)
def list_tokens(project: str, ctx: ContextDep) -> list[TokenPublic]:
    """The project's tokens, oldest first, revoked ones included; never their secrets."""
    return ingest_tokens.list_tokens(ctx, project)


@router.post("", status_code=201, response_model=TokenCreated, responses=_ERRORS)
def create_token(project: NewProject, body: TokenCreate, ctx: ContextDep) -> TokenCreated:
    """A new ingest token; the answer carries its secret, which is never shown again."""
    return ingest_tokens.create_token(ctx, project, body.name)


@router.delete("/{token_id}", response_model=TokenPublic, responses=_ERRORS)
def revoke_token(project: str, token_id: RowId, ctx: ContextDep) -> TokenPublic:
    """Revoke a token: ingest with it is refused from now on; it stays listed as revoked."""
    return ingest_tokens.revoke_token(ctx, project, token_id)
