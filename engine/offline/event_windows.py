"""Event-level window evaluation for training sets: every (entity, t) query at once.

For every query (entity, t) and every aggregation the value is computed from the
entity's events with ``start(t) <= e <= t`` where ``start(t) = floor(t / g) * g - w``
(docs/semantics.md section 3), exactly, at event level. Events are sorted per entity
once, each query becomes an index range ``[lo, hi)`` into them through one
``np.searchsorted`` per bound, and the functions are read off that range (prefix sums,
``reduceat``, the row before ``hi``, a chunked two-pass stddev). Pure numpy; no
definitions involved.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow as pa

from engine.array_types import AnyArray
from engine.kernel.aggregate import overflow_is_a_value
from engine.kernel.layout import ANY_COLUMN_FUNCTIONS, LIST_FUNCTIONS, AggregationSpec
from engine.kernel.sketch_kinds import evaluate_blob
from engine.kernel.sketches import SketchSlot
from engine.kernel.window import empty_value, values_are_int, window_start_ms
from engine.offline.exceptions import TrainingSetError
from engine.timefmt import NO_EVENT_TS

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

_EPSILON = float(np.finfo(np.float64).eps)
# A compensated prefix-sum window is used when its rounding bound is below this fraction of
# its value (far inside the 1e-9 relative tolerance consistency checks allow).
_DOUBT_RELATIVE = 1e-12
# Upper bound on gathered event values per stddev chunk (memory ~ 8 bytes x 4 arrays).
_STDDEV_CHUNK = 1 << 22


def _bound(codes: I64, times: I64, q_codes: I64, q_times: I64, side: Literal["left", "right"]) -> I64:
    """Global index of the first event of entity q_code with time >= (left) / > (right) q_time.

    ``codes``/``times`` are sorted by (code, time); q_code -1 means "no events" and
    is handled by the caller.
    """
    emin, emax = int(times.min()), int(times.max())
    span = emax - emin + 1
    stride = span + 2
    n_codes = int(codes[-1]) + 1
    if n_codes * stride < 2**62:
        # One int64 key per event: code * stride + (time - emin + 1). Query times are
        # clipped into the code's band, which keeps every comparison with that
        # entity's events and never reaches a neighbouring entity.
        keys = codes * stride + (times - emin + 1)
        q = np.maximum(q_codes, 0) * stride + np.clip(q_times - emin + 1, 0, span + 1)
        return np.searchsorted(keys, q, side=side).astype(np.int64)
    # Extremely wide time span x many entities: search per entity instead.
    out = np.zeros(len(q_codes), dtype=np.int64)
    seg_start = np.searchsorted(codes, np.arange(n_codes), side="left")
    seg_end = np.searchsorted(codes, np.arange(n_codes), side="right")
    for c in np.unique(q_codes[q_codes >= 0]):
        sel = q_codes == c
        a, b = int(seg_start[c]), int(seg_end[c])
        out[sel] = a + np.searchsorted(times[a:b], q_times[sel], side=side)
    return out


# Event times are refused before 2000-01-01 (docs/semantics.md section 5), so a
# lifetime window starting here holds every event with e <= t.
_LIFETIME_START_MS = 0


def window_starts(t_ms: I64, interval_ms: int, window_ms: int | None) -> I64:
    """First event time of each window (``window_ms=None``: a lifetime window)."""
    if window_ms is None:
        return np.full_like(t_ms, _LIFETIME_START_MS)
    return window_start_ms(t_ms, interval_ms, window_ms)


def longest_window(aggs: Sequence[AggregationSpec]) -> int | None:
    """The longest window of ``aggs``; None when one of them is a lifetime window."""
    windows = [a.window_ms for a in aggs]
    return None if None in windows else max(w for w in windows if w is not None)


def _masked_series(name: str, values: AnyArray, valid: npt.NDArray[np.bool_]) -> pl.Series:
    arr = pa.array(values, mask=~valid)
    return pl.Series(name, arr)


def _reduceat(ufunc: np.ufunc, values: F64, lo: I64, hi: I64) -> F64:
    """``ufunc.reduce(values[lo_i:hi_i])`` for every i (garbage where lo_i == hi_i)."""
    m = len(lo)
    if m == 0 or len(values) == 0:
        return np.zeros(m, dtype=np.float64)
    # Queries sorted by lo keep the interleaved "gap" segments [hi_i, lo_{i+1}) short:
    # their total length is at most len(values).
    order = np.argsort(lo, kind="stable")
    idx = np.empty(2 * m, dtype=np.int64)
    idx[0::2] = lo[order]
    idx[1::2] = hi[order]
    padded = np.append(values, 0.0)  # index len(values) is then a valid reduceat index
    res = ufunc.reduceat(padded, idx)[0::2]
    out = np.empty(m, dtype=np.float64)
    out[order] = res
    return out


def _stddev(values: F64, lo: I64, hi: I64) -> F64:
    """Population stddev over each [lo, hi), two passes over the window's events.

    Each window is shifted by its first value so identical values give exactly 0.
    Results for empty ranges are NaN (masked by the caller).
    """
    m = len(lo)
    out = np.full(m, np.nan)
    counts = hi - lo
    nonempty = np.flatnonzero(counts > 0)
    if len(nonempty) == 0:
        return out
    cum = np.cumsum(counts[nonempty])
    start = 0
    while start < len(nonempty):
        base = cum[start - 1] if start else 0
        stop = max(int(np.searchsorted(cum, base + _STDDEV_CHUNK, side="right")), start + 1)
        q = nonempty[start:stop]
        c = counts[q]
        total = int(c.sum())
        seg = np.repeat(np.arange(len(q)), c)
        first = np.cumsum(c) - c
        pos = np.arange(total) - first[seg] + lo[q][seg]
        d = values[pos] - values[lo[q]][seg]
        mean_d = np.bincount(seg, weights=d, minlength=len(q)) / c
        r = d - mean_d[seg]
        m2 = np.bincount(seg, weights=r * r, minlength=len(q))
        out[q] = np.sqrt(m2 / c)
        start = stop
    return out


def _query_order(q_codes: I64, q_times: I64) -> I64:
    """Permutation sorting queries by (code, time); one int64 key when it fits (3x faster)."""
    if len(q_times) == 0:
        return np.zeros(0, dtype=np.int64)
    tmin, tmax = int(q_times.min()), int(q_times.max())
    width = tmax - tmin + 1
    if (int(q_codes.max()) + 2) * width < 2**62:
        key = (q_codes + 1) * width + (q_times - tmin)
        return np.argsort(key, kind="stable").astype(np.int64)
    return np.lexsort((q_times, q_codes)).astype(np.int64)


@overflow_is_a_value
def evaluate_windows(
    codes: I64,
    times: I64,
    values: Mapping[str, F64],
    q_codes: I64,
    q_times: I64,
    interval_ms: int,
    aggs: Sequence[AggregationSpec],
    nonempty_out: dict[str, npt.NDArray[np.bool_]] | None = None,
    raw_values: Mapping[str, AnyArray] | None = None,
    positions: I64 | None = None,
    newest_out: list[I64] | None = None,
) -> dict[str, pl.Series]:
    """Evaluate ``aggs`` for each query (entity code, t) over sorted events.

    ``codes``/``times``/``values`` describe the events sorted by (code, event_time,
    partition, offset); ``q_codes`` is -1 for an entity without events. When
    ``nonempty_out`` is given, it receives per aggregation whether each query's
    window held an event (serving reports DEFAULTED from it). Sketch aggregations
    (count_distinct, percentile, ...) read ``raw_values`` (decoded values per column)
    and ``positions`` (``partition * 2**40 + offset``): each window's events build one
    blob with the kernel's own build, the state the merged tiles hold, bit for bit.
    ``newest_out``, when given, receives one array: per query, the time of its entity's
    newest event at or before t among the events given (``NO_EVENT_TS`` where none).
    """
    m = len(q_times)
    n = len(times)
    # Work on queries sorted by (entity, t): the binary searches and reduceat then walk
    # the events in order (cache friendly); results are put back in spine order at the end.
    order = _query_order(q_codes, q_times)
    q_codes = q_codes[order]
    q_times = q_times[order]

    def unsort(a: AnyArray) -> AnyArray:
        back = np.empty_like(a)
        back[order] = a
        return back

    has = q_codes >= 0
    hi = np.where(has, _bound(codes, times, q_codes, q_times, "right"), 0) if n else np.zeros(m, dtype=np.int64)
    if newest_out is not None:
        newest_out.append(unsort(_newest_at_or_before(codes, times, q_codes, hi)))
    lo_by_window: dict[int | None, I64] = {}
    prefix: dict[str, tuple[F64, F64]] = {}
    out: dict[str, pl.Series] = {}
    for agg in aggs:
        lo = lo_by_window.get(agg.window_ms)
        if lo is None:
            lo = lo_by_window[agg.window_ms] = _window_lows(codes, times, q_codes, q_times, has, interval_ms, agg)
        count = hi - lo
        nonempty = count > 0
        vals = np.zeros(0) if agg.function in ANY_COLUMN_FUNCTIONS else values.get(agg.column, np.zeros(0))
        sums = np.zeros(0)
        if agg.function in ("sum", "mean", "stddev"):
            pair = prefix.get(agg.column)
            if pair is None:
                pair = prefix[agg.column] = _compensated_prefix(vals)
            sums = _window_sums(pair, vals, lo, hi)
        result = _window_values(agg, vals, lo, hi, sums, times, q_times, raw_values or {}, positions)
        if agg.function in LIST_FUNCTIONS:
            out[agg.output_name] = _list_series(agg, unsort(result), (raw_values or {}).get(agg.column))
        else:
            out[agg.output_name] = _finish(agg, unsort(result), unsort(nonempty))
        if nonempty_out is not None:
            nonempty_out[agg.output_name] = unsort(nonempty)
    return out


def _newest_at_or_before(codes: I64, times: I64, q_codes: I64, hi: I64) -> I64:
    """Per query, the time of event ``hi - 1`` when it is the query's entity's (events
    are sorted by entity, then time: the newest at or before t), else ``NO_EVENT_TS``."""
    if not len(times):
        return np.full(len(q_codes), NO_EVENT_TS, dtype=np.int64)
    last = np.maximum(hi - 1, 0)
    mine = (hi > 0) & (q_codes >= 0) & (codes[last] == q_codes)
    return np.where(mine, times[last], NO_EVENT_TS).astype(np.int64)


def _window_lows(
    codes: I64,
    times: I64,
    q_codes: I64,
    q_times: I64,
    has: npt.NDArray[np.bool_],
    interval_ms: int,
    agg: AggregationSpec,
) -> I64:
    """Index of each query's oldest event in the window of ``agg`` (its ``hi`` when empty)."""
    if not len(times):
        return np.zeros(len(q_times), dtype=np.int64)
    starts = window_starts(q_times, interval_ms, agg.window_ms)
    return np.where(has, _bound(codes, times, q_codes, starts, "left"), 0)


