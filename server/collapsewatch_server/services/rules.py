"""Alert rules of a project: create, read, update (validated whole), enable or disable, and
delete. The indicator of a rule must be in the catalogue; its shape is the schema's business."""

from __future__ import annotations

from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from collapsewatch_server import errors
from collapsewatch_server.alerts.default_rules import check_indicator
from collapsewatch_server.repositories import alert_states, projects, rules
from collapsewatch_server.services.context import ServiceContext
from collapsewatch_server.tables import utcnow
from collapsewatch_web.api_schemas.alerts import RuleCreate, RulePublic, RuleUpdate

#: Fields that choose which series a rule watches: changing one starts its states afresh.
_SELECTION = ("indicator", "probe", "run")
_INVALID_UPDATE = "the updated rule is not valid"


def create_rule(ctx: ServiceContext, project: str, rule: RuleCreate) -> RulePublic:
    """A new rule in an existing project (NotFound otherwise; Conflict on a taken name;
    Invalid for an indicator the catalogue does not know)."""
    check_indicator(rule.indicator)
    try:
        with ctx.db.write() as s:
            proj = projects.get(s, project)
            rules.check_name_free(s, proj, rule.name)
            return rules.public(rules.add(s, proj.id, rule, utcnow()), proj.name)
    except IntegrityError as exc:  # a concurrent create took the name first
        raise errors.Conflict(
            errors.RULE_NAME_TAKEN.format(project=project, name=rule.name)
        ) from exc


def list_rules(ctx: ServiceContext, project: str) -> list[RulePublic]:
    """The rules of a project, in creation order (NotFound for an unknown project)."""
    with ctx.db.read() as s:
        return rules_in(s, project)


def rules_in(s: Session, project: str) -> list[RulePublic]:
    """:func:`list_rules` inside the caller's transaction, for services that read a project's
    rules together with other rows (the thresholds drawn on charts)."""
    proj = projects.get(s, project)
    return [rules.public(r, proj.name) for r in rules.of_project(s, proj.id)]


def get_rule(ctx: ServiceContext, project: str, rule_id: int) -> RulePublic:
    with ctx.db.read() as s:
        proj = projects.get(s, project)
        return rules.public(rules.get(s, proj, rule_id), proj.name)


def update_rule(ctx: ServiceContext, project: str, rule_id: int, update: RuleUpdate) -> RulePublic:
    """Merge the given fields into the stored rule and validate the whole again (Invalid,
    nothing stored, when the result does not hold together). A change of what the rule
    watches (indicator, probe or run glob) clears its states: they were about other series.
    """
    if update.indicator is not None:
        check_indicator(update.indicator)
    given = update.model_dump(mode="json", exclude_unset=True)
    with ctx.db.write() as s:
        proj = projects.get(s, project)
        row = rules.get(s, proj, rule_id)
        current = rules.fields(row)
        try:
            merged = RuleCreate.model_validate({**current, **given})
        except ValidationError as exc:
            problems = [
                {**p, "loc": ["body", *p["loc"]]}
                for p in exc.errors(include_url=False, include_input=False, include_context=False)
            ]
            raise errors.Invalid(_INVALID_UPDATE, problems=problems) from exc
        if merged.name != row.name:
            rules.check_name_free(s, proj, merged.name, rule_id)
        for name, value in rules.columns(merged).items():
            setattr(row, name, value)
        row.updated_at = utcnow()
        if any(current[f] != getattr(merged, f) for f in _SELECTION):
            alert_states.clear_for_rule(s, row.id)
        s.flush()
        return rules.public(row, proj.name)


def set_rule_enabled(ctx: ServiceContext, project: str, rule_id: int, enabled: bool) -> RulePublic:
    """Enable or disable a rule. A disabled rule is not evaluated and its firing states do
    not count as open alerts; enabled again, it continues from where its states stood."""
    with ctx.db.write() as s:
        proj = projects.get(s, project)
        row = rules.get(s, proj, rule_id)
        if row.enabled != enabled:
            row.enabled = enabled
            row.updated_at = utcnow()
        return rules.public(row, proj.name)


def delete_rule(ctx: ServiceContext, project: str, rule_id: int) -> None:
    """Delete a rule and its states; its past events stay (with the rule's name)."""
    with ctx.db.write() as s:
        rules.delete_with_states(s, rules.get(s, projects.get(s, project), rule_id))
