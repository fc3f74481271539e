"""The pairs of the validation suite and the half each belongs to.

A pair is a collapse recipe and its healthy control: two instances of one recipe class that
differ only in the collapse mechanism (same run length and seed). Each pair belongs to one
half, "tune" (defaults may be calibrated on it) or "heldout" (only ever reported), decided by
its name alone: the first byte of the SHA-256 of the name, even for "tune", odd for "heldout".
The rule is fixed, needs no list that could be edited after looking at results, and does not
move a pair when others are added.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields
from typing import Literal

from collapsewatch_demo.by_name import ByName
from collapsewatch_demo.harness import Recipe

Half = Literal["tune", "heldout"]
HALVES: tuple[Half, ...] = ("tune", "heldout")


def half_of(name: str) -> Half:
    """The half of the pair called ``name`` (see the module docstring)."""
    return "tune" if hashlib.sha256(name.encode()).digest()[0] % 2 == 0 else "heldout"


@dataclass(frozen=True)
class Pair:
    """A collapse recipe and its control; ``fast`` pairs form the quick subset (tests)."""

    name: str
    summary: str
    collapse: Recipe
    control: Recipe
    fast: bool = False

    def __post_init__(self) -> None:
        if type(self.collapse) is not type(self.control):
            raise TypeError(f"pair {self.name!r}: collapse and control are different recipes")
        same = ("steps", "seed")
        if any(getattr(self.collapse, f) != getattr(self.control, f) for f in same):
            raise ValueError(f"pair {self.name!r}: collapse and control differ in {same}")
        if self.collapse == self.control:
            raise ValueError(f"pair {self.name!r}: collapse and control are the same recipe")

    @property
    def family(self) -> str:
        return self.collapse.family

    @property
    def half(self) -> Half:
        return half_of(self.name)

    @property
    def steps(self) -> int:
        return self.collapse.steps

    def mechanism(self) -> str:
        """The fields in which the collapse differs from the control, as ``a=x (control y)``."""
        return ", ".join(
            f"{name}={a!r} (control {b!r})"
            for name, a, b in (
                (f.name, getattr(self.collapse, f.name), getattr(self.control, f.name))
                for f in fields(self.collapse)
            )
            if a != b
        )


PAIRS: ByName[Pair] = ByName("pair")
#: Each module of :mod:`collapsewatch_demo.validation.pairs` registers its pairs at import.
register = PAIRS.register


def select(
    half: Half | Literal["all"] = "all", family: str | None = None, fast: bool = False
) -> list[Pair]:
    """The registered pairs of a half and family (all by default), in registration order;
    ``fast`` keeps the quick subset only."""
    return [
        p
        for p in PAIRS.values()
        if (half == "all" or p.half == half)
        and (family is None or p.family == family)
        and (p.fast or not fast)
    ]
