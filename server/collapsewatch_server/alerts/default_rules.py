"""Rules and the indicator catalogue: the default rule pack and the indicator check.

The schemas validate a rule's shape; whether its indicator exists is the catalogue's business,
checked here so the schemas (in ``collapsewatch_web``) never depend on the server's catalogue.
"""

from __future__ import annotations

from collections.abc import Iterable

from collapsewatch_server import errors
from collapsewatch_server.indicators import CATALOGUE, Indicator
from collapsewatch_web.api_schemas.alerts import Condition, Reference, RuleCreate, Severity

#: Default rules are named after their indicator, so a user can find and edit them.
DEFAULT_RULE_NAME = "default: {indicator}"
DEFAULT_RELATIVE_RULE_NAME = "default: {indicator} {condition} from {reference}"


def check_indicator(name: str, loc: tuple[str, ...] = ("body", "indicator")) -> None:
    """Refuse an indicator the catalogue does not know, as a 422 on ``loc``."""
    if name not in CATALOGUE:
        raise errors.Invalid(errors.UNKNOWN_INDICATOR.format(indicator=name), loc=loc)


def default_rule(ind: Indicator) -> RuleCreate | None:
    """The default rule of one catalogue indicator, or None when it has no threshold.

    One rule per indicator, not a warning and a critical rule: a collapse is one alert. The
    critical value wins when there is one (with severity critical), else the warning value;
    the indicator's ``rule_severity`` overrides the severity (neural collapse only informs) and
    its ``rule_recovery`` gives the rule a hysteresis; ``rule_enabled=False`` ships it disabled.
    Info-direction indicators (norms, loss) have no absolute meaning and get no rule.
    """
    if ind.direction == "info":
        return None
    if ind.critical is not None:
        threshold, severity = ind.critical, Severity.critical
    elif ind.warn is not None:
        threshold, severity = ind.warn, Severity.warning
    else:
        return None
    if ind.rule_severity is not None:
        severity = Severity(ind.rule_severity)
    condition = Condition.below if ind.direction == "low_is_bad" else Condition.above
    return RuleCreate(
        name=DEFAULT_RULE_NAME.format(indicator=ind.name),
        description=f"{ind.title}: {ind.meaning}"[:2000],
        indicator=ind.name,
        condition=condition,
        threshold=threshold,
        severity=severity,
        pending_points=ind.pending_points,
        warmup_steps=ind.warmup_steps,
        recovery=ind.rule_recovery,
        enabled=ind.rule_enabled,
    )


def default_relative_rule(ind: Indicator) -> RuleCreate | None:
    """The rule of an indicator's default relative to the run's own history, or None.

    Shipped disabled unless the default says otherwise (``RelativeDefault.enabled``): healthy
    training also moves most of these indicators far from their starting point (a random
    initialisation has a high effective rank that learning lowers), so on by default they would
    cry wolf on every run; they are in the pack so enabling them is one click. Validation
    perplexity and the diversity of a trained model's samples do not move so when all is well:
    their relative rules ship enabled, against the mean of the run's first points.
    """
    rel = ind.relative
    if rel is None:
        return None
    # the "peak" of a rise is the lowest point so far: say so in the rule's name
    reference = "trough" if rel.reference == "peak" and rel.condition == "rise" else rel.reference
    return RuleCreate(
        name=DEFAULT_RELATIVE_RULE_NAME.format(
            indicator=ind.name, condition=rel.condition, reference=reference
        ),
        description=f"{ind.title}: a {rel.condition} of more than {rel.percent:g}% from the "
        f"run's own {reference}. {ind.meaning}"[:2000],
        indicator=ind.name,
        condition=Condition(rel.condition),
        percent=rel.percent,
        reference=Reference(rel.reference),
        baseline_points=rel.baseline_points,
        severity=Severity.warning,
        pending_points=ind.pending_points,
        warmup_steps=ind.warmup_steps,
        enabled=rel.enabled,
    )


def default_rules(catalogue: Iterable[Indicator] | None = None) -> list[RuleCreate]:
    """The default rule pack every new project gets, in catalogue order: per indicator its
    absolute rule and its relative rule, where it has them (see the two functions above for
    which ship enabled)."""
    inds = CATALOGUE.values() if catalogue is None else catalogue
    return [
        rule
        for ind in inds
        for rule in (default_rule(ind), default_relative_rule(ind))
        if rule is not None
    ]
