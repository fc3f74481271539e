"""The pairs of each family; importing this package registers them all (and imports torch)."""

from collapsewatch_demo.validation.pairs import dead_units

__all__ = ["dead_units"]
