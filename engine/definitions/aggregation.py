"""``Aggregation``: one windowed function of one source column."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
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
from engine.json_types import JSONObject
from engine.kernel.layout import FUNCTIONS, LIST_FUNCTIONS, value_is_int
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


#: The most quantiles one percentile aggregation may declare (each is one served feature).
MAX_QUANTILES = 16


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
    # Sketch parameters (docs/semantics.md "Sketch functions"); None: not set / default.
    max_distinct: int | None = None  # count_distinct: required, 1..10,000
    precision: int | None = None  # count_distinct_approx: 4..18, default 12
    # percentile: required; one q in 0..1, or a declared list of them (one feature each, see expand).
    q: float | Sequence[float] | None = None
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
            c.add("function", f"one of {', '.join(FUNCTIONS)}", self.function, did_you_mean(self.function, FUNCTIONS))
        if self.window is not None:
            c.duration("window", self.window, minimum_ms=1)
        if self.name is not None:
            c.name_field("name", self.name)
        if isinstance(self.q, Sequence) and not isinstance(self.q, str):
            object.__setattr__(self, "q", tuple(self.q))  # a declared list, kept as a tuple (hashable, frozen)
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
        if self.function == "percentile":
            self._check_quantiles(c)
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

    def _check_quantiles(self, c: Checker) -> None:
        hint = "write q=0.95 for the 95th percentile, or q=(0.5, 0.95, 0.99) for one feature per quantile"
        if not isinstance(self.q, tuple):
            if not _number_in(self.q, 0.0, 1.0):
                c.add("q", "a number 0 <= q <= 1, or a list of them", self.q, hint)
            return
        if not 1 <= len(self.q) <= MAX_QUANTILES:
            c.add("q", f"a list of 1..{MAX_QUANTILES} numbers 0 <= q <= 1", self.q, hint)
        bad = [q for q in self.q if not _number_in(q, 0.0, 1.0)]
        if bad:
            c.add("q", "every q of the list a number with 0 <= q <= 1", bad, hint)
        elif len(set(self.q)) != len(self.q):
            c.add("q", "distinct quantiles", self.q, "list each quantile once")

    def expand(self) -> tuple[Aggregation, ...]:
        """The aggregations this one declares: itself, or for ``percentile`` with a list
        of quantiles one aggregation per ``q`` (in the listed order). Each is named like
        a single-``q`` percentile (``amount_p95_30d``); with an explicit ``name``, the
        quantile's label is appended (``name="spend"`` gives ``spend_p95``)."""
        if not isinstance(self.q, tuple):
            return (self,)
        if len(self.q) == 1:
            return (dataclasses.replace(self, q=float(self.q[0])),)
        return tuple(
            dataclasses.replace(
                self,
                q=float(q),
                name=None if self.name is None else f"{self.name}_{quantile_label(float(q))}",
            )
            for q in self.q
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
        if self.function == "percentile" and isinstance(self.q, int | float):
            found["q"] = float(self.q)  # a list of q has none until expand() splits it
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
            function = quantile_label(float(self.q))  # amount_p95_1h, amount_p99_9_1h
        elif function == "percentile" and isinstance(self.q, tuple):
            function = "percentiles"  # the declared list, before expand() names each quantile
        label = "lifetime" if self.window_ms is None else window_label(self.window_ms)
        return f"{self.column}_{function}_{label}"

    def output_type(self, column_type: FieldType) -> FieldType:
        """Type of the served value over a column of ``column_type`` (docs/semantics.md
        section 3): the list functions give lists of the column's values; counts, times
        since, first_seen, and min/max/last of an int column give ints (the rule is
        ``engine.kernel.layout.value_is_int``); everything else a float. The view, which
        knows its columns' types, asks (``StreamFeatureView.feature_types``)."""
        if self.function in LIST_FUNCTIONS:
            return FieldType.LIST
        return FieldType.INT if value_is_int(self.function, column_type == FieldType.INT) else FieldType.FLOAT

    def to_dict(self) -> JSONObject:
        out: JSONObject = {
            "column": self.column,
            "function": self.function,
            "window_ms": self.window_ms,
            "output_name": self.output_name,
            "default": self.default,
        }
        if self.params:
            out["params"] = dict(self.params)
        return out


def quantile_label(q: float) -> str:
    """``p`` and the percent, ``.`` written ``_``: 0.95 -> ``p95``, 0.999 -> ``p99_9``, 0.5 -> ``p50``."""
    return "p" + f"{q * 100:g}".replace(".", "_")
