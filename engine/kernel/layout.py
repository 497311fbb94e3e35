"""Partial layouts and the kernel's own aggregation specs.

Per tile and aggregated column the kernel keeps ``FIELDS_PER_COLUMN`` float64
partials (docs/semantics.md section 2, docs/architecture.md "Kernel"):

    count, sum, m2, min, max, last_ts, last_pos, last_value

``m2`` is the sum of squared deviations from the tile mean; ``last_*`` describe the
event with the greatest ``(event time, partition, offset)``, the position being
``partition * 2**40 + offset`` (exact in float64 below 2**53).

A view with a ``first_seen`` aggregation keeps one more field per tile after the
columns' fields: ``first_ts``, the smallest event time in the tile (``+inf`` when
empty). It belongs to the view, not to a column (every event of a view reaches
every column), and views without ``first_seen`` do not pay for it.

The kernel does not import ``engine.definitions``: :meth:`PartialLayout.for_view` (and
``ViewSpec.from_view`` in engine/kernel/view_spec.py) read the attributes agreed in
docs/definitions-api.md by duck typing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

import numpy as np
import numpy.typing as npt

from engine.kernel.exceptions import KernelInputError, KernelSpecError, KernelSpecTypeError
from engine.kernel.sketch_kinds import SLOT_BUILDERS, slot_for
from engine.kernel.sketch_slot import Params, ParamValue, SketchSlot
from engine.positions import MAX_OFFSET, MAX_PARTITION, POSITION_OFFSET_BITS

FIELDS_PER_COLUMN = 8
FIELD_COUNT = 0
FIELD_SUM = 1
FIELD_M2 = 2
FIELD_MIN = 3
FIELD_MAX = 4
FIELD_LAST_TS = 5
FIELD_LAST_POS = 6
FIELD_LAST_VALUE = 7
FIELD_NAMES = ("count", "sum", "m2", "min", "max", "last_ts", "last_pos", "last_value")

# The partial of a column with no events; merging it with any partial is exact.
EMPTY_FIELDS: tuple[float, ...] = (
    0.0,
    0.0,
    0.0,
    math.inf,
    -math.inf,
    -math.inf,
    -math.inf,
    math.nan,
)

# The functions whose state is the float64 partials above (docs/semantics.md section 3).
PARTIAL_FUNCTIONS: tuple[str, ...] = (
    "sum",
    "count",
    "mean",
    "min",
    "max",
    "last",
    "stddev",
    "time_since_last",
    "first_seen",
)
# The functions whose state is one blob per tile in the record's sketch section
# (docs/semantics.md "Sketch functions"; engine/kernel/sketch_kinds.py and one module per kind).
SKETCH_FUNCTIONS: tuple[str, ...] = ("count_distinct", "count_distinct_approx", "percentile", "median")
# The functions whose value is a list of the column's values ([] when the window is
# empty; docs/semantics.md "List functions"), kept per tile in the sketch section
# (engine/kernel/value_lists.py).
LIST_FUNCTIONS: tuple[str, ...] = ("last_n", "first_n", "last_distinct_n")
# The one list of aggregation functions; definitions validate against it.
FUNCTIONS: tuple[str, ...] = PARTIAL_FUNCTIONS + SKETCH_FUNCTIONS + LIST_FUNCTIONS
# Functions whose value is an integer whatever the column (served as int, int64 in training sets).
INTEGER_FUNCTIONS = frozenset({"count", "time_since_last", "first_seen", "count_distinct", "count_distinct_approx"})
# Functions whose value is one of the column's values (docs/semantics.md section 3), so an
# int column's is an int. The partials hold it as a double, exactly: ingest refuses an int
# beyond 2**53 in a field these read. ``sum`` is not one: a sum of ints may pass 2**53 on
# the way, where doubles round, so it stays a float.
COLUMN_VALUE_FUNCTIONS = frozenset({"min", "max", "last"})
# Functions whose empty window is 0 rather than null.
ZERO_WHEN_EMPTY = frozenset({"count", "count_distinct", "count_distinct_approx"})
# Functions that read only which events exist and their event times, never the
# column's value, so their column may have any type.
ANY_COLUMN_FUNCTIONS = frozenset(
    {"count", "time_since_last", "first_seen", "count_distinct", "count_distinct_approx", *LIST_FUNCTIONS}
)
# Functions that read their column's value as an IEEE double (the float64 partials).
DOUBLE_VALUE_FUNCTIONS = frozenset(PARTIAL_FUNCTIONS) - ANY_COLUMN_FUNCTIONS
# The function that needs the view-level first_ts field.
FIRST_SEEN = "first_seen"

# The window length in tiles of a lifetime window (``window_ms=None``): longer than any
# tile id, so the window reaches every stored tile (including the compacted partial)
# while ``current - LIFETIME_WINDOW_TILES`` stays inside int64.
LIFETIME_WINDOW_TILES = 2**62


Number = float | int


class AggregationLike(Protocol):
    """What the kernel reads of a definitions ``Aggregation`` (docs/definitions-api.md)."""

    @property
    def output_name(self) -> str: ...
    @property
    def column(self) -> str: ...
    @property
    def function(self) -> object: ...  # a str or a str-valued enum (read through _plain)
    @property
    def window_ms(self) -> int | None: ...
    @property
    def default(self) -> float | int | None: ...


class AggregatedView(Protocol):
    @property
    def aggregations(self) -> Sequence[AggregationLike]: ...


def double_read_columns(views: Iterable[AggregatedView]) -> frozenset[str]:
    """The columns some aggregation of ``views`` reads as a double (sum, mean, min, max,
    last, stddev): an int value beyond 2**53 (engine/exact_doubles.py) there would be rounded."""
    return frozenset(
        a.column for view in views for a in view.aggregations if _plain(a.function) in DOUBLE_VALUE_FUNCTIONS
    )


def value_is_int(function: str, int_column: bool) -> bool:
    """The one rule of which aggregations have int values (docs/semantics.md section 3):
    counts, times since and first_seen always, min/max/last when their column is an int
    field. Definitions type their outputs with it; the kernel converts with it."""
    return function in INTEGER_FUNCTIONS or (int_column and function in COLUMN_VALUE_FUNCTIONS)


class LayoutSource(Protocol):
    """What a partial layout is built from: a view's columns and aggregations."""

    @property
    def columns(self) -> Sequence[str]: ...
    @property
    def aggregations(self) -> Sequence[AggregationLike]: ...


