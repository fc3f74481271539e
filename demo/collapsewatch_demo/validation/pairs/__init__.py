"""The pairs of each family; importing this package registers them all (and imports torch)."""

from collapsewatch_demo.validation.pairs import (
    attention,
    complete,
    dead_units,
    dimensional,
    diversity,
    neural,
    state,
    tokens,
)

__all__ = [
    "attention",
    "complete",
    "dead_units",
    "dimensional",
    "diversity",
    "neural",
    "state",
    "tokens",
]