def _window_values(
    agg: AggregationSpec,
    vals: F64,
    lo: I64,
    hi: I64,
    sums: F64,
    times: I64,
    q_times: I64,
    raw_values: Mapping[str, AnyArray],
    positions: I64 | None,
) -> AnyArray:
    """Each query's value of ``agg`` over its events ``[lo, hi)`` (empty windows are
    filled by the caller); ``sums`` are the window sums of sum, mean and stddev."""
    n, m = len(times), len(q_times)
    count = hi - lo
    if agg.function == "count":
        return count
    if agg.function in ("sum", "mean"):
        return sums if agg.function == "sum" else sums / np.maximum(count, 1)
    if agg.function == "min":
        return _reduceat(np.minimum, vals, lo, hi)
    if agg.function == "max":
        return _reduceat(np.maximum, vals, lo, hi)
    if agg.function == "last":
        return vals[np.maximum(hi - 1, 0)] if n else np.zeros(m)
    if (slot := agg.sketch_slot) is not None:
        return _sketch_windows(agg, slot, raw_values, times, positions, lo, hi)
    if agg.function == "first_seen":
        # lo is the window's oldest event (events sorted by entity, e, position).
        return times[np.minimum(lo, n - 1)] if n else np.zeros(m, dtype=np.int64)
    if agg.function == "time_since_last":
        # Events are sorted by (entity, e, position): hi - 1 is the newest with e <= t.
        return q_times - times[np.maximum(hi - 1, 0)] if n else np.zeros(m, dtype=np.int64)
    # Serving's partials reach the stddev through the window's mean: when the sum
    # overflows, so does the stddev there (semantics section 3, INVALID values).
    return np.where(np.isfinite(sums), _stddev(vals, lo, hi), np.nan)


