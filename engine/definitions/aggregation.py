"""``Aggregation``: one windowed function of one source column."""

from __future__ import annotations

from datetime import timedelta

from engine.definitions.base import (
    FIELD_RE,
    Checker,
    FieldType,
    definition,
    did_you_mean,
    finite_number_or_none,
    timedelta_ms,
    window_label,
)
from engine.kernel.layout import FUNCTIONS, INTEGER_FUNCTIONS, PLANNED_FUNCTIONS


@definition("Aggregation")
class Aggregation:
    column: str
    function: str
    window: timedelta | None  # None: a lifetime window (docs/semantics.md)
    name: str | None = None
    default: float | int | None = None

    def __post_init__(self) -> None:
        label = self.name if isinstance(self.name, str) else f"{self.column}_{self.function}"
        c = Checker("Aggregation", label)
        if c.type_is("column", self.column, str, "a source field name", "write column='amount'") and not FIELD_RE.match(self.column):
            c.add("column", "a field name matching [A-Za-z_][A-Za-z0-9_]*", self.column, "use the name of a source schema field")
        if c.type_is("function", self.function, str, "a function name", f"use one of {FUNCTIONS}") and self.function not in FUNCTIONS:
            planned = self.function in PLANNED_FUNCTIONS
            c.add("function", f"one of {', '.join(FUNCTIONS)}", self.function,
                  f"{self.function} is specified in docs/semantics.md ('Planned functions') but not implemented yet; "
                  f"valid values: {', '.join(FUNCTIONS)}" if planned else did_you_mean(self.function, FUNCTIONS))
        if self.window is not None:
            c.duration("window", self.window, minimum_ms=1)
        if self.name is not None:
            c.name_field("name", self.name)
        if not finite_number_or_none(self.default):
            c.add("default", "a finite int or float, or None", self.default, "defaults are numeric, e.g. default=0.0",
                  type_error=not isinstance(self.default, int | float) or isinstance(self.default, bool))
        c.check()

    @property
    def window_ms(self) -> int | None:
        """The window in milliseconds; None for a lifetime window."""
        return None if self.window is None else timedelta_ms(self.window)

    @property
    def output_name(self) -> str:
        if self.name is not None:
            return self.name
        label = "lifetime" if self.window_ms is None else window_label(self.window_ms)
        return f"{self.column}_{self.function}_{label}"

    @property
    def output_type(self) -> FieldType:
        """Type of the served value: counts and times since are integers, everything else a float."""
        return FieldType.INT if self.function in INTEGER_FUNCTIONS else FieldType.FLOAT

    def to_dict(self) -> dict[str, object]:
        return {
            "column": self.column,
            "function": self.function,
            "window_ms": self.window_ms,
            "output_name": self.output_name,
            "default": self.default,
        }
