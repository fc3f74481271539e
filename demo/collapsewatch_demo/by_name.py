"""A table of entries by unique name, in registration order.

The demo's scenarios and the validation suite's pairs are each one such table, filled by
``register(...)`` calls when their modules are imported; a name registered twice is a mistake
in those modules, so it fails at import rather than replacing the first entry.
"""

from __future__ import annotations

from typing import Protocol, TypeVar


class Named(Protocol):
    @property
    def name(self) -> str: ...


N = TypeVar("N", bound=Named)


class ByName(dict[str, N]):
    """Entries by their ``name``; ``kind`` names them in the error for a name taken twice."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def register(self, entry: N) -> N:
        """Add ``entry`` under its name (ValueError when the name is taken); returns it."""
        if entry.name in self:
            raise ValueError(f"{self.kind} {entry.name!r} registered twice")
        self[entry.name] = entry
        return entry
