"""Silences of a project: events matching every set matcher while a silence is in force are
recorded, marked with it and not delivered; deleting a silence (or its end) lifts it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from collapsewatch_server.api.deps import ContextDep, ReadAuth, RowId
from collapsewatch_server.services import silences
from collapsewatch_web.api_schemas.silences import SilenceCreate, SilencePublic

router = APIRouter(
    prefix="/api/v1/projects/{project}/silences", tags=["silences"], dependencies=[ReadAuth]
)

_ERRORS: dict[int | str, dict[str, str]] = {
    404: {"description": "unknown project or silence"},
    422: {"description": "invalid field, or an end before the start, saying which field"},
}


@router.get("", response_model=list[SilencePublic], responses=_ERRORS)
def list_silences(
    project: str, ctx: ContextDep, active: Annotated[bool, Query()] = False
) -> list[SilencePublic]:
    """The project's silences, newest first; ``active=true``: only those in force now."""
    return silences.list_silences(ctx, project, active)


@router.post("", status_code=201, response_model=SilencePublic, responses=_ERRORS)
def create_silence(project: str, silence: SilenceCreate, ctx: ContextDep) -> SilencePublic:
    """A new silence: unset matchers match everything; ``ends_at`` or ``duration_s``."""
    return silences.create_silence(ctx, project, silence)


@router.delete("/{silence_id}", status_code=204, responses=_ERRORS)
def delete_silence(project: str, silence_id: RowId, ctx: ContextDep) -> Response:
    """Delete a silence: matching events are delivered again from now on."""
    silences.delete_silence(ctx, project, silence_id)
    return Response(status_code=204)