def _sketch_windows(
    agg: AggregationSpec,
    slot: SketchSlot,
    raw_values: Mapping[str, AnyArray],
    times: I64,
    positions: I64 | None,
    lo: I64,
    hi: I64,
) -> F64:
    """Each window's sketch value (NaN where empty or over its bound: null); for the list
    functions an object array of lists ([] where empty)."""
    column = raw_values.get(slot.column)
    if column is None and bool((hi > lo).any()):  # no events at all (an empty log) needs none
        raise TrainingSetError(
            f"aggregation '{agg.output_name}': expected the decoded values of column "
            f"'{slot.column}' in the Parquet log (raw__{slot.column}), got none",
            hint="The log was written before the view had sketch aggregations; re-run backfill.",
        )
    if column is None:
        column = np.empty(0, dtype=object)
    pos = np.zeros(len(times), dtype=np.int64) if positions is None else positions
    start = np.zeros(1, dtype=np.int64)
    out = np.full(len(lo), np.nan)
    if agg.function in LIST_FUNCTIONS:
        out = np.empty(len(lo), dtype=object)
        for q in range(len(lo)):
            out[q] = []
    kind = slot.implementation
    for q in np.flatnonzero(hi > lo).tolist():
        a, b = int(lo[q]), int(hi[q])
        blob = kind.build(slot, column[a:b], times[a:b], pos[a:b], start)[0]
        value = evaluate_blob(agg, slot, blob)
        if isinstance(value, int | float | list):
            out[q] = value
    return out


