"""The scenarios of ``collapsewatch demo --scenario NAME``; importing this registers them all
(and imports torch: the CLI imports it lazily, the server extra does not install torch)."""

from collapsewatch_server.scenarios import (
    complete_collapse,
    dead_units,
    dimensional,
    neural_collapse,
    pruning,
    token_uniformity,
)
from collapsewatch_server.scenarios.registry import SCENARIOS, Scenario, register, run_scenario

__all__ = [
    "SCENARIOS",
    "Scenario",
    "complete_collapse",
    "dead_units",
    "dimensional",
    "neural_collapse",
    "pruning",
    "register",
    "run_scenario",
    "token_uniformity",
]
