"""Window evaluation of many ``(entity, t)`` queries at once, vectorized (docs/semantics.md
section 3): the batch counterpart of :func:`engine.kernel.window.evaluate`, with the same
rules (current tile taken whole, the same empty values and defaults), used by serving's
many-entity requests and the kernel's property tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from engine.kernel.aggregate import as_int64_vector, as_partials, overflow_is_a_value
from engine.kernel.exceptions import KernelInputError
from engine.kernel.layout import (
    FIELD_COUNT,
    FIELD_LAST_TS,
    FIELD_LAST_VALUE,
    FIELD_M2,
    FIELD_MAX,
    FIELD_MIN,
    FIELD_SUM,
    LIST_FUNCTIONS,
    AggregationSpec,
)
from engine.kernel.sketch_kinds import OverBound
from engine.kernel.sketches import BlobArray
from engine.kernel.view_spec import ViewSpec
from engine.kernel.window import (
    BoolArray,
    Float64Array,
    Int64Array,
    Value,
    WindowResult,
    empty_value,
    sketch_value,
    tile_id,
    values_are_int,
)

# evaluate_many gathers the tiles of every stddev window; this bounds the gather's memory.
_GATHER_CHUNK = 1 << 22


@dataclass(frozen=True)
class WindowBatch:
    """Values of many ``(entity, t)`` queries, one array per aggregation.

    ``values[name]`` has one entry per query: int64 for ``count`` and
    ``time_since_last`` (float64 when the default is fractional, or when
    ``time_since_last`` has no default and needs NaN; so are min/max/last of an int
    column, which ``row`` and ``to_pylists`` give as ints), an object array of lists for the list
    functions (``[]`` where empty), float64 otherwise. Where a window is empty it holds the
    default if one is declared, else ``0``/``0.0`` for count/sum and NaN otherwise.
    ``empty`` is bool ``(n_queries, n_aggregations)`` in declared order.
    """

    spec: ViewSpec
    values: dict[str, npt.NDArray[np.generic]]
    empty: BoolArray
    # bool (n_queries, n_aggregations): count_distinct over its bound (value None).
    over_bound: BoolArray | None = None

    def __len__(self) -> int:
        return int(self.empty.shape[0])

    @property
    def defaulted(self) -> BoolArray:
        """``empty`` restricted to aggregations that declare a default."""
        has_default = np.array([a.default is not None for a in self.spec.aggregations], dtype=bool)
        out: BoolArray = self.empty & has_default[None, :]
        return out

    def row(self, i: int) -> WindowResult:
        """Query ``i`` as a :class:`WindowResult` (None for empty windows without default)."""
        values: dict[str, Value] = {}
        empty = tuple(bool(x) for x in self.empty[i])
        for agg, is_empty in zip(self.spec.aggregations, empty, strict=True):
            raw = self.values[agg.output_name][i]
            if is_empty:
                values[agg.output_name] = empty_value(agg)
            elif isinstance(raw, list):  # a list function's value
                values[agg.output_name] = raw
            elif math.isnan(float(raw)):  # an over-bound count_distinct
                values[agg.output_name] = None
            elif values_are_int(agg):
                values[agg.output_name] = int(raw)
            else:
                values[agg.output_name] = float(raw)
        defaulted = tuple(e and a.default is not None for e, a in zip(empty, self.spec.aggregations, strict=True))
        over = (False,) * len(empty) if self.over_bound is None else tuple(bool(x) for x in self.over_bound[i])
        return WindowResult(values, empty, defaulted, over)

    def to_pylists(self) -> dict[str, list[Value]]:
        """Every aggregation as a Python list, None for empty windows without default."""
        out: dict[str, list[Value]] = {}
        for j, agg in enumerate(self.spec.aggregations):
            column = self.values[agg.output_name]
            fill = empty_value(agg)
            values: list[Value]
            if agg.int_valued and column.dtype != np.int64:
                # A fractional default, NaN for empty windows or double partials (min/max/
                # last of an int column) made the column float; empty entries are replaced
                # by the fill below.
                values = [v if math.isnan(v) else int(v) for v in column.tolist()]
            else:
                values = column.tolist()  # int64 -> int, float64 -> float already
            for i in np.flatnonzero(self.empty[:, j]).tolist():
                values[i] = list(fill) if isinstance(fill, list) else fill  # one [] per row
            if self.over_bound is not None:
                for i in np.flatnonzero(self.over_bound[:, j]).tolist():
                    values[i] = None
            out[agg.output_name] = values
        return out


def evaluate_many(
    spec: ViewSpec,
    tiles: npt.ArrayLike,
    partials: npt.ArrayLike,
    indptr: npt.ArrayLike,
    segments: npt.ArrayLike,
    t_ms: npt.ArrayLike,
    sketches: BlobArray | None = None,
) -> WindowBatch:
    """Evaluate ``spec`` for many ``(entity, t)`` queries at once, vectorized.

    Tile sets are passed CSR-style: entity ``j``'s strictly increasing tile ids are
    ``tiles[indptr[j]:indptr[j+1]]`` with partial rows ``partials[indptr[j]:indptr[j+1]]``
    (``indptr`` has ``n_entities + 1`` entries, starts at 0 and ends at ``len(tiles)``;
    empty entities are allowed). Query ``q`` evaluates entity ``segments[q]`` as of
    ``t_ms[q]`` (``t_ms`` may be a scalar shared by all queries). The same
    whole-current-tile rule as :func:`evaluate` applies.

    count uses exact integer prefix sums; sum/min/max/last reduce each window with
    ``ufunc.reduceat`` (no float prefix-sum cancellation); stddev gathers each
    window's tiles and merges them exactly like :func:`evaluate`.
    """
    tile_ids = as_int64_vector("tiles", tiles)
    parts = as_partials(spec.layout, "partials", partials, len(tile_ids))
    ptr = as_int64_vector("indptr", indptr)
    segs = as_int64_vector("segments", segments)
    _check_csr(tile_ids, ptr, segs)
    return evaluate_many_unchecked(spec, tile_ids, parts, ptr, segs, t_ms, sketches)


@overflow_is_a_value
def evaluate_many_unchecked(
    spec: ViewSpec,
    tile_ids: Int64Array,
    parts: Float64Array,
    ptr: Int64Array,
    segs: Int64Array,
    t_ms: npt.ArrayLike,
    sketches: BlobArray | None = None,
) -> WindowBatch:
    """:func:`evaluate_many` without its input checks (int64/float64 arrays, valid CSR).

    For tile sets from :func:`engine.kernel.batch_merge.decode_many`, which already
    checked every record (width, length, strictly increasing tiles).
    """
    n_tiles = len(tile_ids)
    n_queries = len(segs)
    times = np.broadcast_to(np.asarray(t_ms, dtype=np.int64), (n_queries,))

    current = tile_id(times, spec.interval_ms)
    locate = _Locator(tile_ids, ptr)
    hi = locate(segs, current, "right")
    lo_by_window = {w: locate(segs, current - w, "left") for w in set(spec.window_tiles)}
    counts_cache: dict[int, Int64Array] = {}
    cache: dict[tuple[str, int, int], npt.NDArray[np.generic]] = {}

    def count_prefix(off: int) -> Int64Array:
        if off not in counts_cache:
            prefix = np.zeros(n_tiles + 1, dtype=np.int64)
            np.cumsum(parts[:, off + FIELD_COUNT].astype(np.int64), out=prefix[1:])
            counts_cache[off] = prefix
        return counts_cache[off]

    def reduce(kind: str, off: int, w: int) -> npt.NDArray[np.generic]:
        # Aggregations sharing column and window (mean and sum, say) reduce once.
        key = (kind, off, w)
        if key not in cache:
            cache[key] = _window_reduce(kind, parts, off, lo_by_window[w], hi)
        return cache[key]

    values: dict[str, npt.NDArray[np.generic]] = {}
    empty = np.empty((n_queries, len(spec.aggregations)), dtype=bool)
    over_bound = np.zeros((n_queries, len(spec.aggregations)), dtype=bool)
    merged: dict[tuple[int, int, int], bytes] = {}  # (slot, lo, hi) -> merged window (sketch_value)
    for j, (agg, off, w, slot_index) in enumerate(
        zip(spec.aggregations, spec.field_offsets, spec.window_tiles, spec.sketch_index, strict=True)
    ):
        lo = lo_by_window[w]
        prefix = count_prefix(off)
        counts = prefix[hi] - prefix[lo]
        is_empty = counts == 0
        empty[:, j] = is_empty

        result: npt.NDArray[np.generic]
        if agg.function == "count":
            result = counts.copy()
        elif agg.function == "sum":
            result = reduce("sum", off, w).copy()
        elif agg.function == "mean":
            result = reduce("sum", off, w) / np.maximum(counts, 1)
        elif agg.function in ("min", "max", "last"):
            result = reduce(agg.function, off, w).copy()
        elif agg.function == "time_since_last":
            newest = reduce("last_ts", off, w)
            # Empty windows hold -inf here; they are overwritten by the empty value.
            result = times - np.where(is_empty, 0.0, newest).astype(np.int64)
        elif slot_index is not None and agg.function in LIST_FUNCTIONS:
            # A list per query (an object array): [] where the window is empty.
            lists = np.empty(n_queries, dtype=object)
            for q in range(n_queries):
                lists[q] = (
                    [] if is_empty[q] else sketch_value(spec, agg, slot_index, sketches, int(lo[q]), int(hi[q]), merged)
                )
            values[agg.output_name] = lists
            continue
        elif slot_index is not None:
            # Sketches merge blob by blob: one Python merge per window tile.
            result = np.full(n_queries, np.nan)
            for q in np.flatnonzero(~is_empty).tolist():
                value = sketch_value(spec, agg, slot_index, sketches, int(lo[q]), int(hi[q]), merged)
                if isinstance(value, OverBound):
                    over_bound[q, j] = True
                elif value is not None:
                    result[q] = value
        elif agg.function == "first_seen":
            oldest = reduce("first_ts", spec.layout.first_event_field, w)
            result = np.where(is_empty, 0.0, oldest).astype(np.int64)
        else:
            result = _window_stddev(parts, off, lo, hi, counts, reduce("sum", off, w))
        values[agg.output_name] = _fill_empty(agg, result, is_empty)
    return WindowBatch(spec, values, empty, over_bound if spec.layout.sketch_slots else None)


def _fill_empty(agg: AggregationSpec, result: npt.NDArray[np.generic], is_empty: BoolArray) -> npt.NDArray[np.generic]:
    fill = empty_value(agg)
    if fill is None or (agg.int_valued and not values_are_int(agg)):
        # NaN marks an empty window without default; it needs a float array (integer
        # values stay exact: they are event-time differences, far below 2**53).
        result = result.astype(np.float64)
    result[is_empty] = np.nan if fill is None else fill
    return result


def _check_csr(tiles: Int64Array, indptr: Int64Array, segments: Int64Array) -> None:
    n_entities = len(indptr) - 1
    if n_entities < 0 or int(indptr[0]) != 0 or int(indptr[-1]) != len(tiles) or bool(np.any(np.diff(indptr) < 0)):
        raise KernelInputError(
            f"kernel input 'indptr': expected non-decreasing offsets from 0 to {len(tiles)}, "
            f"got {indptr[:3].tolist()}...{indptr[-3:].tolist()} ({len(indptr)} entries)",
            hint="indptr[j]:indptr[j+1] is entity j's slice of tiles; len = entities + 1",
        )
    if len(segments) and (int(segments.min()) < 0 or int(segments.max()) >= n_entities):
        raise KernelInputError(
            f"kernel input 'segments': expected entity indexes 0..{n_entities - 1}, "
            f"got {int(segments.min())}..{int(segments.max())}",
            hint="segments[q] indexes into indptr",
        )
    if len(tiles) > 1:
        increasing = tiles[1:] > tiles[:-1]
        increasing[indptr[1:-1][(indptr[1:-1] > 0) & (indptr[1:-1] < len(tiles))] - 1] = True
        if not bool(increasing.all()):
            bad = int(np.flatnonzero(~increasing)[0])
            raise KernelInputError(
                f"kernel input 'tiles': expected strictly increasing tile ids within each "
                f"entity, got {int(tiles[bad])} then {int(tiles[bad + 1])} at index {bad}",
                hint="concatenate per-entity tile sets as decoded, without re-sorting",
            )


class _Locator:
    """Vectorized ``searchsorted`` of many queries, each within its own entity's tiles.

    Tiles are keyed ``entity * span + (tile - base + 1)``, which is globally sorted;
    query tiles are clipped to ``[base - 1, max + 1]`` first so the keys of different
    entities never interleave. Falls back to one ``searchsorted`` per queried entity
    when the keys would overflow int64.
    """

    def __init__(self, tiles: Int64Array, indptr: Int64Array) -> None:
        self.tiles = tiles
        self.indptr = indptr
        self.keys: Int64Array | None = None
        if len(tiles) == 0:
            return
        self.base = int(tiles.min())
        self.span = int(tiles.max()) - self.base + 3
        if len(indptr) * self.span < 2**62:
            owner = np.repeat(np.arange(len(indptr) - 1, dtype=np.int64), np.diff(indptr))
            self.keys = owner * self.span + (tiles - self.base + 1)

    def __call__(self, segments: Int64Array, query: Int64Array, side: str) -> Int64Array:
        if len(self.tiles) == 0:
            return np.zeros(len(segments), dtype=np.int64)
        if self.keys is not None:
            # minimum/maximum rather than np.clip: the same values at a third of the cost
            # (np.clip's dispatch takes ~6 us, a tenth of a many-entity request's windows).
            clipped = np.minimum(np.maximum(query - self.base + 1, 0), self.span - 1)
            found = np.searchsorted(self.keys, segments * self.span + clipped, side=side)  # type: ignore[call-overload]
            return np.asarray(found, dtype=np.int64)
        out = np.empty(len(segments), dtype=np.int64)
        order = np.argsort(segments, kind="stable")
        sorted_segs = segments[order]
        cuts = np.flatnonzero(np.diff(sorted_segs)) + 1
        for group in np.split(order, cuts):
            seg = int(segments[group[0]])
            start, stop = int(self.indptr[seg]), int(self.indptr[seg + 1])
            found = np.searchsorted(self.tiles[start:stop], query[group], side=side)  # type: ignore[call-overload]
            out[group] = start + found
        return out


def _window_reduce(kind: str, parts: Float64Array, off: int, lo: Int64Array, hi: Int64Array) -> npt.NDArray[np.generic]:
    """Reduce every window ``[lo[q], hi[q])`` of one column's field with ``reduceat``.

    Rows are padded with one neutral sentinel so ``hi == len`` is a valid index; the
    entries of empty windows are garbage and are overwritten by the caller.
    """
    n = parts.shape[0]
    if len(lo) == 0 or n == 0:
        return np.zeros(len(lo), dtype=np.float64)
    if kind == "last":
        # An entity's tile i only holds events with i*g <= e < (i+1)*g, so within an
        # entity the (last_ts, last_pos) key grows with the tile index: the window's
        # last event is in its last non-empty tile, no sort needed.
        nonempty = parts[:, off + FIELD_COUNT] > 0
        last_nonempty = np.maximum.accumulate(np.where(nonempty, np.arange(n), -1))
        row = last_nonempty[np.maximum(hi - 1, 0)]
        valid = (hi > lo) & (row >= lo)
        return np.where(valid, parts[np.maximum(row, 0), off + FIELD_LAST_VALUE], np.nan)
    field, ufunc, sentinel = {
        "sum": (FIELD_SUM, np.add, 0.0),
        "min": (FIELD_MIN, np.minimum, math.inf),
        "max": (FIELD_MAX, np.maximum, -math.inf),
        "last_ts": (FIELD_LAST_TS, np.maximum, -math.inf),
        "first_ts": (0, np.minimum, math.inf),  # off is the view's first_ts field itself
    }[kind]
    idx = np.empty(2 * len(lo), dtype=np.intp)
    idx[0::2] = lo
    idx[1::2] = hi
    column = np.empty(n + 1, dtype=np.float64)
    column[:n] = parts[:, off + field]
    column[n] = sentinel
    return np.asarray(ufunc.reduceat(column, idx)[0::2], dtype=np.float64)


def _window_stddev(
    parts: Float64Array,
    off: int,
    lo: Int64Array,
    hi: Int64Array,
    counts: Int64Array,
    sums: npt.NDArray[np.generic],
) -> Float64Array:
    """Population stddev per window, merging each window's tiles like :func:`evaluate`."""
    out = np.full(len(lo), np.nan, dtype=np.float64)
    queries = np.flatnonzero(counts > 0)
    if len(queries) == 0:
        return out
    lengths = hi[queries] - lo[queries]
    ends = np.cumsum(lengths)
    # Chunk boundaries so each gather holds at most about _GATHER_CHUNK rows.
    cuts = np.unique(np.searchsorted(ends, np.arange(_GATHER_CHUNK, int(ends[-1]), _GATHER_CHUNK)))
    for chunk in np.split(np.arange(len(queries)), cuts + 1 if len(cuts) else []):
        if len(chunk) == 0:
            continue
        q = queries[chunk]
        length = lengths[chunk]
        starts = np.cumsum(length) - length
        rows = np.arange(int(length.sum()), dtype=np.int64) + np.repeat(lo[q] - starts, length)
        n_i = parts[rows, off + FIELD_COUNT]
        s_i = parts[rows, off + FIELD_SUM]
        total = counts[q].astype(np.float64)
        mean = np.asarray(sums[q], dtype=np.float64) / total
        nonempty = n_i > 0
        tile_mean = np.divide(s_i, n_i, out=np.zeros_like(s_i), where=nonempty)
        deviation = np.where(nonempty, tile_mean - np.repeat(mean, length), 0.0)
        terms = parts[rows, off + FIELD_M2] + n_i * deviation * deviation
        m2 = np.add.reduceat(terms, starts)
        out[q] = np.sqrt(np.maximum(m2, 0.0) / total)
    return out
