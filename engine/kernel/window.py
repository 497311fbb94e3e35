"""Window evaluation over tile partials (docs/semantics.md section 3).

The value of an aggregation with window ``w`` as of ``t`` covers the events with
``floor(t/g)*g - w <= e <= t``: the current tile ``floor(t/g)`` plus the ``w/g``
tiles before it. Tiles hold whole-tile partials and cannot be split, so the
**current tile is taken whole**: events of that tile with ``e > t`` are included
when present. That is exact whenever no applied event of the entity has ``e > t``
(always true at wall-clock time for well-behaved producers, and in the consistency
tests); otherwise serving answers the row from the Parquet log instead
(``serving/history.py``, semantics section 3, "Online reads and as_of"). Tiles after
the current tile are never included.

Values: ``count``, ``time_since_last`` and ``first_seen`` are ints, and so are ``min``,
``max`` and ``last`` of an int column (``layout.value_is_int``); the list functions
(``last_n``, ``first_n``, ``last_distinct_n``) are lists of the column's values, every other
function a float (``time_since_last`` is ``t`` minus the greatest ``last_ts`` of the
window's tiles, ``first_seen`` the smallest ``first_ts``);
an empty window gives
``0`` for count, ``0.0`` for sum, ``[]`` for a list and ``None`` otherwise, unless the
aggregation has a ``default``, which then replaces the value and marks the aggregation
defaulted.

Many ``(entity, t)`` queries at once: :mod:`engine.kernel.window_many` (same rules,
vectorized).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

import numpy as np
import numpy.typing as npt

from engine.kernel.aggregate import (
    IntOrArray,
    as_int64_vector,
    as_partials,
    check_sorted_tiles,
    overflow_is_a_value,
)
from engine.kernel.layout import (
    FIELD_COUNT,
    FIELD_LAST_POS,
    FIELD_LAST_TS,
    FIELD_LAST_VALUE,
    FIELD_M2,
    FIELD_MAX,
    FIELD_MIN,
    FIELD_SUM,
    LIST_FUNCTIONS,
    ZERO_WHEN_EMPTY,
    AggregationSpec,
)
from engine.kernel.sketch_kinds import OverBound, SketchValue, evaluate_blob
from engine.kernel.sketches import BlobArray, merge_window
from engine.kernel.value_hash import ListItem
from engine.kernel.view_spec import ViewSpec

Value = float | int | list[ListItem] | None
#: Per (sketch slot index, window in ms or None): the blobs of the window's closed tiles
#: (those before the current tile) at an earlier evaluation of the same entity, and their
#: merge. A later evaluation whose closed tiles hold the very same blobs reuses the merge
#: and merges only the current tile into it (:func:`sketch_value`).
ClosedMerges = dict[tuple[int, int | None], tuple[list[bytes], bytes]]
# Fewer closed tiles than this are merged afresh (comparing them costs about as much).
_CLOSED_MERGE_MIN_TILES = 8
Int64Array = npt.NDArray[np.int64]
Float64Array = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class WindowResult:
    """Values of one entity's aggregations as of one time, in declared order."""

    values: dict[str, Value]
    empty: tuple[bool, ...]
    defaulted: tuple[bool, ...]
    # count_distinct windows holding more than max_distinct values (value None).
    over_bound: tuple[bool, ...] = ()

    @property
    def any_defaulted(self) -> bool:
        """True when some default replaced an empty window (serving status DEFAULTED)."""
        return any(self.defaulted)


def empty_value(agg: AggregationSpec) -> Value:
    """Value of ``agg`` over an empty window (the table of semantics section 3); a whole
    default of an int-valued aggregation (``default=-1.0``) is that int."""
    if agg.default is not None:
        if agg.int_valued and isinstance(agg.default, float) and agg.default.is_integer():
            return int(agg.default)
        return agg.default
    if agg.function in LIST_FUNCTIONS:
        return []
    if agg.function in ZERO_WHEN_EMPTY:
        return 0
    if agg.function == "sum":
        return 0.0
    return None


def values_are_int(agg: AggregationSpec) -> bool:
    """Whether ``agg``'s values are ints (``AggregationSpec.int_valued``), unless a kernel
    spec gives it a fractional default (definitions refuse one)."""
    return agg.int_valued and not isinstance(empty_value(agg), float)


