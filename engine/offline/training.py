"""Point-in-time training sets from the Parquet feature log.

For every spine row (entity, t) and every aggregation the value is computed from
the view's logged events with ``start(t) <= e <= t`` where
``start(t) = floor(t / g) * g - w`` (docs/semantics.md section 3), exactly, at
event level. The work is vectorized: events are sorted per entity once, each
spine row becomes an index range ``[lo, hi)`` into them through one
``np.searchsorted`` per bound, and the functions are read off that range
(prefix sums, ``reduceat``, the row before ``hi``, a chunked two-pass stddev).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow as pa

from engine.definitions.transform_runner import TransformRunError, TransformSpec, run_transform
from engine.io.parquet_log import EVENT_TIME, OFFSET, PARTITION, raw_column, read_log, value_column
from engine.kernel.aggregate import overflow_is_a_value
from engine.kernel.layout import ANY_COLUMN_FUNCTIONS, AggregationSpec, encode_positions
from engine.kernel.sketch_kinds import evaluate_blob
from engine.kernel.sketches import SketchSlot
from engine.kernel.window import empty_value, values_are_int, window_start_ms
from engine.offline.exceptions import (
    OnDemandComputationError,
    SpineValidationError,
    TrainingSetError,
)

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

_SHOWN_ROWS = 20
# Upper bound on gathered event values per stddev chunk (memory ~ 8 bytes x 4 arrays).
_STDDEV_CHUNK = 1 << 22
_DTYPES: Mapping[str, type[pl.DataType]] = {
    "string": pl.Utf8,
    "int": pl.Int64,
    "float": pl.Float64,
    "bool": pl.Boolean,
}
_PY_TYPES: Mapping[type, str] = {str: "string", int: "int", float: "float", bool: "bool"}


# ---------------------------------------------------------------------------
# Vectorized window evaluation (pure numpy; no definitions involved)
# ---------------------------------------------------------------------------


def _bound(
    codes: I64, times: I64, q_codes: I64, q_times: I64, side: Literal["left", "right"]
) -> I64:
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


def _window_start(t_ms: I64, interval_ms: int, window_ms: int | None) -> I64:
    """First event time of each window (``window_ms=None``: a lifetime window)."""
    if window_ms is None:
        return np.full_like(t_ms, _LIFETIME_START_MS)
    return window_start_ms(t_ms, interval_ms, window_ms)


def _longest_window(aggs: Sequence[AggregationSpec]) -> int | None:
    """The longest window of ``aggs``; None when one of them is a lifetime window."""
    windows = [a.window_ms for a in aggs]
    return None if None in windows else max(w for w in windows if w is not None)


def _masked_series(name: str, values: npt.NDArray[Any], valid: npt.NDArray[np.bool_]) -> pl.Series:
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
    raw_values: Mapping[str, npt.NDArray[Any]] | None = None,
    positions: I64 | None = None,
) -> dict[str, pl.Series]:
    """Evaluate ``aggs`` for each query (entity code, t) over sorted events.

    ``codes``/``times``/``values`` describe the events sorted by (code, event_time,
    partition, offset); ``q_codes`` is -1 for an entity without events. When
    ``nonempty_out`` is given, it receives per aggregation whether each query's
    window held an event (serving reports DEFAULTED from it). Sketch aggregations
    (count_distinct, percentile, ...) read ``raw_values`` (decoded values per column)
    and ``positions`` (``partition * 2**40 + offset``): each window's events build one
    blob with the kernel's own build, the state the merged tiles hold, bit for bit.
    """
    m = len(q_times)
    n = len(times)
    # Work on queries sorted by (entity, t): the binary searches and reduceat then walk
    # the events in order (cache friendly); results are put back in spine order at the end.
    order = _query_order(q_codes, q_times)
    q_codes = q_codes[order]
    q_times = q_times[order]

    def unsort(a: npt.NDArray[Any]) -> npt.NDArray[Any]:
        back = np.empty_like(a)
        back[order] = a
        return back

    has = q_codes >= 0
    if n:
        hi = np.where(has, _bound(codes, times, q_codes, q_times, "right"), 0)
    else:
        hi = np.zeros(m, dtype=np.int64)
    lo_by_window: dict[int | None, I64] = {}
    prefix: dict[str, tuple[F64, F64]] = {}
    out: dict[str, pl.Series] = {}
    for agg in aggs:
        lo = lo_by_window.get(agg.window_ms)
        if lo is None:
            if n:
                lo = np.where(
                    has,
                    _bound(
                        codes,
                        times,
                        q_codes,
                        _window_start(q_times, interval_ms, agg.window_ms),
                        "left",
                    ),
                    0,
                )
            else:
                lo = np.zeros(m, dtype=np.int64)
            lo_by_window[agg.window_ms] = lo
        count = hi - lo
        nonempty = count > 0
        vals = (
            np.zeros(0)
            if agg.function in ANY_COLUMN_FUNCTIONS
            else values.get(agg.column, np.zeros(0))
        )
        result: npt.NDArray[Any]
        if agg.function in ("sum", "mean", "stddev"):
            pair = prefix.get(agg.column)
            if pair is None:
                pair = prefix[agg.column] = _compensated_prefix(vals)
            sums = _window_sums(pair, vals, lo, hi)
        if agg.function == "count":
            result = count
        elif agg.function in ("sum", "mean"):
            result = sums if agg.function == "sum" else sums / np.maximum(count, 1)
        elif agg.function == "min":
            result = _reduceat(np.minimum, vals, lo, hi)
        elif agg.function == "max":
            result = _reduceat(np.maximum, vals, lo, hi)
        elif agg.function == "last":
            result = vals[np.maximum(hi - 1, 0)] if n else np.zeros(m)
        elif (slot := agg.sketch_slot) is not None:
            result = _sketch_windows(agg, slot, raw_values or {}, times, positions, lo, hi)
        elif agg.function == "first_seen":
            # lo is the window's oldest event (events sorted by entity, e, position).
            result = times[np.minimum(lo, n - 1)] if n else np.zeros(m, dtype=np.int64)
        elif agg.function == "time_since_last":
            # Events are sorted by (entity, e, position): hi - 1 is the newest with e <= t.
            result = q_times - times[np.maximum(hi - 1, 0)] if n else np.zeros(m, dtype=np.int64)
        else:
            # Serving's partials reach the stddev through the window's mean: when the sum
            # overflows, so does the stddev there (semantics section 3, INVALID values).
            result = np.where(np.isfinite(sums), _stddev(vals, lo, hi), np.nan)
        out[agg.output_name] = _finish(agg, unsort(result), unsort(nonempty))
        if nonempty_out is not None:
            nonempty_out[agg.output_name] = unsort(nonempty)
    return out


def _sketch_windows(
    agg: AggregationSpec,
    slot: SketchSlot,
    raw_values: Mapping[str, npt.NDArray[Any]],
    times: I64,
    positions: I64 | None,
    lo: I64,
    hi: I64,
) -> F64:
    """Each window's sketch value (NaN where empty or over its bound: null)."""
    column = raw_values.get(slot.column)
    if column is None:
        raise TrainingSetError(
            f"aggregation '{agg.output_name}': expected the decoded values of column "
            f"'{slot.column}' in the Parquet log (raw__{slot.column}), got none",
            hint="The log was written before the view had sketch aggregations; re-run backfill.",
        )
    pos = np.zeros(len(times), dtype=np.int64) if positions is None else positions
    start = np.zeros(1, dtype=np.int64)
    out = np.full(len(lo), np.nan)
    kind = slot.implementation
    for q in np.flatnonzero(hi > lo).tolist():
        a, b = int(lo[q]), int(hi[q])
        blob = kind.build(slot, column[a:b], times[a:b], pos[a:b], start)[0]
        value = evaluate_blob(agg, slot, blob)
        if isinstance(value, int | float):
            out[q] = value
    return out


