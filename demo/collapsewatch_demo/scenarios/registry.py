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
    """Trains one run through ``collapsewatch.watch`` and returns a summary with ``run_id``;
    what makes it the collapse or the control comes in the scenario's keyword arguments."""

    def __call__(
        self,
        *,
        run: str,
        project: str,
        server: str | None,
        token: str | None,
        log: Log,
        **recipe: Any,
    ) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Scenario:
    """A collapse recipe and its control.

    ``indicator`` on ``probe`` is where the collapse shows: the collapse run crosses the
    indicator's default threshold there (its relative default, for an indicator whose default
    is relative to the run's own first points), the control stays on the healthy side.
    """

    name: str
    family: str
    summary: str
    train: Trainer
    indicator: str
    probe: str
    runs: tuple[str, str]  # names of the collapse run and of the control run
    collapse: dict[str, Any]  # keyword arguments of ``train`` for the collapse run
    control: dict[str, Any]  # ... and for the healthy control
    fast: bool = False  # part of the README test command; the rest run with `make validate`
    #: Other probes whose default alert fires too because the collapse reaches them (the
    #: layers downstream of a collapsed embedding); any other firing probe is a false alarm.
    also_fires: tuple[str, ...] = ()
    #: Other (indicator, probe) pairs judged like ``indicator`` on ``probe``: the collapse
    #: crosses their defaults and fires their alerts, the control does neither.
    also_indicators: tuple[tuple[str, str], ...] = ()


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
    """Train the collapse run, then the control, against ``server``, on one torch thread.

    The models are tiny: more intra-op threads gain nothing, and on a busy machine threads
    waiting for each other made runs 5-20x slower (a VAE run: 460 s instead of 19 s).
    """
    import torch

    scenario = SCENARIOS[name]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return [
            scenario.train(run=run, project=project, server=server, token=token, log=log, **recipe)
            for recipe, run in zip(
                (scenario.collapse, scenario.control), scenario.runs, strict=True
            )
        ]
    finally:
        torch.set_num_threads(threads)