class SupportsFloorDiv(Protocol):
    def __floordiv__(self, other: int, /) -> Any: ...  # an int for an int, an array for an array


TimeT = TypeVar("TimeT", bound=SupportsFloorDiv)


def tile_id(t_ms: TimeT, interval_ms: int) -> TimeT:
    """Id of the tile holding ``t_ms``: ``floor(t / g)`` (docs/semantics.md section 3),
    the key of tile records and the "current tile" of a window. Element-wise on an int,
    a numpy array or a polars expression."""
    return cast(TimeT, t_ms // interval_ms)


def tile_start_ms(t_ms: TimeT, interval_ms: int) -> TimeT:
    """Start of the tile holding ``t_ms``: ``floor(t / g) * g`` (docs/semantics.md
    section 3). Element-wise on an int, a numpy array or a polars expression."""
    return cast(TimeT, (t_ms // interval_ms) * interval_ms)


def window_start_ms(t_ms: IntOrArray, interval_ms: int, window_ms: int) -> IntOrArray:
    """First event time in the window of ``window_ms`` as of ``t_ms``:
    ``floor(t / g) * g - w`` (docs/semantics.md section 3). Element-wise on arrays."""
    return tile_start_ms(t_ms, interval_ms) - window_ms


def reaches_before(t_ms: IntOrArray, interval_ms: int, window_ms: int | None, at_ms: int) -> bool | BoolArray:
    """Whether the window as of ``t_ms`` starts before ``at_ms``, the time a view joined its
    running stream: its events before then are missing until a backfill (docs/semantics.md
    section 8). A lifetime window (``window_ms`` None) always does. Element-wise on arrays."""
    if window_ms is None:
        return np.ones(np.shape(t_ms), dtype=bool) if isinstance(t_ms, np.ndarray) else True
    starts = window_start_ms(t_ms, interval_ms, window_ms)
    return starts < at_ms if isinstance(starts, np.ndarray) else bool(starts < at_ms)


def evaluate(
    spec: ViewSpec,
    tiles: npt.ArrayLike,
    partials: npt.ArrayLike,
    t_ms: int,
    sketches: BlobArray | None = None,
) -> WindowResult:
    """Evaluate every aggregation of ``spec`` for one entity as of ``t_ms``.

    ``tiles`` are the entity's strictly increasing int64 tile ids and ``partials``
    their ``(n_tiles, spec.layout.width)`` float64 rows (as returned by
    :func:`engine.kernel.codec.decode_tiles`). The current tile ``t_ms // g`` is taken
    whole (see the module docstring and docs/semantics.md section 3).
    """
    tile_ids = as_int64_vector("tiles", tiles)
    parts = as_partials(spec.layout, "partials", partials, len(tile_ids))
    check_sorted_tiles("tiles", tile_ids)
    return evaluate_unchecked(spec, tile_ids, parts, t_ms, sketches)


@overflow_is_a_value
def evaluate_unchecked(
    spec: ViewSpec,
    tile_ids: Int64Array,
    parts: Float64Array,
    t_ms: int,
    sketches: BlobArray | None = None,
    closed: ClosedMerges | None = None,
) -> WindowResult:
    """:func:`evaluate` for arrays already checked (int64 sorted tiles, float64 rows of
    the layout's width), as a decoded record is. ``sketches`` are the rows' blobs
    (``(n_tiles, n_slots)``; None: all empty); ``closed``: see :func:`sketch_value`."""
    current = tile_id(int(t_ms), spec.interval_ms)
    hi = int(np.searchsorted(tile_ids, current, side="right"))
    split = int(np.searchsorted(tile_ids, current, side="left"))  # rows before: closed tiles
    los = np.searchsorted(tile_ids, current - np.array(spec.window_tiles, dtype=np.int64)).tolist()

    values: dict[str, Value] = {}
    empty: list[bool] = []
    over_bound: list[bool] = []
    merged_windows: dict[tuple[int, int, int], bytes] = {}
    for agg, off, lo, j in zip(spec.aggregations, spec.field_offsets, los, spec.sketch_index, strict=True):
        block = parts[lo:hi]
        count = int(block[:, off + FIELD_COUNT].sum()) if lo < hi else 0
        empty.append(count == 0)
        over_bound.append(False)
        if count == 0:
            values[agg.output_name] = empty_value(agg)
        elif j is not None:
            value = sketch_value(spec, agg, j, sketches, lo, hi, merged_windows, closed, split)
            over_bound[-1] = isinstance(value, OverBound)
            values[agg.output_name] = None if isinstance(value, OverBound) else value
        elif agg.function == "first_seen":
            # Empty tiles hold first_ts = +inf; the window is non-empty, so the min is a time.
            values[agg.output_name] = int(block[:, spec.layout.first_event_field].min())
        else:
            value = _reduce_block(agg.function, block, off, count, t_ms)
            # min/max/last of an int column: the double partial holds the int exactly.
            values[agg.output_name] = int(value) if agg.int_valued and isinstance(value, float) else value
    defaulted = tuple(e and a.default is not None for e, a in zip(empty, spec.aggregations, strict=True))
    return WindowResult(values, tuple(empty), defaulted, tuple(over_bound))


def sketch_value(
    spec: ViewSpec,
    agg: AggregationSpec,
    slot_index: int,
    sketches: BlobArray | None,
    lo: int,
    hi: int,
    merged_windows: dict[tuple[int, int, int], bytes] | None = None,
    closed: ClosedMerges | None = None,
    split: int | None = None,
) -> SketchValue:
    """``agg``'s value over the merged blobs of tile rows ``[lo, hi)`` (a non-empty window);
    ``merged_windows`` keeps merged windows for the other aggregations of the same call.

    With ``closed`` (kept between evaluations of one entity) and ``split`` (the first row
    of the current tile or later), the rows ``[lo, split)`` are merged once and the merge
    is reused while they hold the same blobs: merging is order-free and associative to
    the byte (``merge_window``'s contract), so the merge of the stored merge and the
    current tile is the merge of the whole window."""
    slot = spec.layout.sketch_slots[slot_index]
    key = (slot_index, lo, hi)
    merged = None if merged_windows is None else merged_windows.get(key)
    if merged is None:
        # Several aggregations may read one slot (p50, p95 and p99 of one sketch): the
        # window is merged once per evaluation and each answers from the merged blob.
        blobs = [] if sketches is None else sketches[lo:hi, slot_index].tolist()
        if closed is not None and split is not None and split - lo >= _CLOSED_MERGE_MIN_TILES:
            done, current = blobs[: split - lo], blobs[split - lo :]
            memo_key = (slot_index, agg.window_ms)
            memo = closed.get(memo_key)
            if memo is None or memo[0] != done:  # the same blobs, element by element
                memo = (done, merge_window(slot, done))
                closed[memo_key] = memo
            merged = merge_window(slot, [memo[1], *current])
        else:
            merged = merge_window(slot, blobs)
        if merged_windows is not None:
            merged_windows[key] = merged
    return evaluate_blob(agg, slot, merged)


def _reduce_block(function: str, block: Float64Array, off: int, count: int, t_ms: int) -> Value:
    """Merge the partials of the (non-empty) window ``block`` for one aggregation."""
    if function == "count":
        return count
    if function == "time_since_last":
        # Empty tiles hold last_ts = -inf; the window is non-empty, so the max is a time.
        return int(t_ms) - int(block[:, off + FIELD_LAST_TS].max())
    if function == "sum":
        return float(block[:, off + FIELD_SUM].sum())
    if function == "mean":
        return float(block[:, off + FIELD_SUM].sum()) / count
    if function == "min":
        return float(block[:, off + FIELD_MIN].min())
    if function == "max":
        return float(block[:, off + FIELD_MAX].max())
    if function == "last":
        ts = block[:, off + FIELD_LAST_TS]
        best = ts == ts.max()
        candidates = np.flatnonzero(best)
        row = int(candidates[np.argmax(block[candidates, off + FIELD_LAST_POS])])
        return float(block[row, off + FIELD_LAST_VALUE])
    # stddev: M2 = sum(M2_i) + sum(n_i * (mean_i - mean)^2) over non-empty tiles.
    n_i = block[:, off + FIELD_COUNT]
    s_i = block[:, off + FIELD_SUM]
    nonempty = n_i > 0
    mean = float(s_i.sum()) / count
    deviation = s_i[nonempty] / n_i[nonempty] - mean
    m2 = float(block[:, off + FIELD_M2].sum()) + float((n_i[nonempty] * deviation * deviation).sum())
    return math.sqrt(max(m2, 0.0) / count)
