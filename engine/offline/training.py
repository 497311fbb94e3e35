"""Point-in-time training sets from the Parquet feature log.

For every spine row (entity, t) and every aggregation the value is computed from
the view's logged events with ``start(t) <= e <= t`` where
``start(t) = floor(t / g) * g - w`` (docs/semantics.md section 3), exactly, at
event level (``engine.offline.event_windows``). This module resolves the service's
views and on-demand views, validates the spine, reads the log and joins the columns.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from engine.definitions.transform_runner import TransformRunError, TransformSpec, run_transform
from engine.io.parquet_log import EVENT_TIME, OFFSET, PARTITION, raw_column, read_log, value_column
from engine.kernel.layout import ANY_COLUMN_FUNCTIONS, AggregationSpec, encode_positions
from engine.offline.event_windows import I64, evaluate_windows, longest_window, window_starts
from engine.offline.exceptions import (
    OnDemandComputationError,
    SpineValidationError,
    TrainingSetError,
)

_SHOWN_ROWS = 20
_DTYPES: Mapping[str, type[pl.DataType]] = {
    "string": pl.Utf8,
    "int": pl.Int64,
    "float": pl.Float64,
    "bool": pl.Boolean,
}
_PY_TYPES: Mapping[type, str] = {str: "string", int: "int", float: "float", bool: "bool"}


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
            f"get_training_set: field 'repo': expected a FeatureRepo with 'services', got {type(repo).__name__}."
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
            f"FeatureService entry {item!r}: expected a StreamFeatureView, OnDemandFeatureView or FeatureRef."
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
        raise TrainingSetError(f"OnDemandFeatureView '{odfv.name}': field 'fn': {path!r} is not callable.")
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
                hint="Attach the zone, e.g. pl.col(c).dt.replace_time_zone('UTC'); a time zone is never guessed.",
            )
        return s.dt.epoch("ms").cast(pl.Int64).to_numpy()
    raise SpineValidationError(
        f"Spine column '{column}': expected int64 epoch milliseconds or a time-zone-aware Datetime, got {dtype}.",
        columns=[column],
        hint="Convert the column to epoch milliseconds (Int64).",
    )


def _validate_spine(spine: Any, join_keys: Sequence[str], timestamp_column: str, request_fields: Sequence[str]) -> None:
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
            hint="Add the columns (request data columns are named like the RequestSource schema fields).",
        )
    null_cols = [c for c in required if spine.get_column(c).null_count() > 0]
    if null_cols:
        bad = spine.select(pl.any_horizontal([pl.col(c).is_null() for c in null_cols])).to_series().arg_true().to_list()
        raise SpineValidationError(
            f"Spine has {len(bad)} row(s) with a null in {null_cols}: rows {_rows_text(bad)} (0-based).",
            rows=bad,
            columns=null_cols,
            hint="Fill or remove those rows; training sets never drop rows silently.",
        )


# ---------------------------------------------------------------------------
# Training set
# ---------------------------------------------------------------------------


def _entity_codes(log: pl.DataFrame, spine: pl.DataFrame, join_keys: Sequence[str]) -> tuple[I64, I64]:
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
            f"StreamFeatureView '{view.name}': features {unknown} are not defined; defined: {list(specs)}."
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
        start = int(window_starts(t_ms, interval, longest_window(aggs)).min())
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
    return evaluate_windows(codes, times, values, q_codes, t_ms, interval, aggs, nonempty_out, raw_values, positions)


def compute_on_demand(odfv: Any, inputs: pl.DataFrame, names: Sequence[str] | None = None) -> dict[str, pl.Series]:
    """Run the ODFV over ``inputs`` (one row per spine row) through the one transform
    runner serving uses, so values and refusals are the same as online."""
    outputs = _odfv_outputs(odfv)
    wanted = list(outputs) if names is None else list(names)
    unknown = [n for n in wanted if n not in outputs]
    if unknown:
        raise TrainingSetError(
            f"OnDemandFeatureView '{odfv.name}': features {unknown} are not in its schema {list(outputs)}."
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
            f"OnDemandFeatureView '{odfv.name}' ({odfv.fn}){where}: " + "; ".join(p.describe() for p in exc.problems),
            hint=exc.hint,
        ) from exc
    return {n: pl.Series(n, result.columns[n], dtype=_DTYPES.get(outputs[n], pl.Float64)) for n in wanted}


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
        computed.setdefault(odfv.name, {}).update(compute_on_demand(odfv, pl.DataFrame(list(inputs.values())), names))

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
