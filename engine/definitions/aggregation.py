"""``Aggregation``: one windowed function of one source column."""

from __future__ import annotations

import math
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
from engine.kernel.layout import FUNCTIONS, INTEGER_FUNCTIONS, LIST_FUNCTIONS, PLANNED_FUNCTIONS
from engine.kernel.sketch_kinds import (
    DDSKETCH_DEFAULT_ALPHA,
    DDSKETCH_MAX_ALPHA,
    DDSKETCH_MIN_ALPHA,
    HLL_DEFAULT_PRECISION,
    HLL_MAX_PRECISION,
    HLL_MIN_PRECISION,
    MAX_DISTINCT_LIMIT,
)
from engine.kernel.value_lists import MAX_LIST_LENGTH

_PARAM_FUNCTIONS = {
    "max_distinct": "count_distinct",
    "precision": "count_distinct_approx",
    "q": "percentile",
    "alpha": "percentile and median",
    "n": "last_n, first_n and last_distinct_n",
}


def _int_in(value: object, lo: int, hi: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi


def _number_in(value: object, lo: float, hi: float) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and lo <= value <= hi


@definition("Aggregation")
class Aggregation:
    column: str
    function: str
    window: timedelta | None  # None: a lifetime window (docs/semantics.md)
    name: str | None = None
    default: float | int | None = None
    # Sketch parameters (docs/semantics.md "Planned functions"); None: not set / default.
    max_distinct: int | None = None  # count_distinct: required, 1..10,000
    precision: int | None = None  # count_distinct_approx: 4..18, default 12
    q: float | None = None  # percentile: required, 0..1
    alpha: float | None = None  # percentile, median: relative accuracy, default 0.01
    n: int | None = None  # last_n, first_n, last_distinct_n: required, 1..1000

    def __post_init__(self) -> None:
        label = self.name if isinstance(self.name, str) else f"{self.column}_{self.function}"
        c = Checker("Aggregation", label)
        if c.type_is("column", self.column, str, "a source field name", "write column='amount'") and not FIELD_RE.match(
            self.column
        ):
            c.add(
                "column",
                "a field name matching [A-Za-z_][A-Za-z0-9_]*",
                self.column,
                "use the name of a source schema field",
            )
        if (
            c.type_is("function", self.function, str, "a function name", f"use one of {FUNCTIONS}")
            and self.function not in FUNCTIONS
        ):
            planned = self.function in PLANNED_FUNCTIONS
            c.add(
                "function",
                f"one of {', '.join(FUNCTIONS)}",
                self.function,
                f"{self.function} is specified in docs/semantics.md ('Planned functions') but not implemented yet; "
                f"valid values: {', '.join(FUNCTIONS)}"
                if planned
                else did_you_mean(self.function, FUNCTIONS),
            )
        if self.window is not None:
            c.duration("window", self.window, minimum_ms=1)
        if self.name is not None:
            c.name_field("name", self.name)
        self._check_sketch_params(c)
        if not finite_number_or_none(self.default):
            c.add(
                "default",
                "a finite int or float, or None",
                self.default,
                "defaults are numeric, e.g. default=0.0",
                type_error=not isinstance(self.default, int | float) or isinstance(self.default, bool),
            )
        c.check()

    def _check_sketch_params(self, c: Checker) -> None:
        uses = {
            "max_distinct": self.function == "count_distinct",
            "precision": self.function == "count_distinct_approx",
            "q": self.function == "percentile",
            "alpha": self.function in ("percentile", "median"),
            "n": self.function in LIST_FUNCTIONS,
        }
        for field, used in uses.items():
            value = getattr(self, field)
            if value is not None and not used:
                c.add(
                    field,
                    f"None for function {self.function!r}",
                    value,
                    f"{field} applies only to {_PARAM_FUNCTIONS[field]}",
                )
        if self.function == "count_distinct" and not _int_in(self.max_distinct, 1, MAX_DISTINCT_LIMIT):
            c.add(
                "max_distinct",
                f"an int 1..{MAX_DISTINCT_LIMIT} (the largest number of distinct values a window may hold)",
                self.max_distinct,
                "declare a realistic bound, e.g. max_distinct=500; for unbounded cardinality use count_distinct_approx",
                type_error=self.max_distinct is not None and not _int_in(self.max_distinct, -(2**62), 2**62),
            )
        if self.function in LIST_FUNCTIONS:
            self._check_list_params(c)
        if self.function == "count_distinct" and self.window is None:
            # docs/semantics.md: a lifetime window grows without bound, so no bound is realistic.
            c.add(
                "window",
                "a finite timedelta for count_distinct (exact)",
                None,
                "use count_distinct_approx for the distinct values of an entity's whole lifetime, "
                "or give count_distinct a finite window",
            )
        if (
            uses["precision"]
            and self.precision is not None
            and not _int_in(self.precision, HLL_MIN_PRECISION, HLL_MAX_PRECISION)
        ):
            c.add(
                "precision",
                f"an int {HLL_MIN_PRECISION}..{HLL_MAX_PRECISION}",
                self.precision,
                f"2**precision registers; relative error 1.04/sqrt(2**p); default {HLL_DEFAULT_PRECISION}",
            )
        if self.function == "percentile" and not _number_in(self.q, 0.0, 1.0):
            c.add("q", "a number 0 <= q <= 1", self.q, "write q=0.95 for the 95th percentile")
        if (
            uses["alpha"]
            and self.alpha is not None
            and not _number_in(self.alpha, DDSKETCH_MIN_ALPHA, DDSKETCH_MAX_ALPHA)
        ):
            c.add(
                "alpha",
                f"a number {DDSKETCH_MIN_ALPHA} <= alpha <= {DDSKETCH_MAX_ALPHA}",
                self.alpha,
                f"the relative accuracy of the answer; default {DDSKETCH_DEFAULT_ALPHA}",
            )

    def _check_list_params(self, c: Checker) -> None:
        if not _int_in(self.n, 1, MAX_LIST_LENGTH):
            c.add(
                "n",
                f"an int 1..{MAX_LIST_LENGTH} (how many values {self.function} keeps)",
                self.n,
                f"write {self.function}(n=5) as Aggregation(..., function={self.function!r}, n=5)",
                type_error=self.n is not None and not _int_in(self.n, -(2**62), 2**62),
            )
        if self.default is not None:
            c.add(
                "default",
                f"None for {self.function}",
                self.default,
                "an empty window's value is the empty list [] (docs/semantics.md 'List functions'); drop the default",
            )

    @property
    def params(self) -> tuple[tuple[str, int | float], ...]:
        """Sorted ``(name, value)`` parameters the function uses, defaults filled in."""
        found: dict[str, int | float] = {}
        if self.function == "count_distinct" and self.max_distinct is not None:
            found["max_distinct"] = int(self.max_distinct)
        if self.function == "count_distinct_approx":
            found["precision"] = int(self.precision or HLL_DEFAULT_PRECISION)
        if self.function == "percentile" and self.q is not None:
            found["q"] = float(self.q)
        if self.function in ("percentile", "median"):
            found["alpha"] = float(self.alpha or DDSKETCH_DEFAULT_ALPHA)
        if self.function in LIST_FUNCTIONS and self.n is not None:
            found["n"] = int(self.n)
        return tuple(sorted(found.items()))

    @property
    def window_ms(self) -> int | None:
        """The window in milliseconds; None for a lifetime window."""
        return None if self.window is None else timedelta_ms(self.window)

    @property
    def output_name(self) -> str:
        if self.name is not None:
            return self.name
        function = self.function
        if function in LIST_FUNCTIONS and isinstance(self.n, int):
            function = function.replace("_n", f"_{self.n}")  # merchant_last_5_1h, merchant_last_distinct_5_1h
        if function == "percentile" and isinstance(self.q, int | float):
            function = "p" + f"{self.q * 100:g}".replace(".", "_")  # amount_p95_1h, amount_p99_9_1h
        label = "lifetime" if self.window_ms is None else window_label(self.window_ms)
        return f"{self.column}_{function}_{label}"

    @property
    def output_type(self) -> FieldType:
        """Type of the served value: counts and times since are integers, the list functions
        lists of the column's values, everything else a float."""
        if self.function in LIST_FUNCTIONS:
            return FieldType.LIST
        return FieldType.INT if self.function in INTEGER_FUNCTIONS else FieldType.FLOAT

    def to_dict(self) -> dict[str, object]:
        return {
            "column": self.column,
            "function": self.function,
            "window_ms": self.window_ms,
            "output_name": self.output_name,
            "default": self.default,
        } | ({"params": dict(self.params)} if self.params else {})