def encode_positions(partitions: npt.ArrayLike, offsets: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Return ``partition * 2**40 + offset`` for arrays (or scalars) of Kafka positions.

    Raises :class:`KernelInputError` when a partition or offset does not fit, because
    the position must stay exact once stored as float64 in ``last_pos``.
    """
    parts = np.asarray(partitions, dtype=np.int64)
    offs = np.asarray(offsets, dtype=np.int64)
    if parts.size and (int(parts.min()) < 0 or int(parts.max()) > MAX_PARTITION):
        raise KernelInputError(
            f"positions: field 'partition': expected 0..{MAX_PARTITION}, got {int(parts.min())}..{int(parts.max())}",
            hint="last_pos packs partition*2**40+offset into a float64, exact below 2**53",
        )
    if offs.size and (int(offs.min()) < 0 or int(offs.max()) > MAX_OFFSET):
        raise KernelInputError(
            f"positions: field 'offset': expected 0..{MAX_OFFSET}, got {int(offs.min())}..{int(offs.max())}",
            hint="offsets beyond 2**40 cannot be packed next to the partition",
        )
    return np.asarray((parts << POSITION_OFFSET_BITS) + offs, dtype=np.int64)


def check_spec_int(owner: str, name: str, value: object, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise KernelSpecTypeError(
            f"{owner}: field '{name}': expected an int, got {type(value).__name__} {value!r}",
            hint="pass whole milliseconds as int",
        )
    if int(value) < minimum:
        raise KernelSpecError(
            f"{owner}: field '{name}': expected an int >= {minimum}, got {value!r}",
            hint="windows, intervals and retention are positive millisecond counts",
        )
    return int(value)


def _check_name(owner: str, name: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise KernelSpecTypeError(
            f"{owner}: field '{name}': expected a non-empty str, got {value!r}",
            hint="use the column or feature name as declared in the view",
        )
    return value


@dataclass(frozen=True)
class PartialLayout:
    """Where each column's partial fields live inside one tile row (and, when
    ``tracks_first_event``, the view's ``first_ts`` field after them)."""

    columns: tuple[str, ...]
    tracks_first_event: bool = False
    # One blob per tile and slot in the record's sketch section (engine/kernel/sketches.py).
    sketch_slots: tuple[SketchSlot, ...] = ()
    _index: dict[str, int] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.columns, tuple):
            raise KernelSpecTypeError(
                f"PartialLayout: field 'columns': expected a tuple of str, got {type(self.columns).__name__}",
                hint="pass tuple(view.columns)",
            )
        for name in self.columns:
            _check_name("PartialLayout", "columns", name)
        if len(set(self.columns)) != len(self.columns):
            raise KernelSpecError(
                f"PartialLayout: field 'columns': expected distinct names, got {self.columns!r}",
                hint="list each aggregated column once",
            )
        if not isinstance(self.tracks_first_event, bool):
            raise KernelSpecTypeError(
                f"PartialLayout: field 'tracks_first_event': expected a bool, "
                f"got {type(self.tracks_first_event).__name__}",
                hint="True when the view has a first_seen aggregation",
            )
        if not isinstance(self.sketch_slots, tuple) or not all(
            isinstance(slot, SketchSlot) for slot in self.sketch_slots
        ):
            raise KernelSpecTypeError(
                f"PartialLayout: field 'sketch_slots': expected a tuple of SketchSlot, got {self.sketch_slots!r}",
                hint="derive the slots with sketch_slots_of(aggregation specs)",
            )
        if len(set(self.sketch_slots)) != len(self.sketch_slots):
            raise KernelSpecError(
                f"PartialLayout: field 'sketch_slots': expected distinct slots, got {self.sketch_slots!r}",
                hint="aggregations of one (column, kind, params) share one slot",
            )
        index = {name: i * FIELDS_PER_COLUMN for i, name in enumerate(self.columns)}
        object.__setattr__(self, "_index", index)

    @property
    def sketch_columns(self) -> tuple[str, ...]:
        """Columns whose raw values the kernel needs (sketch slots read them)."""
        return tuple(dict.fromkeys(slot.column for slot in self.sketch_slots))

    @property
    def column_width(self) -> int:
        """Number of float64 fields of the columns (the row without ``first_ts``)."""
        return len(self.columns) * FIELDS_PER_COLUMN

    @property
    def width(self) -> int:
        """Number of float64 fields in one tile row."""
        return self.column_width + int(self.tracks_first_event)

    @property
    def first_event_field(self) -> int:
        """Index of the view's ``first_ts`` field (the last field of a row)."""
        if not self.tracks_first_event:
            raise KernelSpecError(
                f"PartialLayout {self.columns!r}: field 'tracks_first_event': expected True "
                "to read first_ts, got False",
                hint="build the layout with PartialLayout.for_view or ViewSpec (first_seen sets it)",
            )
        return self.column_width

    def offset(self, column: str) -> int:
        """Index of the first field (``count``) of ``column`` inside a tile row."""
        try:
            return self._index[column]
        except KeyError:
            raise KernelSpecError(
                f"PartialLayout: column '{column}': expected one of {self.columns!r}, got '{column}'",
                hint="only columns some aggregation of the view reads have partials",
            ) from None

    def empty(self, n_rows: int) -> npt.NDArray[np.float64]:
        """``n_rows`` empty tile rows (the identity of :func:`merge_partials`)."""
        row = np.tile(np.asarray(EMPTY_FIELDS, dtype=np.float64), len(self.columns))
        if self.tracks_first_event:
            row = np.append(row, math.inf)
        return np.tile(row, (n_rows, 1))

    @classmethod
    def for_view(cls, view: LayoutSource) -> PartialLayout:
        """Layout of a ``StreamFeatureView`` (reads ``view.columns`` and the functions)."""
        functions = {_plain(agg.function) for agg in view.aggregations}
        specs = [AggregationSpec.from_aggregation(agg) for agg in view.aggregations]
        return cls(tuple(view.columns), FIRST_SEEN in functions, sketch_slots_of(specs))


