"""Scenarios: a collapse recipe and its healthy control, trained through the two SDK lines.

Each family of INDICATORS.md contributes one scenario. ``collapsewatch demo --scenario NAME``
trains both runs against a server; the tests check that the collapse run crosses the default
threshold of the scenario's indicator (and fires the default alert) while the control does not.
This module is light; the scenario modules import torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

Log = Callable[[str], object]


class Trainer(Protocol):
    """Trains one run through ``collapsewatch.watch`` and returns a summary with ``run_id``."""

    def __call__(
        self,
        *,
        collapse: bool,
        run: str,
        project: str,
        server: str | None,
        token: str | None,
        log: Log,
    ) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Scenario:
    """A collapse recipe and its control.

    ``indicator`` on ``probe`` is where the collapse shows: the collapse run crosses the
    indicator's default threshold there, the control stays on the healthy side.
    """

    name: str
    family: str
    summary: str
    train: Trainer
    indicator: str
    probe: str
    runs: tuple[str, str]  # names of the collapse run and of the control run
    fast: bool = False  # part of the README test command; the rest run with `make validate`
    #: Other probes whose default alert fires too because the collapse reaches them (the
    #: layers downstream of a collapsed embedding); any other firing probe is a false alarm.
    also_fires: tuple[str, ...] = ()


SCENARIOS: dict[str, Scenario] = {}


def register(scenario: Scenario) -> Scenario:
    if scenario.name in SCENARIOS:
        raise ValueError(f"scenario {scenario.name!r} registered twice")
    SCENARIOS[scenario.name] = scenario
    return scenario


def run_scenario(
    name: str,
    server: str,
    *,
    project: str = "demo",
    token: str | None = None,
    log: Log = print,
) -> list[dict[str, Any]]:
    """Train the collapse run, then the control, against ``server``."""
    scenario = SCENARIOS[name]
    return [
        scenario.train(
            collapse=collapse,
            run=run,
            project=project,
            server=server,
            token=token,
            log=log,
        )
        for collapse, run in zip((True, False), scenario.runs, strict=True)
    ]
