"""Bounds every stored value keeps: integers that fit their columns, text without the
characters a database refuses.

SQLite and Postgres disagree at the edges: Postgres refuses NUL in text and integers past its
column's width, SQLite stores both. Checking here, before either sees a value, gives both
backends one answer: a 422 naming the field.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Final

from pydantic import Field, GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

#: The largest value of a 64-bit column (BIGINT): row ids.
MAX_INT64: Final = 2**63 - 1
#: The largest value of a 32-bit column (INTEGER): orders, widths, counts of points.
MAX_INT32: Final = 2**31 - 1
#: The largest training step: JavaScript's largest exact integer, so the dashboard shows every
#: step as sent, far inside BIGINT so sums of steps cannot overflow it.
MAX_STEP: Final = 2**53 - 1

#: The same rules as JSON-schema patterns, so that the API's description states them.
NO_CONTROL_PATTERN: Final = "^[^\\x00-\\x1f\\x7f-\\x9f]*$"
NO_NUL_PATTERN: Final = "^[^\\x00]*$"

NO_CONTROL = "must not contain control characters (found {char} at position {index})"
NO_NUL = "must not contain NUL characters (found at position {index})"


#: Unicode's control characters (category Cc): C0, DEL and C1, as one character class (a
#: search in C, where a loop over ``unicodedata.category`` cost a batch's validation a tenth of
#: its time: every record names its probe).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def control_character(text: str) -> int | None:
    """The position of the first control character (C0, DEL, C1) in ``text``, or None."""
    found = _CONTROL.search(text)
    return None if found is None else found.start()


def refuse_control_characters(text: object) -> object:
    """A name's check: names are typed and shown on one line, so no control character."""
    if not isinstance(text, str):
        return text  # the string schema after this check says what is wrong
    index = control_character(text)
    if index is not None:
        raise ValueError(NO_CONTROL.format(char=f"U+{ord(text[index]):04X}", index=index))
    return text


def refuse_nul(text: object) -> object:
    """Free text's check: line breaks and tabs are text, NUL is not (Postgres refuses it)."""
    if not isinstance(text, str):
        return text
    index = text.find("\x00")
    if index >= 0:
        raise ValueError(NO_NUL.format(index=index))
    return text


# Checked before the string schema, so that length limits keep their own messages; in an
# alias with limits, put the check after them: ``Annotated[str, Field(...), NAME_CHARS]``.
@dataclass(frozen=True)
class _Characters:
    """A string's character check, run before its schema (as ``BeforeValidator``), and stated
    in its JSON schema as ``pattern`` so the API's description says it."""

    check: Callable[[object], object]
    pattern: str

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_before_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler.resolve_ref_schema(handler(schema))
        json_schema.setdefault("pattern", self.pattern)
        return json_schema


NAME_CHARS: Final = _Characters(refuse_control_characters, NO_CONTROL_PATTERN)
TEXT_CHARS: Final = _Characters(refuse_nul, NO_NUL_PATTERN)
#: A name of something (probe, rule, module, host): one line of printable characters.
Label = Annotated[str, NAME_CHARS]
#: Free text (a description, a note): anything but NUL.
Text = Annotated[str, TEXT_CHARS]
#: A training step.
Step = Annotated[int, Field(ge=0, le=MAX_STEP)]
#: A non-negative count stored in a 32-bit column.
Count32 = Annotated[int, Field(ge=0, le=MAX_INT32)]
#: A non-negative count stored in a 64-bit column.
Count64 = Annotated[int, Field(ge=0, le=MAX_INT64)]
