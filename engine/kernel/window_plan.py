"""One entity's windows as of one time, in plain Python: the serving hot path.

:func:`engine.kernel.window.evaluate` pays a few microseconds of numpy call overhead
per aggregation, which dominates a request when an entity has a handful of tiles. A
:class:`WindowPlan` is compiled once per view and evaluates every aggregation of one
record over the record's bytes (memoryviews; count, sum, min and max of a window are
strided slices summed in C), sharing the count and sum of each (column, window)
between the aggregations that need them. Sketch and list aggregations merge their
window's blobs with :func:`engine.kernel.window.sketch_value` (once per slot and window,
shared by p50/p95/p99 of one sketch); a plan whose aggregations read no blob leaves
them undecoded. stddev and last merge row by row in Python,
so a plan with one of them hands records of more than :data:`_ROW_LOOP_MAX_TILES`
tiles to the vectorized :func:`engine.kernel.window.evaluate_unchecked`.

The rules are those of :func:`engine.kernel.window.evaluate` (docs/semantics.md
section 3, current tile taken whole). Counts, min, max and last are identical; sums,
means and standard deviations are summed in tile order (on the Python path) and may differ from numpy's
pairwise sums in the last bits (the documented tolerance, relative 1e-9).
"""

from __future__ import annotations

import math
import operator
import sys
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from engine.kernel.codec import HEADER, check_header, decode_sketches, partials_offset, unpack_arrays
from engine.kernel.exceptions import TileCodecError
from engine.kernel.layout import (
    COLUMN_VALUE_FUNCTIONS,
    FIELD_COUNT,
    FIELD_LAST_POS,
    FIELD_LAST_TS,
    FIELD_LAST_VALUE,
    FIELD_M2,
    FIELD_MAX,
    FIELD_MIN,
    FIELD_SUM,
    LIST_FUNCTIONS,
)
from engine.kernel.sketch_kinds import OverBound
from engine.kernel.sketches import BlobArray
from engine.kernel.view_spec import ViewSpec
from engine.kernel.window import ClosedMerges, Value, empty_value, evaluate_unchecked, sketch_value, tile_id

# Native-order memoryviews read the little-endian record in place (no copy, O(1)).
_IN_PLACE = sys.byteorder == "little"
# stddev and last merge row by row in Python; over more tiles than this the vectorized
# evaluate is faster (measured on user_spend, 11 aggregations with a 1-day stddev:
# 41 vs 54 us at 200 tiles, 183 vs 70 us at 1,441).
_ROW_LOOP_MAX_TILES = 256
# Tile-order check: a Python pass for short records, numpy above this many tiles
# (measured crossover: ~2 us each at 84 tiles, Python 5.7 us vs numpy 2.3 us at 200).
_PY_ORDER_CHECK_MAX = 128


@dataclass(frozen=True, slots=True)
class DecodedRecord:
    """One stored tile record: tile ids, row-major partials (``width`` per tile), max event time.

    ``tiles`` and ``flat`` are read-only views of the record's bytes on little-endian
    hosts (only the fields a window touches are ever converted to Python numbers).
    """

    tiles: Sequence[int]
    flat: Sequence[float]
    max_event_ts: int
    sketches: BlobArray | None = None  # (n_tiles, n_slots) blobs of a view with sketches


def decode_record(buf: bytes, width: int, n_slots: int = 0) -> DecodedRecord:
    """Unpack a record like :func:`engine.kernel.codec.decode_tiles`, with the same checks
    and errors, into sequences of Python numbers instead of arrays (and, for a view
    with ``n_slots`` sketch slots, its blobs)."""
    _, n_tiles, max_ts = check_header(buf, width)
    start = partials_offset(n_tiles)
    tiles: Sequence[int]
    flat: Sequence[float]
    sketches = decode_sketches(buf, n_slots) if n_slots else None
    if _IN_PLACE:
        view = memoryview(buf)
        tiles = view[HEADER.size : start].cast("q")
        flat = view[start : start + 8 * n_tiles * width].cast("d")
    else:
        tiles, flat = unpack_arrays(buf, n_tiles, width)
    _check_order(buf, tiles)
    return DecodedRecord(tiles, flat, max_ts, sketches)


