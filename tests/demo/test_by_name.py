"""The name-keyed tables the scenarios and the validation pairs register into."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from collapsewatch_demo.by_name import ByName
from collapsewatch_demo.scenarios import SCENARIOS
from collapsewatch_demo.scenarios import register as register_scenario
from collapsewatch_demo.validation import pairs  # noqa: F401 - registers the pairs
from collapsewatch_demo.validation.registry import PAIRS
from collapsewatch_demo.validation.registry import register as register_pair


@dataclass(frozen=True)
class Entry:
    name: str


def test_entries_keep_their_registration_order_and_a_name_is_taken_once() -> None:
    table: ByName[Entry] = ByName("entry")
    first = table.register(Entry("b"))
    table.register(Entry("a"))
    assert list(table) == ["b", "a"]
    assert table["b"] is first
    with pytest.raises(ValueError, match="entry 'b' registered twice"):
        table.register(Entry("b"))
    assert table["b"] is first, "the first entry stays"


def test_scenarios_and_pairs_refuse_a_second_registration_of_a_name() -> None:
    with pytest.raises(ValueError, match="scenario 'dead_units' registered twice"):
        register_scenario(SCENARIOS["dead_units"])
    name = next(iter(PAIRS))
    with pytest.raises(ValueError, match=f"pair '{name}' registered twice"):
        register_pair(PAIRS[name])
