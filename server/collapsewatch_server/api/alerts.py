"""Alert rules of a project, alert events and the alert states of a run."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response

from collapsewatch_server.api.deps import ContextDep, ReadAuth, RowId
from collapsewatch_server.services import alerts, rules
from collapsewatch_web.api_schemas.alerts import (
    AlertEventPublic,
    AlertStatePublic,
    EventStatus,
    RuleCreate,
    RulePublic,
    RuleUpdate,
    Severity,
)

router = APIRouter(prefix="/api/v1", tags=["alerts"], dependencies=[ReadAuth])

_ERRORS: dict[int | str, dict[str, str]] = {
    404: {"description": "unknown project or rule"},
    409: {"description": "a rule of that name exists"},
    422: {"description": "invalid rule, saying which field"},
}


@router.get("/projects/{project}/rules", response_model=list[RulePublic], responses=_ERRORS)
def list_rules(project: str, ctx: ContextDep) -> list[RulePublic]:
    return rules.list_rules(ctx, project)


@router.post(
    "/projects/{project}/rules", status_code=201, response_model=RulePublic, responses=_ERRORS
)
def create_rule(project: str, rule: RuleCreate, ctx: ContextDep) -> RulePublic:
    return rules.create_rule(ctx, project, rule)


@router.get("/projects/{project}/rules/{rule_id}", response_model=RulePublic, responses=_ERRORS)
def get_rule(project: str, rule_id: RowId, ctx: ContextDep) -> RulePublic:
    return rules.get_rule(ctx, project, rule_id)


@router.put("/projects/{project}/rules/{rule_id}", response_model=RulePublic, responses=_ERRORS)
def update_rule(project: str, rule_id: RowId, update: RuleUpdate, ctx: ContextDep) -> RulePublic:
    """Given fields replace the stored ones; the merged rule is validated as a whole."""
    return rules.update_rule(ctx, project, rule_id, update)


@router.delete("/projects/{project}/rules/{rule_id}", status_code=204, responses=_ERRORS)
def delete_rule(project: str, rule_id: RowId, ctx: ContextDep) -> Response:
    rules.delete_rule(ctx, project, rule_id)
    return Response(status_code=204)


@router.post(
    "/projects/{project}/rules/{rule_id}/enable", response_model=RulePublic, responses=_ERRORS
)
def enable_rule(project: str, rule_id: RowId, ctx: ContextDep) -> RulePublic:
    return rules.set_rule_enabled(ctx, project, rule_id, True)


@router.post(
    "/projects/{project}/rules/{rule_id}/disable", response_model=RulePublic, responses=_ERRORS
)
def disable_rule(project: str, rule_id: RowId, ctx: ContextDep) -> RulePublic:
    return rules.set_rule_enabled(ctx, project, rule_id, False)


@router.get("/alerts", response_model=list[AlertEventPublic], responses={404: {}})
def list_alerts(
    ctx: ContextDep,
    project: str | None = None,
    run_id: uuid.UUID | None = None,
    state: Annotated[
        EventStatus | None, Query(description="event status: firing, resolved or nodata")
    ] = None,
    severity: Severity | None = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 100,
) -> list[AlertEventPublic]:
    """Alert events, newest first."""
    return alerts.list_alerts(ctx, project, run_id, state, severity, limit)


@router.get("/runs/{run_id}/alerts", response_model=list[AlertStatePublic], responses={404: {}})
def list_alert_states(run_id: uuid.UUID, ctx: ContextDep) -> list[AlertStatePublic]:
    """Where each (rule, probe) of the run stands: normal, pending, firing or resolved."""
    return alerts.list_alert_states(ctx, run_id)