def _window_sums(pair: tuple[F64, F64], values: F64, lo: I64, hi: I64) -> F64:
    """Sum of each window ``[lo, hi)`` from the compensated prefix ``pair``."""
    cs, ce = pair
    if np.isfinite(cs[-1]) and np.isfinite(ce[-1]):
        sums: F64 = (cs[hi] - cs[lo]) + (ce[hi] - ce[lo])
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


def _finish(
    agg: AggregationSpec, result: npt.NDArray[Any], nonempty: npt.NDArray[np.bool_]
) -> pl.Series:
    """Fill empty windows with the kernel's empty-window value (null where it is None).

    A non-empty window whose value is not finite (an overflowed sum) is null, as serving
    serves it (status INVALID, docs/serving.md).
    """
    if agg.function != "count":
        finite = np.isfinite(result)
        if not bool(finite[nonempty].all()):
            filled = _finish(agg, np.where(finite, result, 0.0), nonempty)
            valid = filled.is_not_null().to_numpy() & ~(nonempty & ~finite)
            return _masked_series(agg.output_name, filled.fill_null(0.0).to_numpy(), valid)
    fill = empty_value(agg)
    dtype = np.int64 if values_are_int(agg) else np.float64
    if fill is None:
        return _masked_series(agg.output_name, np.where(nonempty, result, 0).astype(dtype), nonempty)
    return pl.Series(agg.output_name, np.where(nonempty, result, fill).astype(dtype))


