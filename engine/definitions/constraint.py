"""``Constraint``: the values a source field may hold beyond its type (docs/definitions-api.md).

Ingest refuses a record whose field breaks its constraint (dead-letter reasons
``value_out_of_range`` and ``invalid_string``, docs/semantics.md section 5), so one absurd
number or key cannot poison a window or bloat the state.
"""

from __future__ import annotations

import math
import re

from engine.definitions.base import Checker, definition, is_number
from engine.json_types import JSONObject

#: Upper bound of ``max_length``: a key longer than this is never a sensible entity key.
MAX_STRING_LENGTH = 65536


@definition("Constraint")
class Constraint:
    """Allowed values of one field. Numbers: ``min`` / ``max`` (inclusive, finite). Strings:
    ``min_length`` / ``max_length`` (in characters) and ``allowed_characters``, the body of
    a regular-expression character class such as ``"A-Za-z0-9_-"``."""

    min: float | None = None
    max: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    allowed_characters: str | None = None

    def __post_init__(self) -> None:
        c = Checker("Constraint", "?")
        for name in ("min", "max"):
            value = getattr(self, name)
            if value is not None and (not is_number(value) or not math.isfinite(float(value))):
                c.add(name, "a finite number or None", value, f"e.g. {name}=0", type_error=not is_number(value))
        if is_number(self.min) and is_number(self.max) and self.min > self.max:  # type: ignore[operator]
            c.add("max", f"a number >= min ({self.min})", self.max, "swap min and max")
        for name in ("min_length", "max_length"):
            value = getattr(self, name)
            if value is None:
                continue
            if c.type_is(name, value, int, "an integer number of characters", f"e.g. {name}=1") and not (
                0 <= value <= MAX_STRING_LENGTH
            ):
                c.add(name, f"0..{MAX_STRING_LENGTH}", value, "keys are short: e.g. max_length=64")
        if isinstance(self.min_length, int) and isinstance(self.max_length, int) and self.min_length > self.max_length:
            c.add("max_length", f"an int >= min_length ({self.min_length})", self.max_length, "swap them")
        if self.allowed_characters is not None and c.type_is(
            "allowed_characters", self.allowed_characters, str, "a character class body", 'e.g. "A-Za-z0-9_-"'
        ):
            if not self.allowed_characters:
                c.add("allowed_characters", "a non-empty character class body", "", 'e.g. "A-Za-z0-9_-"')
            else:
                try:
                    re.compile(self.character_class)
                except re.error as exc:
                    c.add(
                        "allowed_characters",
                        "a valid character class body",
                        self.allowed_characters,
                        f"fix the class ({exc}); escape ']' and '\\\\' with a backslash",
                    )
        if self.is_empty:
            c.add("<fields>", "at least one bound", "no bound", "e.g. Constraint(min=0) or Constraint(max_length=64)")
        c.check()

    @property
    def is_empty(self) -> bool:
        return all(getattr(self, f) is None for f in ("min", "max", "min_length", "max_length", "allowed_characters"))

    @property
    def is_numeric(self) -> bool:
        """Whether it bounds numbers (``min`` / ``max``)."""
        return self.min is not None or self.max is not None

    @property
    def is_textual(self) -> bool:
        """Whether it bounds strings (length or characters)."""
        return self.min_length is not None or self.max_length is not None or self.allowed_characters is not None

    @property
    def character_class(self) -> str:
        """The regular expression a whole allowed string matches."""
        return f"[{self.allowed_characters}]*"

    def to_dict(self) -> JSONObject:
        return {
            f: getattr(self, f)
            for f in ("min", "max", "min_length", "max_length", "allowed_characters")
            if getattr(self, f) is not None
        }
