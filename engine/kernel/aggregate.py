"""Batch aggregation of events into tile partials, and exact merging of partials.

All functions are vectorized over events and tiles; none loops over events in
Python. Inputs are never modified; outputs may share memory with inputs (for
example when one side of a merge is empty), so treat them as read-only.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import ParamSpec, TypeVar

import numpy as np
import numpy.typing as npt

from engine.kernel.exceptions import KernelInputError
from engine.kernel.layout import (
    FIELD_COUNT,
    FIELD_LAST_POS,
    FIELD_LAST_TS,
    FIELD_LAST_VALUE,
    FIELD_M2,
    FIELD_MAX,
    FIELD_MIN,
    FIELD_SUM,
    FIELDS_PER_COLUMN,
    PartialLayout,
)
from engine.kernel.sketches import BlobArray, build_sketches, empty_blobs

Int64Array = npt.NDArray[np.int64]
Float64Array = npt.NDArray[np.float64]
IntOrArray = TypeVar("IntOrArray", int, Int64Array)

_P = ParamSpec("_P")
_R = TypeVar("_R")


def overflow_is_a_value(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run ``fn`` with numpy's overflow and invalid-operation warnings off.

    Sums of finite values near 1e308 overflow to infinity (and stddev to NaN); that is
    the value, carried through merges and reported by serving as ``INVALID``, not a
    warning on stderr (docs/semantics.md section 3).
    """

    @functools.wraps(fn)
    def quiet(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with np.errstate(over="ignore", invalid="ignore"):
            return fn(*args, **kwargs)

    return quiet


def as_int64_vector(name: str, array: npt.ArrayLike, length: int | None = None) -> Int64Array:
    """``array`` as a 1-d int64 array, checking its length when ``length`` is given."""
    out = np.asarray(array)
    if out.ndim != 1:
        raise KernelInputError(
            f"kernel input '{name}': expected a 1-d array, got shape {out.shape}",
            hint="pass one value per event or per tile",
        )
    if out.dtype != np.int64:
        if out.size and not np.issubdtype(out.dtype, np.integer):
            raise KernelInputError(
                f"kernel input '{name}': expected an integer array, got dtype {out.dtype}",
                hint="tile ids, event times and positions are int64 milliseconds/ids",
            )
        out = out.astype(np.int64)
    if length is not None and len(out) != length:
        raise KernelInputError(
            f"kernel input '{name}': expected {length} values, got {len(out)}",
            hint="every per-event array must have one entry per event",
        )
    return out


def as_partials(layout: PartialLayout, name: str, array: npt.ArrayLike, rows: int) -> Float64Array:
    """``array`` as a float64 ``(rows, layout.width)`` array."""
    out = np.asarray(array, dtype=np.float64)
    if out.shape != (rows, layout.width):
        raise KernelInputError(
            f"kernel input '{name}': expected shape ({rows}, {layout.width}), got {out.shape}",
            hint=f"one row of {FIELDS_PER_COLUMN} fields per column {layout.columns!r} per tile"
            + (" plus first_ts" if layout.tracks_first_event else ""),
        )
    return out


def check_sorted_tiles(name: str, tiles: Int64Array) -> None:
    """Raise unless ``tiles`` is strictly increasing (sorted, no duplicates)."""
    if len(tiles) > 1 and not bool(np.all(tiles[1:] > tiles[:-1])):
        bad = int(np.flatnonzero(tiles[1:] <= tiles[:-1])[0])
        raise KernelInputError(
            f"kernel input '{name}': expected strictly increasing tile ids, got "
            f"{int(tiles[bad])} then {int(tiles[bad + 1])} at index {bad}",
            hint="tile sets come from aggregate_batch/merge_tile_sets/decode_tiles, sorted",
        )


_RADIX_DIGIT = 16
_RADIX_MASK = (1 << _RADIX_DIGIT) - 1


def _stable_argsort(key: Int64Array) -> npt.NDArray[np.intp]:
    """Stable argsort of non-negative int64 keys.

    Keys below 2**32 are sorted by two stable passes over 16-bit digits (least
    significant first): numpy sorts uint16 with a linear radix sort, several times
    faster than its merge sort of int64.
    """
    top = int(key.max()) if len(key) else 0
    if top >= 1 << (2 * _RADIX_DIGIT):
        return np.argsort(key, kind="stable")
    order = np.argsort((key & _RADIX_MASK).astype(np.uint16), kind="stable")
    if top <= _RADIX_MASK:
        return order
    high = (key >> _RADIX_DIGIT).astype(np.uint16)[order]
    return order[np.argsort(high, kind="stable")]


def group_order(codes: Int64Array, tiles: Int64Array, ts: Int64Array, pos: Int64Array) -> npt.NDArray[np.intp]:
    """The permutation ``np.lexsort((pos, ts, tiles, codes))``, computed faster.

    (code, tile) pairs are numbered by one int64 key that sorts like the pair. When
    each pair's events already come in (event time, position) order, a stable sort by
    that key alone gives the same permutation, because ties keep their input order:
    so it is when the whole batch is in time order (most Kafka batches), and when only
    each entity's events are (history replay: a slice is ordered by entity bucket,
    then time), which is checked on the sorted events; otherwise time and position
    are sorted too.
    """
    n = len(codes)
    if n < 2:
        return np.arange(n, dtype=np.intp)
    code_lo, code_hi = int(codes.min()), int(codes.max())
    tile_lo, tile_hi = int(tiles.min()), int(tiles.max())
    span = tile_hi - tile_lo + 1
    if code_lo < 0 or (code_hi + 1) * span >= 2**62:
        return np.lexsort((pos, ts, tiles, codes))
    key = codes * span + (tiles - tile_lo)
    in_time_order = bool(np.all((ts[1:] > ts[:-1]) | ((ts[1:] == ts[:-1]) & (pos[1:] >= pos[:-1]))))
    order = _stable_argsort(key)
    if in_time_order:
        return order
    key_s, ts_s, pos_s = key[order], ts[order], pos[order]
    later = (ts_s[1:] > ts_s[:-1]) | ((ts_s[1:] == ts_s[:-1]) & (pos_s[1:] >= pos_s[:-1]))
    if bool(np.all(later | (key_s[1:] != key_s[:-1]))):
        return order
    return np.lexsort((pos, ts, key))


@overflow_is_a_value
def aggregate_batch(
    layout: PartialLayout,
    entity_codes: npt.ArrayLike,
    tiles: npt.ArrayLike,
    event_ts: npt.ArrayLike,
    positions: npt.ArrayLike,
    values: npt.ArrayLike,
    order: npt.NDArray[np.intp] | None = None,
) -> tuple[Int64Array, Int64Array, Float64Array]:
    """Group events by ``(entity code, tile)`` and compute each group's partials.

    ``entity_codes``, ``tiles`` (``event_ts // interval_ms``), ``event_ts`` and
    ``positions`` (:func:`engine.kernel.layout.encode_positions`) hold one int64 per
    event; ``values`` is float64 ``(n_events, len(layout.columns))`` (a 1-d array is
    accepted for a single column). Every value must be finite.

    Returns ``(entity_codes_u, tiles_u, partials)``: one row per distinct group,
    sorted by entity code then tile, ``partials`` of shape ``(groups, layout.width)``.
    ``order`` is :func:`group_order` of these events when the caller already has it
    (it sorts the same events for :func:`aggregate_sketches`).
    """
    codes = as_int64_vector("entity_codes", entity_codes)
    n = len(codes)
    tile_ids = as_int64_vector("tiles", tiles, n)
    ts = as_int64_vector("event_ts", event_ts, n)
    pos = as_int64_vector("positions", positions, n)
    vals = np.asarray(values, dtype=np.float64)
    n_cols = len(layout.columns)
    if vals.ndim == 1 and n_cols == 1:
        vals = vals.reshape(n, 1)
    if vals.shape != (n, n_cols):
        raise KernelInputError(
            f"kernel input 'values': expected shape ({n}, {n_cols}), got {vals.shape}",
            hint=f"one column per layout column {layout.columns!r}, one row per event",
        )
    if n == 0:
        empty_ids = np.empty(0, dtype=np.int64)
        return empty_ids, empty_ids.copy(), np.empty((0, layout.width), dtype=np.float64)
    if not bool(np.isfinite(vals).all()):
        raise KernelInputError(
            "kernel input 'values': expected finite numbers, got NaN or infinity",
            hint="the decoder refuses NaN/Infinity with reason wrong_type before aggregation",
        )

    # Sorting by (entity, tile, event time, position) puts each group's "last"
    # event at the group's end, so no separate argmax is needed.
    if order is None:
        order = group_order(codes, tile_ids, ts, pos)
    codes_s = codes[order]
    tiles_s = tile_ids[order]
    vals_s = vals[order]
    boundary = np.empty(n, dtype=bool)
    boundary[0] = True
    np.not_equal(codes_s[1:], codes_s[:-1], out=boundary[1:])
    boundary[1:] |= tiles_s[1:] != tiles_s[:-1]
    starts = np.flatnonzero(boundary)
    ends = np.append(starts[1:], n)
    counts = (ends - starts).astype(np.float64)
    group_of_event = np.cumsum(boundary) - 1

    sums = np.add.reduceat(vals_s, starts, axis=0)
    means = sums / counts[:, None]
    # Second pass around each group's own mean keeps m2 accurate for large values.
    deviations = vals_s - means[group_of_event]
    m2 = np.add.reduceat(deviations * deviations, starts, axis=0)
    last = order[ends - 1]

    out = np.empty((len(starts), n_cols, FIELDS_PER_COLUMN), dtype=np.float64)
    out[:, :, FIELD_COUNT] = counts[:, None]
    out[:, :, FIELD_SUM] = sums
    out[:, :, FIELD_M2] = m2
    out[:, :, FIELD_MIN] = np.minimum.reduceat(vals_s, starts, axis=0)
    out[:, :, FIELD_MAX] = np.maximum.reduceat(vals_s, starts, axis=0)
    out[:, :, FIELD_LAST_TS] = ts[last].astype(np.float64)[:, None]
    out[:, :, FIELD_LAST_POS] = pos[last].astype(np.float64)[:, None]
    out[:, :, FIELD_LAST_VALUE] = vals[last]
    partials = out.reshape(len(starts), layout.column_width)
    if layout.tracks_first_event:
        # Each group starts with its smallest (event time, position): its first_ts.
        first_ts = ts[order[starts]].astype(np.float64)[:, None]
        partials = np.concatenate([partials, first_ts], axis=1)
    return codes_s[starts], tiles_s[starts], partials


def aggregate_sketches(
    layout: PartialLayout,
    entity_codes: npt.ArrayLike,
    tiles: npt.ArrayLike,
    event_ts: npt.ArrayLike,
    positions: npt.ArrayLike,
    raw_values: Mapping[str, npt.NDArray[np.generic]],
    order: npt.NDArray[np.intp] | None = None,
) -> BlobArray:
    """The sketch blobs ``(groups, len(layout.sketch_slots))`` of the same groups, in
    the same order, as :func:`aggregate_batch` returns for these events (``order``:
    their :func:`group_order`, when the caller already has it).

    ``raw_values`` holds, per column of ``layout.sketch_columns``, the events' decoded
    values (an object array of ``str`` for string columns).
    """
    codes = as_int64_vector("entity_codes", entity_codes)
    n = len(codes)
    tile_ids = as_int64_vector("tiles", tiles, n)
    ts = as_int64_vector("event_ts", event_ts, n)
    pos = as_int64_vector("positions", positions, n)
    if n == 0 or not layout.sketch_slots:
        groups = 0 if n == 0 else len(group_starts(codes, tile_ids, ts, pos)[1])
        return empty_blobs(groups, len(layout.sketch_slots))
    for column in layout.sketch_columns:
        got = len(raw_values[column]) if column in raw_values else None
        if got != n:
            raise KernelInputError(
                f"kernel input 'raw_values[{column!r}]': expected {n} values, got {got}",
                hint="routing carries raw values for every column a sketch slot reads",
            )
    order, starts = group_starts(codes, tile_ids, ts, pos, order)
    return build_sketches(layout.sketch_slots, raw_values, order, starts, ts, pos)


def group_starts(
    codes: Int64Array,
    tiles: Int64Array,
    ts: Int64Array,
    pos: Int64Array,
    order: npt.NDArray[np.intp] | None = None,
) -> tuple[npt.NDArray[np.intp], Int64Array]:
    """``(order, starts)``: :func:`group_order` (``order`` when given) and the first
    sorted index of each (entity, tile) group."""
    if order is None:
        order = group_order(codes, tiles, ts, pos)
    codes_s, tiles_s = codes[order], tiles[order]
    boundary = np.ones(len(codes), dtype=bool)
    boundary[1:] = (codes_s[1:] != codes_s[:-1]) | (tiles_s[1:] != tiles_s[:-1])
    return order, np.flatnonzero(boundary).astype(np.int64)


@overflow_is_a_value
def merge_partials(layout: PartialLayout, a: npt.ArrayLike, b: npt.ArrayLike) -> Float64Array:
    """Merge two equally shaped ``(k, width)`` partial arrays row by row.

    count and sum add; m2 uses the parallel-variance update of Chan et al.
    (``m2 = m2_a + m2_b + delta**2 * n_a * n_b / n``); min/max take the extreme;
    ``last`` keeps the side with the greater ``(last_ts, last_pos)``; the view's
    ``first_ts`` takes the minimum. Empty rows are the identity, so merging with an
    empty row reproduces the other row exactly.
    """
    pa = np.asarray(a, dtype=np.float64)
    rows = pa.shape[0] if pa.ndim >= 1 else 0
    pa = as_partials(layout, "a", pa, rows)
    pb = as_partials(layout, "b", b, rows)
    k, n_cols, columns_end = rows, len(layout.columns), layout.column_width
    va = pa[:, :columns_end].reshape(k, n_cols, FIELDS_PER_COLUMN)
    vb = pb[:, :columns_end].reshape(k, n_cols, FIELDS_PER_COLUMN)
    out = np.empty_like(va)

    na, nb = va[:, :, FIELD_COUNT], vb[:, :, FIELD_COUNT]
    n = na + nb
    both = (na > 0) & (nb > 0)
    mean_a = np.divide(va[:, :, FIELD_SUM], na, out=np.zeros_like(na), where=both)
    mean_b = np.divide(vb[:, :, FIELD_SUM], nb, out=np.zeros_like(nb), where=both)
    delta = mean_b - mean_a
    weight = np.divide(na * nb, n, out=np.zeros_like(n), where=both)
    out[:, :, FIELD_COUNT] = n
    out[:, :, FIELD_SUM] = va[:, :, FIELD_SUM] + vb[:, :, FIELD_SUM]
    out[:, :, FIELD_M2] = va[:, :, FIELD_M2] + vb[:, :, FIELD_M2] + delta * delta * weight
    out[:, :, FIELD_MIN] = np.minimum(va[:, :, FIELD_MIN], vb[:, :, FIELD_MIN])
    out[:, :, FIELD_MAX] = np.maximum(va[:, :, FIELD_MAX], vb[:, :, FIELD_MAX])

    ts_a, ts_b = va[:, :, FIELD_LAST_TS], vb[:, :, FIELD_LAST_TS]
    take_b = (ts_b > ts_a) | ((ts_b == ts_a) & (vb[:, :, FIELD_LAST_POS] > va[:, :, FIELD_LAST_POS]))
    last = slice(FIELD_LAST_TS, FIELD_LAST_VALUE + 1)
    out[:, :, last] = np.where(take_b[:, :, None], vb[:, :, last], va[:, :, last])
    merged = out.reshape(k, columns_end)
    if layout.tracks_first_event:
        first_ts = np.minimum(pa[:, columns_end:], pb[:, columns_end:])
        merged = np.concatenate([merged, first_ts], axis=1)
    return merged


@overflow_is_a_value
def merge_tile_sets(
    layout: PartialLayout,
    tiles_a: npt.ArrayLike,
    partials_a: npt.ArrayLike,
    tiles_b: npt.ArrayLike,
    partials_b: npt.ArrayLike,
) -> tuple[Int64Array, Float64Array]:
    """Union of two tile sets of one entity, merging the partials of shared tiles.

    Both ``tiles_*`` must be strictly increasing int64 tile ids with one partial row
    each. Returns ``(tiles, partials)`` sorted by tile id.
    """
    ta = as_int64_vector("tiles_a", tiles_a)
    tb = as_int64_vector("tiles_b", tiles_b)
    pa = as_partials(layout, "partials_a", partials_a, len(ta))
    pb = as_partials(layout, "partials_b", partials_b, len(tb))
    check_sorted_tiles("tiles_a", ta)
    check_sorted_tiles("tiles_b", tb)
    if len(tb) == 0:
        return ta, pa
    if len(ta) == 0:
        return tb, pb
    if tb[0] > ta[-1]:  # the streaming common case: the batch only adds newer tiles
        return np.concatenate([ta, tb]), np.concatenate([pa, pb])

    union = np.union1d(ta, tb)
    ia = np.searchsorted(union, ta)
    ib = np.searchsorted(union, tb)
    out = np.empty((len(union), layout.width), dtype=np.float64)
    out[ia] = pa
    in_a = np.zeros(len(union), dtype=bool)
    in_a[ia] = True
    shared = in_a[ib]
    out[ib[~shared]] = pb[~shared]
    if bool(shared.any()):
        rows = ib[shared]
        out[rows] = merge_partials(layout, out[rows], pb[shared])
    return union, out
