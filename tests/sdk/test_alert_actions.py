"""What the framework callbacks do with alerts: which ask to stop or to save a checkpoint."""

from __future__ import annotations

from collapsewatch.integrations.common import AlertActions
from collapsewatch.schemas import RunAlert


def alert(severity: str, rule: str = "dead units") -> RunAlert:
    return RunAlert(rule_id=1, rule=rule, indicator="dead_fraction", probe="fc1", severity=severity)


def test_without_stop_on_or_checkpoint_on_the_callbacks_never_look() -> None:
    seen: list[RunAlert] = []
    actions = AlertActions(None, None, seen.append)
    assert not actions.acting
    actions(alert("critical"))
    assert seen == [alert("critical")], "on_alert still hears every alert"
    assert actions.take_stop() is None and actions.take_checkpoint() is None


def test_an_alert_at_or_above_the_severity_asks_once_until_taken() -> None:
    actions = AlertActions("critical", lambda a: a.rule == "save me")
    assert actions.acting
    assert AlertActions(None, "warning").acting
    actions(alert("warning"))
    assert actions.take_stop() is None, "below critical"
    actions(alert("critical"))
    actions(alert("critical", rule="save me"))
    assert actions.take_stop() == alert("critical"), "the first that asked"
    assert actions.take_stop() is None, "taken"
    assert actions.take_checkpoint() == alert("critical", rule="save me")
