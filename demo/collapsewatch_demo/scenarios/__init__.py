"""The scenarios of ``collapsewatch demo --scenario NAME``; importing this registers them all
(and imports torch: the server's CLI imports it lazily, the server's image has no torch)."""

from collapsewatch_demo.scenarios import (
    attention_entropy,
    complete_collapse,
    dead_units,
    dimensional,
    gan_mode_collapse,
    model_collapse,
    moe_routing,
    neural_collapse,
    posterior_collapse,
    pruning,
    state_collapse,
    token_uniformity,
    vq_codebook,
)
from collapsewatch_demo.scenarios.registry import SCENARIOS, Scenario, register, run_scenario

__all__ = [
    "SCENARIOS",
    "Scenario",
    "attention_entropy",
    "complete_collapse",
    "dead_units",
    "dimensional",
    "gan_mode_collapse",
    "model_collapse",
    "moe_routing",
    "neural_collapse",
    "posterior_collapse",
    "pruning",
    "register",
    "run_scenario",
    "state_collapse",
    "token_uniformity",
    "vq_codebook",
]
