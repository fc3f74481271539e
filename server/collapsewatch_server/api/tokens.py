"""Ingest tokens of a project over HTTP: create (the secret is in that answer only), list,
revoke. Creating a token for a project that does not exist yet creates it, as the CLI does;
listing or revoking in an unknown project is a 404."""

from __future__ import annotations

from fastapi import APIRouter

from collapsewatch_server.api.deps import ReadAuth, StoreDep
from collapsewatch_server.api.webhooks import NewProject
from collapsewatch_web.api_schemas.ingest_tokens import TokenCreate, TokenCreated, TokenPublic

router = APIRouter(
    prefix="/api/v1/projects/{project}/tokens", tags=["tokens"], dependencies=[ReadAuth]
)

_ERRORS: dict[int | str, dict[str, str]] = {404: {"description": "unknown project or token"}}


@router.get("", response_model=list[TokenPublic], responses=_ERRORS)
def list_tokens(project: str, store: StoreDep) -> list[TokenPublic]:
    """The project's tokens, oldest first, revoked ones included; never their secrets."""
    return store.list_tokens(project)


@router.post("", status_code=201, response_model=TokenCreated, responses=_ERRORS)
def create_token(project: NewProject, body: TokenCreate, store: StoreDep) -> TokenCreated:
    """A new ingest token; the answer carries its secret, which is never shown again."""
    return store.create_token(project, body.name)


@router.delete("/{token_id}", response_model=TokenPublic, responses=_ERRORS)
def revoke_token(project: str, token_id: int, store: StoreDep) -> TokenPublic:
    """Revoke a token: ingest with it is refused from now on; it stays listed as revoked."""
    return store.revoke_token(project, token_id)
