"""History rows as the decoder's batches: ``DecodedBatch`` chunks and factorized join keys.

String columns are factorized once over the whole history and gathered per chunk, and
join-key columns get their entity keys encoded once (``factorize_key_columns``):
per-chunk conversions cost more than the routing itself.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence

import numpy as np
import numpy.typing as npt
import polars as pl

from engine.array_types import AnyArray
from engine.io.batches import DecodedBatch
from engine.io.decoder import EventSourceLike
from engine.offline.history_files import HistoryView, kind_name
from engine.offline.history_slices import EVENT_MS
from engine.positions import MAX_PARTITION
from engine.state.keys import encode_entity_keys

#: Partition number of replayed history rows (the largest one positions can encode).
HISTORY_PARTITION = MAX_PARTITION


def _numeric_column(series: pl.Series, kind: str) -> AnyArray:
    """The decoder's dtypes for non-string kinds: int64, float64, bool."""
    if kind == "int":
        return series.cast(pl.Int64).to_numpy()
    if kind == "float":
        return series.cast(pl.Float64).to_numpy()
    return series.cast(pl.Boolean).to_numpy()


def _factorize_strings(series: pl.Series) -> tuple[pl.Series, npt.NDArray[np.int64]]:
    """``(distinct values in first-seen order, code per row)`` of a null-free string column."""
    distinct = series.unique(maintain_order=True)
    # Enum categories keep the given order, so physical code i names distinct[i].
    codes = series.cast(pl.Enum(distinct)).to_physical().to_numpy().astype(np.int64)
    return distinct, codes


def routed_columns(views: Sequence[HistoryView], factorized: Mapping[str, object]) -> set[str]:
    """Source columns ``route`` reads from a batch when ``factorized`` keys are given:
    filter fields, aggregated columns and the join keys of views without a factorized key."""
    names: set[str] = set()
    for view in views:
        names.update(view.columns)
        if view.filter is not None:
            names.update(view.filter.fields())
        if len(view.join_keys) != 1 or view.join_keys[0] not in factorized:
            names.update(view.join_keys)
    return names


def history_batches(
    history: pl.DataFrame,
    source: EventSourceLike,
    topic: str,
    first_row: int,
    chunk_rows: int,
    columns: Collection[str] | None = None,
    offset_base: int = 0,
    top_ts_before: int | None = None,
    order: npt.NDArray[np.intp] | None = None,
) -> Iterator[DecodedBatch]:
    """DecodedBatch objects for rows ``first_row ..`` of the sorted history.

    ``history`` may be one slice of the whole order: row ``i`` of it gets the offset
    ``offset_base + i``. ``top_ts_before`` is the largest event time of the rows replayed
    before ``history`` (each batch carries the largest one so far). ``order``, when
    given, is the permutation that sorts ``history`` (``history_slices.slice_order``):
    row ``i`` is then ``history``'s row ``order[i]``.

    ``columns`` limits the batch columns to those routing reads (default: every source
    field in ``history``). String columns become object arrays like the decoder's, but
    each is factorized once over the whole history and gathered per chunk from its
    distinct values: converting every chunk's strings to Python objects cost more
    than the rest of the routing.
    """
    kinds = {str(k): kind_name(v) for k, v in source.schema.items()}
    wanted = [c for c in history.columns if c in kinds and (columns is None or c in columns)]
    strings: dict[str, tuple[npt.NDArray[np.object_], npt.NDArray[np.int64]]] = {}
    numbers: dict[str, AnyArray] = {}
    for name in wanted:
        series = history.get_column(name)
        if kinds[name] == "string":
            distinct, codes = _factorize_strings(series)
            values = np.empty(len(distinct), dtype=object)
            values[:] = distinct.to_list()
            strings[name] = (values, _in_order(codes, order))
        else:
            numbers[name] = _in_order(_numeric_column(series, kinds[name]), order)
    all_ts: npt.NDArray[np.int64] = _in_order(history.get_column(EVENT_MS).to_numpy().astype(np.int64), order)
    top = top_ts_before
    for begin in range(first_row, history.height, chunk_rows):
        end = min(begin + chunk_rows, history.height)
        event_ts = all_ts[begin:end]
        top = int(event_ts.max()) if top is None else max(top, int(event_ts.max()))
        batch_columns: dict[str, AnyArray] = {
            name: values[codes[begin:end]] for name, (values, codes) in strings.items()
        }
        batch_columns.update({name: array[begin:end] for name, array in numbers.items()})
        yield DecodedBatch(
            topic=topic,
            partition=HISTORY_PARTITION,
            first_offset=offset_base + begin,
            last_offset=offset_base + end - 1,
            # History is never decoded against a watermark: the largest event time so
            # far alone is kept.
            top_ts_after=(top,),
            offsets=np.arange(offset_base + begin, offset_base + end, dtype=np.int64),
            event_ts=event_ts,
            columns={c: batch_columns[c] for c in wanted},
            dead_letters=(),
        )


def _in_order(array: AnyArray, order: npt.NDArray[np.intp] | None) -> AnyArray:
    """``array`` gathered by ``order`` (None: as it is)."""
    return array if order is None else array[order]


def factorize_key_columns(
    history: pl.DataFrame, views: Sequence[HistoryView], order: npt.NDArray[np.intp] | None = None
) -> dict[str, tuple[list[bytes], npt.NDArray[np.int64]]]:
    """Distinct values and a code per history row of every string join-key column: one
    hash pass over the whole history instead of one per chunk. A multi-join-key view whose
    keys are all here gets its entity keys composed from the codes, as streaming does
    (``engine.entity_codes.compose_entity_keys``), not one tuple per row. ``order``: as
    for :func:`history_batches` (the codes are per sorted row)."""
    out: dict[str, tuple[list[bytes], npt.NDArray[np.int64]]] = {}
    for name in dict.fromkeys(k for view in views for k in view.join_keys):
        series = history.get_column(name)
        if series.dtype != pl.String or series.null_count():
            continue
        distinct, codes = _factorize_strings(series)
        out[name] = (encode_entity_keys([distinct.to_list()]), _in_order(codes, order))
    return out


def chunk_codes(
    factorized: Mapping[str, tuple[list[bytes], npt.NDArray[np.int64]]], begin: int, n: int
) -> dict[str, tuple[list[bytes], npt.NDArray[np.int64]]]:
    """The keys named by rows ``begin .. begin + n`` and those rows' codes into them."""
    out: dict[str, tuple[list[bytes], npt.NDArray[np.int64]]] = {}
    for name, (keys, codes) in factorized.items():
        chunk = codes[begin : begin + n]
        used = np.flatnonzero(np.bincount(chunk, minlength=len(keys)))
        remap = np.zeros(len(keys), dtype=np.int64)
        remap[used] = np.arange(len(used), dtype=np.int64)
        out[name] = ([keys[i] for i in used.tolist()], remap[chunk])
    return out
