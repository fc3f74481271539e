"""Scenarios: a collapse recipe and its healthy control, trained through the two SDK lines.

Each family of the indicator catalogue (docs/indicators.md) contributes one scenario.
``collapsewatch demo --scenario NAME`` trains both runs against a server; the tests check that
the collapse run crosses the default threshold of the scenario's indicator (and fires the
default alert) while the control does not. A scenario's recipes are
:class:`collapsewatch_demo.harness.Recipe` instances, trained by the harness's
:func:`~collapsewatch_demo.harness.run_watched`. This module is light; the scenario modules
import torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from collapsewatch_demo.by_name import ByName

if TYPE_CHECKING:
    from collapsewatch_demo.harness import Recipe, Trained

Log = Callable[[str], object]


@dataclass(frozen=True)
class Scenario:
    """A collapse recipe and its control: two instances of one recipe class that differ only
    in the collapse mechanism.

    ``indicator`` on ``probe`` is where the collapse shows: the collapse run crosses the
    indicator's default threshold there (its relative default, for an indicator whose default
    is relative to the run's own first points), the control stays on the healthy side.
    """

    name: str
    summary: str
    collapse: Recipe
    control: Recipe
    indicator: str
    probe: str
    runs: tuple[str, str]  # names of the collapse run and of the control run
    #: The SDK's sampling interval for the demo runs; None is its adaptive default, which
    #: samples little of a run of a few hundred sub-millisecond steps.
    every: int | None = None
    fast: bool = False  # part of the README test command; the rest run with `make validate`
    #: Other probes whose default alert fires too because the collapse reaches them (the
    #: layers downstream of a collapsed embedding); any other firing probe is a false alarm.
    also_fires: tuple[str, ...] = ()
    #: Other (indicator, probe) pairs judged like ``indicator`` on ``probe``: the collapse
    #: crosses their defaults and fires their alerts, the control does neither.
    also_indicators: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if type(self.collapse) is not type(self.control) or self.collapse == self.control:
            raise ValueError(
                f"scenario {self.name!r}: collapse and control must be two "
                "different instances of one recipe"
            )

    @property
    def family(self) -> str:
        return self.collapse.family


SCENARIOS: ByName[Scenario] = ByName("scenario")
#: Each scenario module registers its scenario at import.
register = SCENARIOS.register


def run_scenario(
    name: str,
    server: str,
    *,
    project: str = "demo",
    token: str | None = None,
    log: Log = print,
    http_client: Any = None,
    steps: int | None = None,
) -> list[Trained]:
    """Train the collapse run, then the control, against ``server`` (``steps`` shortens
    both); return what each run did, collapse first."""
    from collapsewatch_demo.harness import run_watched

    scenario = SCENARIOS[name]
    results = []
    for recipe, run in zip((scenario.collapse, scenario.control), scenario.runs, strict=True):
        if steps is not None:
            recipe = dataclasses.replace(recipe, steps=steps)
        trained = run_watched(
            recipe,
            server=server,
            project=project,
            run=run,
            token=token,
            every=scenario.every,
            http_client=http_client,
        )
        log(
            f"{run}: {recipe.steps} steps in {trained.seconds:.1f}s, final loss "
            f"{trained.losses[-1]:.3g} (run id {trained.run_id})"
        )
        results.append(trained)
    return results