# ---------------------------------------------------------------------------
# Definitions (duck-typed against docs/definitions-api.md)
# ---------------------------------------------------------------------------


def _is_odfv(obj: Any) -> bool:
    return hasattr(obj, "fn") and hasattr(obj, "mode") and hasattr(obj, "sources")


def _is_view(obj: Any) -> bool:
    return hasattr(obj, "aggregations") and hasattr(obj, "interval_ms")


def _is_ref(obj: Any) -> bool:
    """A selection of a stream view's features, ``view[["a", "b"]]``."""
    return _is_view(getattr(obj, "view", None)) and hasattr(obj, "features")


def _is_request_source(obj: Any) -> bool:
    return hasattr(obj, "schema") and not _is_view(obj) and not _is_odfv(obj)


def _find_service(repo: Any, name: str) -> Any:
    services = getattr(repo, "services", None)
    if services is None:
        raise TrainingSetError(
            f"get_training_set: field 'repo': expected a FeatureRepo with 'services', "
            f"got {type(repo).__name__}."
        )
    items: Iterable[Any] = services.values() if isinstance(services, Mapping) else services
    found = [s for s in items if getattr(s, "name", None) == name]
    if not found:
        known = sorted(str(getattr(s, "name", "?")) for s in items)
        raise TrainingSetError(
            f"FeatureService '{name}' is not defined in the repo; defined: {known}.",
            hint="Check the service name or run `streamfeat plan` to list definitions.",
        )
    return found[0]


def _ref_parts(item: Any) -> tuple[Any, tuple[str, ...] | None]:
    """(view or odfv, selected names or None for all) of one service entry."""
    if _is_odfv(item) or _is_view(item):
        return item, None
    target = getattr(item, "view", None)
    if target is None:
        raise TrainingSetError(
            f"FeatureService entry {item!r}: expected a StreamFeatureView, "
            "OnDemandFeatureView or FeatureRef."
        )
    for attr in ("features", "feature_names", "names"):
        names = getattr(item, attr, None)
        if names is not None:
            return target, tuple(names)
    return target, None


def _view_features(view: Any) -> dict[str, AggregationSpec]:
    specs = (AggregationSpec.from_aggregation(a) for a in view.aggregations)
    return {spec.output_name: spec for spec in specs}


def _odfv_outputs(odfv: Any) -> dict[str, str]:
    """Output name -> normalized type name ("string" | "int" | "float" | "bool")."""
    out: dict[str, str] = {}
    for name, typ in dict(odfv.schema).items():
        if isinstance(typ, type) and typ in _PY_TYPES:
            out[name] = _PY_TYPES[typ]
        else:
            out[name] = str(getattr(typ, "value", typ))
    return out


def resolve_function(odfv: Any) -> Callable[..., Any]:
    """The ODFV's transform, imported the way serving imports it (``odfv.resolve()``).

    Objects without ``resolve`` (duck-typed stand-ins) are resolved from their
    ``"package.module:qualname"`` path here.
    """
    resolve = getattr(odfv, "resolve", None)
    if callable(resolve):
        return resolve()  # type: ignore[no-any-return]
    path = str(odfv.fn)
    module_name, sep, qualname = path.partition(":")
    try:
        if not sep or not qualname:
            raise ImportError("expected 'package.module:function'")
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise TrainingSetError(
            f"OnDemandFeatureView '{odfv.name}': field 'fn': cannot import {path!r}: {exc}",
            hint="Make sure the module is importable (the repo directory on sys.path).",
        ) from exc
    if not callable(obj):
        raise TrainingSetError(
            f"OnDemandFeatureView '{odfv.name}': field 'fn': {path!r} is not callable."
        )
    return obj  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------