def _check_order(buf: bytes, tiles: Sequence[int]) -> None:
    n = len(tiles)
    if n < 2:
        return
    if n <= _PY_ORDER_CHECK_MAX:
        ordered = all(map(operator.lt, tiles[:-1], tiles[1:]))
    else:
        ids = np.frombuffer(buf, dtype="<i8", count=n, offset=HEADER.size)
        ordered = bool((ids[1:] > ids[:-1]).all())
    if not ordered:
        bad = next(i for i in range(n - 1) if tiles[i + 1] <= tiles[i])
        raise TileCodecError(
            f"tile record: field 'tiles': expected strictly increasing ids, got "
            f"{tiles[bad]} then {tiles[bad + 1]} at index {bad}",
            hint="the stored value is corrupt",
        )


@dataclass(frozen=True)
class WindowPlan:
    """Compiled evaluation of one view's aggregations for a single entity."""

    spec: ViewSpec
    names: tuple[str, ...] = field(init=False)
    has_default: tuple[bool, ...] = field(init=False)
    windows: tuple[int, ...] = field(init=False)  # distinct window lengths in tiles
    # Distinct (field offset, index into ``windows``): one count and one sum each.
    totals: tuple[tuple[int, int], ...] = field(init=False)
    # Per aggregation, declared order: (function, index into ``totals``, field offset,
    # index into ``windows``, value of an empty window, sketch slot index or None).
    steps: tuple[tuple[str, int, int, int, Value, int | None], ...] = field(init=False)
    row_loops: bool = field(init=False)  # some aggregation (stddev, last) loops over rows
    # Aggregations whose value moves with t for a fixed record and current tile
    # (time_since_last, t minus the newest event), and those whose value is a list.
    time_linear: tuple[int, ...] = field(init=False)
    list_valued: tuple[int, ...] = field(init=False)
    # min/max/last of an int column, whose double partials hold ints (value_is_int).
    int_valued: frozenset[int] = field(init=False)
    has_sketches: bool = field(init=False)  # some aggregation reads sketch blobs

    def __post_init__(self) -> None:
        spec = self.spec
        windows = tuple(sorted(set(spec.window_tiles)))
        pairs = [(off, windows.index(w)) for off, w in zip(spec.field_offsets, spec.window_tiles, strict=True)]
        totals = tuple(dict.fromkeys(pairs))
        set_ = object.__setattr__
        set_(self, "names", spec.output_names)
        set_(self, "has_default", tuple(a.default is not None for a in spec.aggregations))
        set_(self, "windows", windows)
        set_(self, "totals", totals)
        set_(self, "row_loops", any(a.function in ("stddev", "last") for a in spec.aggregations))
        set_(self, "has_sketches", any(j is not None for j in spec.sketch_index))
        functions = [a.function for a in spec.aggregations]
        set_(self, "time_linear", tuple(i for i, f in enumerate(functions) if f == "time_since_last"))
        set_(self, "list_valued", tuple(i for i, f in enumerate(functions) if f in LIST_FUNCTIONS))
        set_(
            self,
            "int_valued",
            frozenset(
                i for i, a in enumerate(spec.aggregations) if a.int_valued and a.function in COLUMN_VALUE_FUNCTIONS
            ),
        )
        set_(
            self,
            "steps",
            tuple(
                (a.function, totals.index(pair), pair[0], pair[1], empty_value(a), j)
                for a, pair, j in zip(spec.aggregations, pairs, spec.sketch_index, strict=True)
            ),
        )

    def evaluate(
        self, record: DecodedRecord | None, t_ms: int, closed: ClosedMerges | None = None
    ) -> tuple[list[Value], list[bool]]:
        """Values in declared order and, per aggregation, whether its window was empty.
        ``closed`` keeps the merges of sketch windows' closed tiles between evaluations of
        one entity (:func:`engine.kernel.window.sketch_value`)."""
        if record is None or not record.tiles:
            fills = [step[4] for step in self.steps]
            if self.list_valued:  # a list function's [] is fresh per answer: callers may extend it
                fills = [list(v) if isinstance(v, list) else v for v in fills]
            return fills, [True] * len(self.steps)
        tiles, flat = record.tiles, record.flat
        width = self.spec.layout.width
        if self.row_loops and len(tiles) > _ROW_LOOP_MAX_TILES:
            return self._evaluate_vectorized(record, t_ms, closed)
        current = tile_id(t_ms, self.spec.interval_ms)
        hi = bisect_right(tiles, current)
        los = [bisect_left(tiles, current - w, 0, hi) for w in self.windows]
        # A field of the rows [lo, hi) is the strided slice flat[lo*width+f : hi*width+f : width];
        # sum/min/max over it run in C.
        end = hi * width
        totals: list[tuple[int, float]] = []
        for off, w in self.totals:
            start, stop = los[w] * width + off, end + off
            totals.append(
                (
                    int(sum(flat[start + FIELD_COUNT : stop + FIELD_COUNT : width])),
                    float(sum(flat[start + FIELD_SUM : stop + FIELD_SUM : width])),
                )
            )
        values: list[Value] = []
        empty: list[bool] = []
        merged: dict[tuple[int, int, int], bytes] = {}  # one merge per (slot, window) for p50/p95/p99
        split: int | None = None  # first row of the current tile, once a sketch needs it
        for index, (function, slot, off, w, fill, sketch_slot) in enumerate(self.steps):
            count, total = totals[slot]
            if count == 0:
                values.append(list(fill) if isinstance(fill, list) else fill)
                empty.append(True)
                continue
            empty.append(False)
            if sketch_slot is not None:
                agg = self.spec.aggregations[index]
                if split is None:
                    split = bisect_left(tiles, current, 0, hi)
                value = sketch_value(self.spec, agg, sketch_slot, record.sketches, los[w], hi, merged, closed, split)
                values.append(None if isinstance(value, OverBound) else value)
            elif function == "count":
                values.append(count)
            elif function == "sum":
                values.append(total)
            elif function == "mean":
                values.append(total / count)
            elif function == "first_seen":
                # The oldest event of the window: the smallest first_ts (+inf in empty tiles).
                first = self.spec.layout.first_event_field
                values.append(int(min(flat[los[w] * width + first : end + first : width])))
            elif function == "time_since_last":
                # The newest event of the window: the greatest last_ts (-inf in empty tiles).
                newest = max(flat[los[w] * width + off + FIELD_LAST_TS : end + off + FIELD_LAST_TS : width])
                values.append(t_ms - int(newest))
            elif index in self.int_valued:
                # min/max/last of an int column: the double partial holds the int exactly.
                values.append(int(_reduce(function, flat, width, off, los[w], hi, count, total)))
            else:
                values.append(_reduce(function, flat, width, off, los[w], hi, count, total))
        return values, empty

    def _evaluate_vectorized(
        self, record: DecodedRecord, t_ms: int, closed: ClosedMerges | None
    ) -> tuple[list[Value], list[bool]]:
        width = self.spec.layout.width
        tiles = np.asarray(record.tiles, dtype=np.int64)  # no copy for memoryviews
        parts = np.asarray(record.flat, dtype=np.float64).reshape(len(tiles), width)
        result = evaluate_unchecked(self.spec, tiles, parts, t_ms, record.sketches, closed)
        return [result.values[name] for name in self.names], list(result.empty)


