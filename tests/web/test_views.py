"""What the pages show, as data: thresholds in force, judgements, worst layers, family health,
highlighted layers and the model summary."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from collapsewatch.schemas import ProbeKind
from collapsewatch_web import figures, views
from collapsewatch_web.api_schemas.alerts import RuleCreate, RulePublic
from collapsewatch_web.api_schemas.catalogue import IndicatorInfo
from collapsewatch_web.api_schemas.charts import LatestValue, Threshold
from collapsewatch_web.api_schemas.runs import PointEvent, ProbePublic

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def info(direction: str = "high_is_bad", **kw: Any) -> IndicatorInfo:
    return IndicatorInfo(
        name="dead_fraction",
        title="Dead units",
        family="dead_units",
        applies_to=ProbeKind.activation,
        direction=direction,  # type: ignore[arg-type]
        meaning="m",
        what_to_try="w",
        **kw,
    )


def rule(**kw: Any) -> RulePublic:
    base: dict[str, Any] = {
        "id": 1,
        "project": "p",
        "name": "r",
        "indicator": "dead_fraction",
        "condition": "above",
        "threshold": 0.5,
        "severity": "critical",
        "created_at": T0,
        "updated_at": T0,
    }
    return RulePublic.model_validate({**base, **kw})


def levels(thresholds: list[Threshold]) -> list[tuple[float, str, str]]:
    return [(t.value, t.side, t.severity.value) for t in thresholds]


def test_enabled_rules_give_the_lines_else_the_catalogue() -> None:
    ind = info(warn=0.2, critical=0.5)
    assert levels(views.thresholds_for(ind, [rule(threshold=0.3)])) == [(0.3, "above", "critical")]
    catalogue = views.thresholds_for(ind, [rule(indicator="loss")])
    assert levels(catalogue) == [(0.2, "above", "warning"), (0.5, "above", "critical")]
    assert {t.source for t in catalogue} == {"catalogue"}
    # a rule that ships (or was set) disabled switches the indicator's judgement off: no
    # warnings on the page where no alert can fire
    assert views.thresholds_for(ind, [rule(enabled=False)]) == []
    both = [rule(enabled=False), rule(threshold=0.7)]
    assert levels(views.thresholds_for(ind, both)) == [(0.7, "above", "critical")]
    assert views.thresholds_for(info("info", warn=1.0), []) == [], "info indicators never alarm"


def test_rules_that_do_not_watch_this_run_or_these_probes_are_left_out() -> None:
    ind = info()
    other_run = rule(run="sweep-*")
    assert views.thresholds_for(ind, [other_run], run_name="baseline") == []
    assert len(views.thresholds_for(ind, [other_run], run_name="sweep-3")) == 1
    head_only = rule(probe="head.*")
    assert views.thresholds_for(ind, [head_only], probes=["fc1", "fc2"]) == []
    assert views.thresholds_for(ind, [rule(indicator="loss")]) == []


def test_a_band_gives_two_lines_a_relative_rule_none() -> None:
    band = rule(condition="outside", threshold=None, low=0.1, high=0.9, severity="warning")
    assert levels(views.thresholds_for(info(), [band])) == [
        (0.1, "below", "warning"),
        (0.9, "above", "warning"),
    ]
    drop = rule(condition="drop", threshold=None, percent=50)
    assert views.thresholds_for(info(), [drop]) == []


def test_an_unsaved_rule_draws_too() -> None:
    draft = RuleCreate(name="d", indicator="dead_fraction", condition="below", threshold=0.1)
    assert levels(views.thresholds_for(info("low_is_bad"), [draft])) == [(0.1, "below", "warning")]


def threshold(value: float, severity: str, side: str = "above", probe: str = "*") -> Threshold:
    return Threshold.model_validate(
        {
            "value": value,
            "side": side,
            "severity": severity,
            "label": "x",
            "probe": probe,
            "source": "rule",
        }
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.1, ("ok", None)),
        (0.2, ("ok", None)),  # at the threshold is not past it, as rules judge
        (0.3, ("warn", 0.2)),
        (0.6, ("critical", 0.5)),
        (None, ("critical", 0.5)),  # NaN is past every threshold
        (math.inf, ("critical", 0.5)),
    ],
)
def test_judge_takes_the_worst_threshold_passed(
    value: float | None, expected: tuple[str, float | None]
) -> None:
    levels_ = [threshold(0.2, "warning"), threshold(0.5, "critical")]
    judgement, level, _ = views.judge(value, levels_, "fc1")
    assert (judgement, level) == expected


def test_judge_margin_and_probe_globs() -> None:
    levels_ = [threshold(0.2, "info", side="below", probe="enc.*")]
    assert views.judge(0.1, levels_, "enc.3") == ("info", 0.2, pytest.approx(0.5))
    assert views.judge(0.1, levels_, "dec.3") == ("none", None, 0.0)


def latest(probe: str, value: float | None, indicator: str = "dead_fraction") -> PointEvent:
    return PointEvent(indicator=indicator, probe=probe, step=7, value=value)


def test_worst_layers_are_past_a_threshold_worst_first() -> None:
    values = views.latest_values(
        [latest("fc1", 0.1), latest("fc2", 0.9), latest("fc3", 0.3), latest("fc4", 0.6)],
        {"dead_fraction": [threshold(0.2, "warning"), threshold(0.5, "critical")]},
    )
    worst = views.worst_layers(values)
    assert [v.probe for v in worst] == ["fc2", "fc4", "fc3"], "critical by margin, then warn"
    assert [v.judgement for v in worst] == ["critical", "critical", "warn"]
    assert views.worst_layers(values, limit=1)[0].probe == "fc2"


def test_highlighted_are_the_worst_then_the_most_extreme() -> None:
    values = [
        LatestValue(indicator="x", probe=f"l{i}", value=v, step=1)
        for i, v in enumerate([0.1, 0.9, None, 0.5, 0.2])
    ]
    assert views.highlighted(values, "high_is_bad", 3) == ["l2", "l1", "l3"], "NaN first"
    assert views.highlighted(values, "low_is_bad", 2) == ["l2", "l0"]


@dataclass
class Count:
    indicator: str
    state: str
    severity: str
    count: int


def test_family_health_is_the_worst_state_per_family() -> None:
    family_of = {"dead_fraction": "dead_units", "effective_rank": "dimensional", "loss": "training"}
    health = views.family_health(
        [
            Count("dead_fraction", "firing", "warning", 2),
            Count("dead_fraction", "firing", "critical", 1),
            Count("effective_rank", "pending", "critical", 3),
            Count("effective_rank", "resolved", "critical", 1),
            Count("gone_from_catalogue", "firing", "critical", 1),
        ],
        family_of,
        families=["training"],
    )
    assert [(h.family, h.state, h.firing, h.pending) for h in health] == [
        ("dead_units", "critical", 3, 0),
        ("dimensional", "pending", 0, 3),
        ("training", "ok", 0, 0),
    ]
    assert health[0].title == "Dead units"


def test_family_titles_and_order_know_new_families_too() -> None:
    assert views.family_title("vq_codebook") == "Vq codebook"
    known = sorted(["training", "dead_units", "zzz", "complete"], key=views.family_order)
    assert known == ["dead_units", "complete", "training", "zzz"]


def test_model_summary() -> None:
    probes = [
        ProbePublic(name=f"l{i}", kind=ProbeKind.activation, module=m, order=i, params=p)
        for i, (m, p) in enumerate([("Linear", 1_000_000), ("Conv2d", 250_000), ("Linear", 0)])
    ]
    summary = views.model_summary(probes)
    assert summary.probes == 3
    assert summary.params_text == "1.25M"
    assert summary.modules == [("Linear", 2), ("Conv2d", 1)]
    assert views.human_count(999) == "999"
    assert views.human_count(12_300) == "12.3k"


def test_catalogue_thresholds_and_figure_lines_agree() -> None:
    ind = info(warn=0.2, critical=0.5)
    assert levels(figures.catalogue_thresholds(ind)) == levels(views.thresholds_for(ind, []))


def test_a_comparison_opens_where_the_runs_differ_most() -> None:
    def at(indicator: str, probe: str, value: float | None) -> PointEvent:
        return PointEvent(indicator=indicator, probe=probe, step=10, value=value)

    collapsed = [at("dead_fraction", "fc1", 0.0), at("dead_fraction", "fc2", 0.7),
                 at("loss", "loss", 0.5), at("grad_norm", "w", 120.0)]  # fmt: skip
    control = [at("dead_fraction", "fc1", 0.0), at("dead_fraction", "fc2", 0.01),
               at("loss", "loss", 0.4), at("grad_norm", "w", 100.0)]  # fmt: skip
    order = ["dead_fraction", "loss", "grad_norm"]
    assert views.most_different([collapsed, control], order) == ("dead_fraction", "fc2")
    assert views.most_different([collapsed, control], order, "loss") == ("loss", "loss")
    # one run alone, or NaN on one side, compares nothing
    assert views.most_different([collapsed], order) is None
    assert (
        views.most_different([[at("loss", "loss", None)], [at("loss", "loss", 1.0)]], order) is None
    )
    # a tie goes to the catalogue's order
    tie = [[at("loss", "loss", 0.0), at("dead_fraction", "fc3", 0.0)],
           [at("loss", "loss", 1.0), at("dead_fraction", "fc3", 2.0)]]  # fmt: skip
    assert views.most_different(tie, order) == ("dead_fraction", "fc3")