# Spine
# ---------------------------------------------------------------------------


def _rows_text(rows: Sequence[int]) -> str:
    shown = ", ".join(str(r) for r in rows[:_SHOWN_ROWS])
    more = f" and {len(rows) - _SHOWN_ROWS} more" if len(rows) > _SHOWN_ROWS else ""
    return f"{shown}{more}"


def spine_times_ms(spine: pl.DataFrame, column: str) -> I64:
    """The spine's timestamps as int64 epoch milliseconds (UTC)."""
    dtype = spine.schema[column]
    s = spine.get_column(column)
    if dtype.is_integer():
        return s.cast(pl.Int64).to_numpy()
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is None:
            raise SpineValidationError(
                f"Spine column '{column}': expected int64 epoch milliseconds or a "
                f"time-zone-aware Datetime, got naive {dtype}.",
                columns=[column],
                hint="Attach the zone, e.g. pl.col(c).dt.replace_time_zone('UTC'); a time "
                "zone is never guessed.",
            )
        return s.dt.epoch("ms").cast(pl.Int64).to_numpy()
    raise SpineValidationError(
        f"Spine column '{column}': expected int64 epoch milliseconds or a time-zone-aware "
        f"Datetime, got {dtype}.",
        columns=[column],
        hint="Convert the column to epoch milliseconds (Int64).",
    )


def _validate_spine(
    spine: Any, join_keys: Sequence[str], timestamp_column: str, request_fields: Sequence[str]
) -> None:
    if not isinstance(spine, pl.DataFrame):
        raise SpineValidationError(
            f"Spine: expected a polars.DataFrame, got {type(spine).__name__}.",
            hint="Build it with pl.DataFrame(...) or pl.from_pandas(...).",
        )
    required = [*join_keys, timestamp_column]
    missing = [c for c in required if c not in spine.columns]
    missing_req = [c for c in request_fields if c not in spine.columns and c not in required]
    if missing or missing_req:
        parts = []
        if missing:
            parts.append(f"entity/timestamp columns {missing}")
        if missing_req:
            parts.append(f"request data columns {missing_req}")
        raise SpineValidationError(
            f"Spine is missing {' and '.join(parts)}; it has {spine.columns}.",
            columns=[*missing, *missing_req],
            hint="Add the columns (request data columns are named like the RequestSource "
            "schema fields).",
        )
    null_cols = [c for c in required if spine.get_column(c).null_count() > 0]
    if null_cols:
        bad = (
            spine.select(pl.any_horizontal([pl.col(c).is_null() for c in null_cols]))
            .to_series()
            .arg_true()
            .to_list()
        )
        raise SpineValidationError(
            f"Spine has {len(bad)} row(s) with a null in {null_cols}: rows {_rows_text(bad)} "
            "(0-based).",
            rows=bad,
            columns=null_cols,
            hint="Fill or remove those rows; training sets never drop rows silently.",
        )


# ---------------------------------------------------------------------------
# Training set
# ---------------------------------------------------------------------------


def _entity_codes(
    log: pl.DataFrame, spine: pl.DataFrame, join_keys: Sequence[str]
) -> tuple[I64, I64]:
    """(code per log row, code per spine row) with -1 for spine entities without events."""
    keys = list(join_keys)
    if log.height == 0:
        return np.zeros(0, dtype=np.int64), np.full(spine.height, -1, dtype=np.int64)
    # The log is sorted by join keys first, so an entity starts where any key changes.
    new = pl.any_horizontal([pl.col(k).ne_missing(pl.col(k).shift(1)) for k in keys])
    flags = log.select(new.alias("new")).to_series()
    codes = (flags.cast(pl.Int64).cum_sum() - 1).to_numpy()
    entities = log.filter(flags).select(keys).with_row_index("__code")
    try:
        spine_keys = spine.select([pl.col(k).cast(pl.Utf8) for k in keys])
    except pl.exceptions.PolarsError as exc:
        raise SpineValidationError(
            f"Spine join-key columns {keys} cannot be read as strings: {exc}",
            columns=keys,
        ) from exc
    joined = spine_keys.join(entities, on=keys, how="left", maintain_order="left")
    q_codes = joined.get_column("__code").cast(pl.Int64).fill_null(-1).to_numpy()
    return codes.astype(np.int64), q_codes.astype(np.int64)


