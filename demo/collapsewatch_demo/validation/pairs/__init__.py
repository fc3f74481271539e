"""The pairs of each family; importing this package registers them all (and imports torch)."""

from collapsewatch_demo.validation.pairs import (
    codebook,
    complete,
    dead_units,
    dimensional,
    generative,
    posterior,
    routing,
    sparsity,
)

__all__ = [
    "codebook",
    "complete",
    "dead_units",
    "dimensional",
    "generative",
    "posterior",
    "routing",
    "sparsity",
]
