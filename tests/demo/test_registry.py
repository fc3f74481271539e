"""Pairs: halves fixed by the name, pairs that differ only in the mechanism, the registered
suite's shape."""

from __future__ import annotations

import pytest

from collapsewatch_demo.validation import pairs  # noqa: F401 - registers the pairs
from collapsewatch_demo.validation.pairs.dead_units import DeepMLPAdam, FunctionalReLU
from collapsewatch_demo.validation.registry import PAIRS, Pair, half_of, select


def test_half_depends_on_the_name_only() -> None:
    assert {half_of(p.name) for p in PAIRS.values()} == {"tune", "heldout"}
    assert all(p.half == half_of(p.name) for p in PAIRS.values())
    # SHA-256 of the name: fixed forever, whatever else is registered
    assert half_of("dead-functional-relu-300") == "heldout"
    assert half_of("dead-mlp5-adam-classes") == "tune"


def test_a_pair_differs_only_in_its_mechanism() -> None:
    pair = Pair("p", "", DeepMLPAdam(lr=3e-2), DeepMLPAdam(lr=1e-3))
    assert pair.mechanism() == "lr=0.03 (control 0.001)"
    with pytest.raises(TypeError):
        Pair("p", "", DeepMLPAdam(), FunctionalReLU())
    with pytest.raises(ValueError):
        Pair("p", "", DeepMLPAdam(lr=3e-2), DeepMLPAdam(lr=1e-3, steps=500))
    with pytest.raises(ValueError):
        Pair("p", "", DeepMLPAdam(), DeepMLPAdam())


def test_the_suite_covers_its_families_with_varied_run_lengths() -> None:
    for family in ("dead_units", "dimensional", "complete"):
        chosen = select(family=family)
        assert len(chosen) >= 4, family
        assert len({p.steps for p in chosen}) >= 3, family
        assert all(300 <= p.steps <= 5000 for p in chosen)
    assert 2 <= len(select(fast=True)) <= 3


def test_every_family_beyond_the_first_three_has_a_pair_in_each_half() -> None:
    explicit = ("codebook", "posterior", "routing", "sparsity", "generative")
    for family in ("neural_collapse", "tokens", "attention", "diversity", "state", *explicit):
        chosen = select(family=family)
        assert {p.half for p in chosen} == {"tune", "heldout"}, family
        assert len({p.steps for p in chosen}) == len(chosen), family  # run lengths differ
        assert all(300 <= p.steps <= 5000 for p in chosen)


#: The 13 collapse families of the server's catalogue that the suite validates.
FAMILIES = (
    "dead_units",
    "dimensional",
    "complete",
    "neural_collapse",
    "tokens",
    "attention",
    "codebook",
    "routing",
    "posterior",
    "diversity",
    "generative",
    "sparsity",
    "state",
)


def test_every_family_has_three_different_pairs() -> None:
    """Issue 10: at least three collapse/control pairs per family, from at least three
    different recipes (models and data; one recipe may carry two mechanisms)."""
    for family in FAMILIES:
        chosen = select(family=family)
        assert len({type(p.collapse) for p in chosen}) >= 3, family
