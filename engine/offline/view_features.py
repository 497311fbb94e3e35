"""One stream view's features for every spine row, from its Parquet feature log.

For every spine row (entity, t) and every aggregation the value is computed from
the view's logged events with ``start(t) <= e <= t`` where
``start(t) = floor(t / g) * g - w`` (docs/semantics.md section 3), exactly, at
event level (``engine.offline.event_windows``). This module reads the log rows the
spine needs and numbers their entities; serving's historical reads use it too.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow.fs as pafs

from engine.io.log_format import EVENT_TIME, OFFSET, PARTITION, raw_column, value_column
from engine.io.log_reader import read_log
from engine.kernel.layout import ANY_COLUMN_FUNCTIONS, AggregationSpec, encode_positions
from engine.offline.event_windows import I64, evaluate_windows, longest_window, window_starts
from engine.offline.exceptions import SpineValidationError, TrainingSetError
from engine.offline.service_entries import OfflineView, view_features


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


def _selected_aggregations(view: OfflineView, names: Sequence[str]) -> list[AggregationSpec]:
    """The named aggregations, refused if unknown or if the view writes no log."""
    specs = view_features(view)
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
    return [specs[n] for n in names]


def _read_view_log(
    view: OfflineView,
    aggs: Sequence[AggregationSpec],
    spine: pl.DataFrame,
    t_ms: I64,
    log_root: str,
    filesystem: pafs.FileSystem | None,
    only_spine_entities: bool,
) -> pl.DataFrame:
    """The log rows any spine row's window can contain, checked for the needed columns."""
    if len(t_ms):
        start = int(window_starts(t_ms, int(view.interval_ms), longest_window(aggs)).min())
        end = int(t_ms.max())
        wanted = None
        if only_spine_entities:
            wanted = {k: spine.get_column(k).cast(pl.Utf8).unique().to_list() for k in view.join_keys}
        log = read_log(log_root, view.name, view.fingerprint_hex, start, end, filesystem, wanted)
    else:
        log = read_log(log_root, view.name, view.fingerprint_hex, 0, -1, filesystem)
    if log.height:
        missing = [c for c in view.join_keys if c not in log.columns]
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
    return log


def compute_view_features(
    view: OfflineView,
    names: Sequence[str],
    spine: pl.DataFrame,
    t_ms: I64,
    log_root: str,
    filesystem: pafs.FileSystem | None = None,
    *,
    only_spine_entities: bool = False,
    nonempty_out: dict[str, npt.NDArray[np.bool_]] | None = None,
    newest_out: list[I64] | None = None,
) -> dict[str, pl.Series]:
    """Values of the named aggregations of ``view`` for every spine row.

    ``only_spine_entities`` reads only the log rows of the spine's entities (a filter
    pushed into the scan): cheap for a few entities, as serving's historical reads
    need. ``nonempty_out`` and ``newest_out`` are passed to :func:`evaluate_windows`
    (the newest event it gives is among the log rows read: those the windows need).
    """
    aggs = _selected_aggregations(view, names)
    log = _read_view_log(view, aggs, spine, t_ms, log_root, filesystem, only_spine_entities)
    codes, q_codes = _entity_codes(log, spine, tuple(view.join_keys))
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
    interval = int(view.interval_ms)
    return evaluate_windows(
        codes, times, values, q_codes, t_ms, interval, aggs, nonempty_out, raw_values, positions, newest_out
    )