def compute_view_features(
    view: Any,
    names: Sequence[str],
    spine: pl.DataFrame,
    t_ms: I64,
    log_root: str,
    filesystem: Any | None = None,
    *,
    only_spine_entities: bool = False,
    nonempty_out: dict[str, npt.NDArray[np.bool_]] | None = None,
) -> dict[str, pl.Series]:
    """Values of the named aggregations of ``view`` for every spine row.

    ``only_spine_entities`` reads only the log rows of the spine's entities (a filter
    pushed into the scan): cheap for a few entities, as serving's historical reads
    need. ``nonempty_out`` is passed to :func:`evaluate_windows`.
    """
    specs = _view_features(view)
    unknown = [n for n in names if n not in specs]
    if unknown:
        raise TrainingSetError(
            f"StreamFeatureView '{view.name}': features {unknown} are not defined; "
            f"defined: {list(specs)}."
        )
    if not getattr(view, "offline", True):
        raise TrainingSetError(
            f"StreamFeatureView '{view.name}': field 'offline': expected True to build "
            "training sets, got False (no Parquet log is written for it).",
            hint="Set offline=True, apply, and backfill the view.",
        )
    aggs = [specs[n] for n in names]
    interval = int(view.interval_ms)
    if len(t_ms):
        start = int(_window_start(t_ms, interval, _longest_window(aggs)).min())
        end = int(t_ms.max())
        wanted = None
        if only_spine_entities:
            wanted = {k: spine.get_column(k).cast(pl.Utf8).unique().to_list() for k in view.join_keys}
        log = read_log(log_root, view.name, view.fingerprint_hex, start, end, filesystem, wanted)
    else:
        log = read_log(log_root, view.name, view.fingerprint_hex, 0, -1, filesystem)
    join_keys = tuple(view.join_keys)
    if log.height:
        missing = [c for c in join_keys if c not in log.columns]
        missing += [
            value_column(a.column)
            for a in aggs
            if a.function not in ANY_COLUMN_FUNCTIONS and value_column(a.column) not in log.columns
        ]
        if missing:
            raise TrainingSetError(
                f"Parquet log of view '{view.name}' (fingerprint {view.fingerprint_hex}) "
                f"lacks columns {sorted(set(missing))}; it has {log.columns}.",
                hint="The log was written by another definition; re-run backfill.",
            )
    codes, q_codes = _entity_codes(log, spine, join_keys)
    times = log.get_column(EVENT_TIME).to_numpy().astype(np.int64)
    values = {
        a.column: log.get_column(value_column(a.column)).to_numpy().astype(np.float64)
        for a in aggs
        if log.height and a.function not in ANY_COLUMN_FUNCTIONS
    }
    raw_values = {
        slot.column: log.get_column(raw_column(slot.column)).to_numpy()
        for a in aggs
        if log.height and (slot := a.sketch_slot) is not None and raw_column(slot.column) in log.columns
    }
    positions = (
        encode_positions(log.get_column(PARTITION).to_numpy(), log.get_column(OFFSET).to_numpy())
        if raw_values
        else None
    )
    return evaluate_windows(
        codes, times, values, q_codes, t_ms, interval, aggs, nonempty_out, raw_values, positions
    )


def compute_on_demand(
    odfv: Any, inputs: pl.DataFrame, names: Sequence[str] | None = None
) -> dict[str, pl.Series]:
    """Run the ODFV over ``inputs`` (one row per spine row) through the one transform
    runner serving uses, so values and refusals are the same as online."""
    outputs = _odfv_outputs(odfv)
    wanted = list(outputs) if names is None else list(names)
    unknown = [n for n in wanted if n not in outputs]
    if unknown:
        raise TrainingSetError(
            f"OnDemandFeatureView '{odfv.name}': features {unknown} are not in its schema "
            f"{list(outputs)}."
        )
    spec = TransformSpec(
        name=odfv.name,
        fn=resolve_function(odfv),
        mode=str(getattr(odfv.mode, "value", odfv.mode)),
        input_types=dict(odfv.input_types),
        output_types=dict(odfv.feature_types),
    )
    columns = {name: inputs.get_column(name).to_list() for name in spec.input_types}
    try:
        result = run_transform(spec, columns, inputs.height)
    except TransformRunError as exc:
        where = f" on spine row {exc.row}" if exc.row is not None else ""
        raise OnDemandComputationError(
            f"OnDemandFeatureView '{odfv.name}' ({odfv.fn}){where}: "
            + "; ".join(p.describe() for p in exc.problems),
            hint=exc.hint,
        ) from exc
    return {
        n: pl.Series(n, result.columns[n], dtype=_DTYPES.get(outputs[n], pl.Float64))
        for n in wanted
    }


