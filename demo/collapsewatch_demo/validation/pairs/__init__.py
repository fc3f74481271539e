"""The pairs of each family; importing this package registers them all (and imports torch)."""

from collapsewatch_demo.validation.pairs import complete, dead_units, dimensional, tokens

__all__ = ["complete", "dead_units", "dimensional", "tokens"]
