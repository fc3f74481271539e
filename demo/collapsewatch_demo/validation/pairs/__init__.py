"""The pairs of each family; importing this package registers them all (and imports torch)."""

from collapsewatch_demo.validation.pairs import (
    attention,
    codebook,
    complete,
    dead_units,
    dimensional,
    diversity,
    generative,
    neural,
    posterior,
    routing,
    sparsity,
    state,
    tokens,
)

__all__ = [
    "attention",
    "codebook",
    "complete",
    "dead_units",
    "dimensional",
    "diversity",
    "generative",
    "neural",
    "posterior",
    "routing",
    "sparsity",
    "state",
    "tokens",
]