def get_training_set(
    repo: Any,
    service_name: str,
    spine: pl.DataFrame,
    log_root: str,
    timestamp_column: str = "event_timestamp",
    *,
    filesystem: Any | None = None,
) -> pl.DataFrame:
    """Point-in-time correct features of ``service_name`` for every spine row.

    Returns the spine's columns (unchanged, same row order) followed by the
    service's features in declared order.
    """
    service = _find_service(repo, service_name)
    entries = [_ref_parts(item) for item in service.features]

    # Which aggregations of which view are needed, for output or as ODFV inputs.
    views: dict[str, Any] = {}
    needed: dict[str, list[str]] = {}
    odfvs: list[tuple[Any, tuple[str, ...] | None]] = []
    request_fields: list[str] = []

    def need(view: Any, names: Iterable[str]) -> None:
        views.setdefault(view.name, view)
        lst = needed.setdefault(view.name, [])
        lst.extend(n for n in names if n not in lst)

    # (owner, feature) per output column: two views (or a view and an on-demand view) may
    # both have a feature "x"; each output and each transform input is taken from the
    # one it was declared from, as serving does.
    outputs: list[tuple[str, str]] = []
    for target, names in entries:
        if _is_odfv(target):
            odfvs.append((target, names))
            outputs.extend((target.name, n) for n in (names if names is not None else _odfv_outputs(target)))
            for src in target.sources:
                if _is_view(src):
                    need(src, _view_features(src))
                elif _is_ref(src):
                    need(src.view, src.features)
            request_fields.extend(f for f in request_fields_of(target) if f not in request_fields)
        else:
            selected = names if names is not None else tuple(_view_features(target))
            need(target, selected)
            outputs.extend((target.name, n) for n in selected)
    output_names = [n for _, n in outputs]

    join_keys: list[str] = []
    for view in views.values():
        join_keys.extend(k for k in view.join_keys if k not in join_keys)
    _validate_spine(spine, join_keys, timestamp_column, request_fields)
    clash = sorted({n for n in output_names if n in spine.columns})
    dupes = sorted({n for n in output_names if output_names.count(n) > 1})
    if clash or dupes:
        raise TrainingSetError(
            f"FeatureService '{service_name}': feature names {clash or dupes} collide "
            + ("with spine columns." if clash else "with each other."),
            hint="Rename the spine columns or select features with view[[...]].",
        )
    t_ms = spine_times_ms(spine, timestamp_column)

    computed: dict[str, dict[str, pl.Series]] = {}  # owner -> feature -> values
    for name, view in views.items():
        computed[name] = compute_view_features(view, needed[name], spine, t_ms, log_root, filesystem)
    for odfv, names in odfvs:
        inputs: dict[str, pl.Series] = {}
        for src in odfv.sources:
            if _is_view(src):
                inputs.update({n: computed[src.name][n] for n in _view_features(src)})
            elif _is_ref(src):
                inputs.update({n: computed[src.view.name][n] for n in src.features})
        inputs.update({f: spine.get_column(f) for f in request_fields_of(odfv)})
        computed.setdefault(odfv.name, {}).update(
            compute_on_demand(odfv, pl.DataFrame(list(inputs.values())), names)
        )

    return spine.with_columns([computed[owner][n] for owner, n in outputs])


def request_fields_of(odfv: Any) -> list[str]:
    """Request data fields an ODFV reads (from its RequestSource sources)."""
    declared = getattr(odfv, "request_fields", None)
    if declared is not None:
        return list(declared)
    fields: list[str] = []
    for src in odfv.sources:
        if _is_request_source(src):
            fields.extend(f for f in dict(src.schema) if f not in fields)
    return fields