@dataclass(frozen=True)
class AggregationSpec:
    """One aggregation as the kernel needs it (a plain copy of ``Aggregation``)."""

    output_name: str
    column: str
    function: str
    window_ms: int | None  # None: a lifetime window (every event with e <= t)
    default: Number | None = None
    # Sorted (name, value) parameters of sketch functions (max_distinct, precision, q, alpha).
    params: Params = ()
    # Whether the column is an int field of the source schema (min/max/last are ints then).
    int_column: bool = False

    def __post_init__(self) -> None:
        owner = f"AggregationSpec '{self.output_name}'"
        _check_name(owner, "output_name", self.output_name)
        _check_name(owner, "column", self.column)
        if self.function not in FUNCTIONS and not _is_sketch_function(self.function):
            raise KernelSpecError(
                f"{owner}: field 'function': expected one of {list(FUNCTIONS)}, got {self.function!r}",
                hint="see docs/semantics.md section 3 for the supported functions",
            )
        if self.window_ms is not None:
            check_spec_int(owner, "window_ms", self.window_ms, minimum=1)
        if self.default is not None and (isinstance(self.default, bool) or not isinstance(self.default, int | float)):
            raise KernelSpecTypeError(
                f"{owner}: field 'default': expected int, float or None, "
                f"got {type(self.default).__name__} {self.default!r}",
                hint="defaults replace the value of an empty window and must be numbers",
            )
        if self.default is not None and self.function in LIST_FUNCTIONS:
            raise KernelSpecError(
                f"{owner}: field 'default': expected None for {self.function}, got {self.default!r}",
                hint="an empty window's list is [] (docs/semantics.md 'List functions'); drop the default",
            )
        if not isinstance(self.params, tuple) or list(self.params) != sorted(self.params):
            raise KernelSpecTypeError(
                f"{owner}: field 'params': expected a sorted tuple of (name, value) pairs, got {self.params!r}",
                hint="Aggregation.params gives them in this form",
            )
        if not isinstance(self.int_column, bool):
            raise KernelSpecTypeError(
                f"{owner}: field 'int_column': expected a bool, got {type(self.int_column).__name__}",
                hint="True when the column's schema type is int",
            )

    @property
    def int_valued(self) -> bool:
        """Whether the value is an int (:func:`value_is_int`; a fractional default aside)."""
        return value_is_int(self.function, self.int_column)

    def param(self, name: str) -> ParamValue | None:
        """The parameter ``name`` or None when the aggregation does not set it."""
        return dict(self.params).get(name)

    @property
    def sketch_slot(self) -> SketchSlot | None:
        """The slot this aggregation reads, None for float64-partial functions."""
        return slot_for(self)

    @classmethod
    def from_aggregation(cls, agg: AggregationLike, *, int_column: bool = False) -> AggregationSpec:
        """Copy what the kernel needs from an ``Aggregation`` (duck typed); ``int_column``:
        whether its column is an int field (the view knows, :func:`aggregation_specs`)."""
        return cls(
            output_name=agg.output_name,
            column=agg.column,
            function=_plain(agg.function),
            window_ms=None if agg.window_ms is None else int(agg.window_ms),
            default=agg.default,
            params=tuple(getattr(agg, "params", ())),
            int_column=int_column,
        )


class TypedAggregations(AggregatedView, Protocol):
    """A view's aggregations and which of its columns are int fields."""

    @property
    def int_columns(self) -> frozenset[str]: ...


def aggregation_specs(view: TypedAggregations) -> tuple[AggregationSpec, ...]:
    """The kernel's specs of a ``StreamFeatureView``'s aggregations, in declared order,
    each knowing whether its column is an int field."""
    ints = view.int_columns
    return tuple(AggregationSpec.from_aggregation(a, int_column=a.column in ints) for a in view.aggregations)


def sketch_slots_of(aggregations: Iterable[AggregationSpec]) -> tuple[SketchSlot, ...]:
    """The distinct sketch slots of ``aggregations``, in order of first use."""
    slots = (agg.sketch_slot for agg in aggregations)
    return tuple(dict.fromkeys(slot for slot in slots if slot is not None))


def _is_sketch_function(function: str) -> bool:
    return function in SLOT_BUILDERS


def _plain(function: object) -> str:
    # The definitions module may model functions as a str Enum; the kernel wants the str.
    value = function.value if isinstance(function, Enum) else function
    return str(value)