def _reduce(
    function: str, flat: Sequence[float], width: int, off: int, lo: int, hi: int, count: int, total: float
) -> float:
    """min, max, last or stddev of one non-empty window, with the merge rules of
    ``window._reduce_block``."""
    start, stop = lo * width + off, hi * width + off
    # Ingest refuses NaN and infinite values, so min/max never meet a NaN here.
    if function == "min":
        return float(min(flat[start + FIELD_MIN : stop + FIELD_MIN : width]))
    if function == "max":
        return float(max(flat[start + FIELD_MAX : stop + FIELD_MAX : width]))
    if function == "last":
        # Greatest (last_ts, last_pos); the first row wins a full tie, like argmax.
        best_ts, best_pos, best = -math.inf, -math.inf, math.nan
        for row in range(start, stop, width):
            ts, pos = flat[row + FIELD_LAST_TS], flat[row + FIELD_LAST_POS]
            if ts > best_ts or (ts == best_ts and pos > best_pos):
                best_ts, best_pos, best = ts, pos, flat[row + FIELD_LAST_VALUE]
        return best
    # stddev: M2 = sum(M2_i) + sum(n_i * (mean_i - mean)^2) over non-empty tiles.
    mean = total / count
    spread = 0.0
    counts = flat[start + FIELD_COUNT : stop + FIELD_COUNT : width]
    sums = flat[start + FIELD_SUM : stop + FIELD_SUM : width]
    for n_i, s_i in zip(counts, sums, strict=True):
        if n_i > 0:
            d = s_i / n_i - mean
            spread += n_i * d * d
    m2 = float(sum(flat[start + FIELD_M2 : stop + FIELD_M2 : width]))
    return math.sqrt(max(m2 + spread, 0.0) / count)
