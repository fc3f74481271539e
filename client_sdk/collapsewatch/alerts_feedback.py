"""Acting on an alert: the alerts firing on the run, learnt from the server's ingest answers.

The sender already talks to the server; every accepted batch's answer lists the alerts firing
on the run (``IngestResult.firing``), so no thread polls. The sender thread only stores the
list (:meth:`AlertFeedback.update`); the training thread, when a step ends, calls the user's
``on_alert`` once for each alert that started firing since (:meth:`AlertFeedback.deliver`), so
a callback that stops the run or saves a checkpoint does it between two steps, never in the
middle of one. ``monitor.firing()`` returns the current list. Nothing here raises into the
training loop: a failing callback is logged once.

What a user asks to act on (``stop_on=``, ``checkpoint_on=`` in the integrations) is a
:data:`When`: a severity (that one and above), or a function of the alert.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from collapsewatch.schemas import RunAlert

logger = logging.getLogger("collapsewatch")

#: Severities from mild to grave; a severity given to ``stop_on=`` also matches graver ones.
SEVERITIES = ("info", "warning", "critical")

#: When to act on an alert: ``"critical"`` (or ``"warning"``, ``"info"``: that severity and
#: above), a function ``alert -> bool``, or None (never).
When = str | Callable[[RunAlert], bool] | None

OnAlert = Callable[[RunAlert], Any]


def matcher(when: When) -> Callable[[RunAlert], bool]:
    """A test of alerts from a :data:`When`; raises ``ValueError`` for an unknown severity
    (at construction, before training starts)."""
    if when is None:
        return lambda alert: False
    if callable(when):
        return when
    if when not in SEVERITIES:
        raise ValueError(
            f"collapsewatch: expected a severity {SEVERITIES} or a function, got {when!r}"
        )
    floor = SEVERITIES.index(when)
    return lambda alert: alert.severity in SEVERITIES and SEVERITIES.index(alert.severity) >= floor


def _key(alert: RunAlert) -> tuple[int, str, str]:
    """One firing episode: a rule on a probe since a moment (it fires anew after resolving)."""
    return (alert.rule_id, alert.probe, alert.since.isoformat() if alert.since else "")


class AlertFeedback:
    """The run's firing alerts, and ``on_alert`` callbacks for those that are new."""

    def __init__(self, on_alert: OnAlert | Callable[[RunAlert], None] | None = None) -> None:
        self._callbacks: list[OnAlert] = [on_alert] if on_alert is not None else []
        self._lock = threading.Lock()
        self._firing: list[RunAlert] = []
        self._seen: set[tuple[int, str, str]] = set()
        self._fresh: list[RunAlert] = []
        self._failed = False

    def subscribe(self, callback: OnAlert) -> None:
        """Also call ``callback`` for each new alert (the integrations' stop and checkpoint)."""
        self._callbacks.append(callback)

    def update(self, listed: tuple[dict[str, Any], ...]) -> None:
        """Sender thread: the alerts an answer listed replace the current ones."""
        alerts = []
        for item in listed:
            try:
                alerts.append(RunAlert.model_validate(item))
            except ValidationError:
                continue  # a newer server's shape: skip what cannot be read
        with self._lock:
            self._firing = alerts
            for alert in alerts:
                key = _key(alert)
                if key not in self._seen:
                    self._seen.add(key)
                    self._fresh.append(alert)

    def firing(self) -> list[RunAlert]:
        """The alerts firing on the run, as the server's last answer said."""
        with self._lock:
            return list(self._firing)

    def deliver(self) -> None:
        """Training thread, between steps: each callback hears each new alert once."""
        if not self._fresh:  # read without the lock: a late alert waits for the next step
            return
        with self._lock:
            fresh, self._fresh = self._fresh, []
        for alert in fresh:
            for callback in self._callbacks:
                try:
                    callback(alert)
                except Exception:
                    if not self._failed:
                        self._failed = True
                        logger.warning(
                            "collapsewatch: an on_alert callback failed (logged once)",
                            exc_info=True,
                        )