# The training-set element type of a list function's column, from its decoded values' dtype.
_LIST_ELEMENTS = {"b": pl.Boolean, "i": pl.Int64, "u": pl.Int64, "f": pl.Float64}


def _list_series(agg: AggregationSpec, lists: AnyArray, column: AnyArray | None) -> pl.Series:
    """A list function's column: an Arrow list of the column's type (docs/semantics.md)."""
    kind = "O" if column is None else np.asarray(column).dtype.kind
    inner = _LIST_ELEMENTS.get(kind, pl.String)
    return pl.Series(agg.output_name, lists.tolist(), dtype=pl.List(inner))


def _window_sums(pair: tuple[F64, F64], values: F64, lo: I64, hi: I64) -> F64:
    """Sum of each window ``[lo, hi)`` from the compensated prefix ``pair``."""
    cs, ce = pair
    if np.isfinite(cs[-1]) and np.isfinite(ce[-1]):
        sums: F64 = (cs[hi] - cs[lo]) + (ce[hi] - ce[lo])
        # ``ce`` is itself a plain running sum: each step rounds by up to half an ulp of
        # its magnitude, which the largest values anywhere earlier (other entities'
        # included) set. Where that bound is not negligible beside a window's sum (1e300 in
        # one entity would otherwise erase 1.0 in the next), the window is summed on its own.
        doubt = (hi - lo + 2) * (_EPSILON * float(np.abs(ce).max())) > _DOUBT_RELATIVE * np.abs(sums)
        doubt &= hi > lo
        if bool(doubt.any()):
            sums[doubt] = _reduceat(np.add, values, lo[doubt], hi[doubt])
        return sums
    # The prefix overflowed somewhere (values near 1e308): differences of infinities would
    # poison every later entity's window, so each window is summed on its own and only the
    # windows that really overflow stay non-finite.
    return np.where(hi > lo, _reduceat(np.add, values, lo, hi), 0.0)


def _compensated_prefix(values: F64) -> tuple[F64, F64]:
    """Prefix sums ``cs`` plus the exact rounding error of each step, summed in ``ce``.

    ``np.cumsum`` adds sequentially, so step k computed ``cs[k] = fl(cs[k-1] + v[k])``;
    TwoSum recovers what that rounding lost. A window sum ``(cs[hi] - cs[lo]) +
    (ce[hi] - ce[lo])`` is then accurate although the prefix runs over every entity.
    """
    cs = np.cumsum(values)
    prev = np.concatenate(([0.0], cs[:-1]))
    b_virtual = cs - prev
    err = (prev - (cs - b_virtual)) + (values - b_virtual)
    zero = np.zeros(1)
    return np.concatenate((zero, cs)), np.concatenate((zero, np.cumsum(err)))


def _finish(agg: AggregationSpec, result: AnyArray, nonempty: npt.NDArray[np.bool_]) -> pl.Series:
    """Fill empty windows with the kernel's empty-window value (null where it is None).

    An int-valued function's NaN is a window with no exact answer (an exact
    ``count_distinct`` over its bound): null, as serving answers it (``OVER_BOUND``). A
    float function's non-finite value (an overflowed sum, a percentile in a folded bucket)
    is kept: serving answers it null with the status ``INVALID`` (docs/serving.md), and a
    training set feeds it to on-demand transforms as the invalid input it is, then holds
    null (engine/offline/training.py).
    """
    fill = empty_value(agg)
    if values_are_int(agg):
        answered = nonempty & np.isfinite(result) if result.dtype.kind == "f" else nonempty
        values = np.where(answered, result, 0 if fill is None else fill).astype(np.int64)
        valid = answered if fill is None else answered | ~nonempty
        if bool(valid.all()):
            return pl.Series(agg.output_name, values)
        return _masked_series(agg.output_name, values, valid)
    if fill is None:
        return _masked_series(agg.output_name, np.where(nonempty, result, 0.0).astype(np.float64), nonempty)
    return pl.Series(agg.output_name, np.where(nonempty, result, fill).astype(np.float64))
