"""Split a decoded batch of one source partition into one item per state shard.

Every shard receives an item for every source batch, even when none of the batch's
rows belong to it: the item still carries the partition's last offset and maximum
event time, so every shard records the same progress and a restart never has to
replay from a shard that simply saw no traffic (docs/semantics.md, section 6).

Rows carry integer entity codes into a list of distinct entity keys
(engine/entity_codes.py), so hashing keys for the shard (crc32) is done once per
distinct key, then broadcast.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from engine.array_types import AnyArray
from engine.entity_codes import compose_entity_keys, factorize_entity_keys, used_keys_only
from engine.io.batches import DecodedBatch
from engine.kernel.layout import AggregationLike, PartialLayout
from engine.shard_wire import from_wire, to_wire
from engine.state.keys import shard_for_many

Int64Array = npt.NDArray[np.int64]


class RoutableView(Protocol):
    """What routing needs of a ``StreamFeatureView`` (kept structural on purpose)."""

    @property
    def name(self) -> str: ...
    @property
    def join_keys(self) -> tuple[str, ...]: ...
    @property
    def columns(self) -> tuple[str, ...]: ...
    @property
    def column_types(self) -> Mapping[str, object]: ...
    @property
    def fingerprint(self) -> bytes: ...
    @property
    def filter(self) -> object | None: ...
    @property
    def aggregations(self) -> Sequence[AggregationLike]: ...


@dataclass(frozen=True)
class ViewRows:
    """The rows of one view that belong to one shard, ready for the kernel.

    Row ``i`` belongs to entity ``keys[codes[i]]``. ``keys`` are distinct; after
    :meth:`select` some of them may no longer be named by any row. ``join_values``
    is empty when the keys were factorized by the caller (see :func:`route`).
    """

    keys: list[bytes]
    codes: Int64Array
    join_values: dict[str, npt.NDArray[np.object_]]
    event_ts: Int64Array
    offsets: Int64Array
    values: npt.NDArray[np.float64]  # shape (rows, len(view.columns))
    # Decoded values (str stays str) of the columns the view's sketch slots read.
    raw_values: dict[str, AnyArray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.codes)

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        # Rows crossing to another process of the cluster travel in the compact wire
        # form of engine/shard_wire.py (Bytewax pickles every item it exchanges).
        wire = to_wire(
            self.keys, self.codes, self.join_values, self.event_ts, self.offsets, self.values, self.raw_values
        )
        return _view_rows_from_wire, (wire,)

    @property
    def entity_keys(self) -> list[bytes]:
        """Entity key bytes per row (the straightforward form, for tests and tools)."""
        keys = self.keys
        return [keys[c] for c in self.codes.tolist()]

    def take(self, idx: npt.NDArray[np.intp]) -> ViewRows:
        """The rows at positions ``idx`` (same key list)."""
        return ViewRows(
            keys=self.keys,
            codes=self.codes[idx],
            join_values={k: v[idx] for k, v in self.join_values.items()},
            event_ts=self.event_ts[idx],
            offsets=self.offsets[idx],
            values=self.values[idx],
            raw_values={k: v[idx] for k, v in self.raw_values.items()},
        )

    def select(self, mask: npt.NDArray[np.bool_]) -> ViewRows:
        return self.take(np.flatnonzero(mask))


def _view_rows_from_wire(wire: tuple[object, ...]) -> ViewRows:
    return ViewRows(**from_wire(wire))


@dataclass(frozen=True)
class ShardBatch:
    """One source batch's share for one shard. ``views`` maps fingerprint -> rows."""

    shard: int
    topic: str
    partition: int
    last_offset: int
    top_ts_after: tuple[int, ...]
    views: dict[bytes, ViewRows] = field(default_factory=dict)

    @property
    def row_count(self) -> int:
        return sum(len(rows) for rows in self.views.values())


def factorize_join_columns(
    views: Sequence[RoutableView], batch: DecodedBatch
) -> dict[str, tuple[list[bytes], Int64Array]]:
    """Every join-key column the views name, factorized once for the whole batch (views
    sharing a join key, and multi-key views composing theirs, reuse it)."""
    names = dict.fromkeys(k for view in views for k in view.join_keys if k in batch.columns)
    return {name: factorize_entity_keys([np.asarray(batch.columns[name], dtype=object)]) for name in names}


def _numeric(kind: object) -> bool:
    return str(getattr(kind, "value", kind)) in ("int", "float", "bool")


#: Per source column: (distinct entity keys, code per batch row) computed by the caller.
Factorized = Mapping[str, tuple[list[bytes], Int64Array]]


class _RowSelections:
    """The rows each view filter keeps of one batch, and columns picked at those rows.

    The views of a source usually share their filter (every example view keeps purchases
    only), so each distinct filter is evaluated once per batch and each column picked once
    per (filter, column, dtype); views with equal filters share the picked arrays, as
    unfiltered views already share the batch's own arrays. Equal filter expressions select
    the same rows (engine/definitions/filters.py: frozen, compared by value).
    """

    def __init__(self, batch: DecodedBatch) -> None:
        self.columns = batch.columns
        self.n = len(batch.offsets)
        self._rows: dict[object, npt.NDArray[np.intp] | None] = {}
        self._picked: dict[tuple[object, str, type], AnyArray] = {}

    def rows(self, view_filter: object | None) -> tuple[object, npt.NDArray[np.intp] | None]:
        """``(selection key, kept row positions or None for all rows)``."""
        if view_filter is None or not self.n:
            return None, None
        try:
            key: object = (type(view_filter), view_filter)
            hash(key)
        except TypeError:  # a duck-typed filter without value equality
            key = id(view_filter)
        if key not in self._rows:
            mask = np.asarray(view_filter.evaluate(self.columns), dtype=np.bool_)  # type: ignore[attr-defined]
            self._rows[key] = None if bool(mask.all()) else np.flatnonzero(mask)
        idx = self._rows[key]
        return (None, None) if idx is None else (key, idx)

    def pick(
        self, key: object, idx: npt.NDArray[np.intp] | None, name: str, array: npt.ArrayLike, dtype: type
    ) -> AnyArray:
        """``array`` as ``dtype`` at the selected rows (``name`` identifies ``array``)."""
        if idx is None:
            return np.asarray(array, dtype=dtype)
        memo = (key, name, dtype)
        found = self._picked.get(memo)
        if found is None:
            found = np.asarray(array, dtype=dtype)[idx]
            self._picked[memo] = found
        return found


def _view_rows(
    view: RoutableView,
    batch: DecodedBatch,
    factorized: Factorized | None = None,
    *,
    shared: bool = False,
    selections: _RowSelections | None = None,
) -> ViewRows:
    columns = batch.columns
    selections = _RowSelections(batch) if selections is None else selections
    selection, idx = selections.rows(view.filter)
    rows = len(batch.offsets) if idx is None else len(idx)

    def pick(name: str, array: npt.ArrayLike, dtype: type) -> AnyArray:
        return selections.pick(selection, idx, name, array, dtype)

    given = factorized.get(view.join_keys[0]) if factorized is not None and len(view.join_keys) == 1 else None
    # With caller-factorized keys the per-row join values are not materialized: the
    # key text of row i is keys[codes[i]] (only multi-key views need join_values: the
    # Parquet log writes each of their join keys as its own column).
    join_values = (
        {} if given is not None and not shared else {k: pick(f"column {k}", columns[k], object) for k in view.join_keys}
    )
    composed = None
    if factorized is not None and len(view.join_keys) > 1 and all(k in factorized for k in view.join_keys):
        composed = compose_entity_keys(
            [(factorized[k][0], pick(f"codes {k}", factorized[k][1], np.int64)) for k in view.join_keys]
        )
    if view.columns:
        types = view.column_types
        values = np.empty((rows, len(view.columns)), dtype=np.float64)
        for i, c in enumerate(view.columns):
            # A non-numeric column is only counted or timed: its partial needs no value.
            values[:, i] = pick(f"column {c}", columns[c], np.float64) if _numeric(types[c]) else 0.0
    else:
        values = np.empty((rows, 0), dtype=np.float64)
    raw_values = {
        c: np.asarray(columns[c]) if idx is None else np.asarray(columns[c])[idx] for c in sketch_columns(view)
    }
    if given is not None:
        keys, codes = given[0], pick(f"codes {view.join_keys[0]}", given[1], np.int64)
        if shared:
            keys, codes = used_keys_only(keys, codes)
    elif composed is not None:
        keys, codes = composed
    else:
        keys, codes = factorize_entity_keys([join_values[k] for k in view.join_keys])
    return ViewRows(
        keys=keys,
        codes=codes,
        join_values=join_values,
        event_ts=pick("event_ts", batch.event_ts, np.int64),
        offsets=pick("offsets", batch.offsets, np.int64),
        values=values,
        raw_values=raw_values,
    )


_SKETCH_COLUMNS: dict[bytes, tuple[str, ...]] = {}


def sketch_columns(view: RoutableView) -> tuple[str, ...]:
    """The columns whose decoded values the view's sketch slots read (cached per
    fingerprint: a view's definition never changes under one fingerprint)."""
    found = _SKETCH_COLUMNS.get(view.fingerprint)
    if found is None:
        found = PartialLayout.for_view(view).sketch_columns
        _SKETCH_COLUMNS[view.fingerprint] = found
    return found


def split_by_shard(rows: ViewRows, fingerprint: bytes, shards: int) -> list[tuple[int, ViewRows]]:
    """``(shard, rows of that shard)`` for every shard owning some of ``rows``.

    Each part's key list holds exactly the keys of its rows; rows keep their order.
    """
    owner_of_key = shard_for_many(fingerprint, rows.keys, shards)
    if len(rows.keys) and int(owner_of_key.min()) == int(owner_of_key.max()):
        return [(int(owner_of_key[0]), rows)]
    # Renumber keys so each shard's keys are one contiguous run of codes. Shard ids as
    # uint16 make numpy's stable argsort a radix sort (linear, several times faster).
    small = np.uint16 if shards <= 2**16 else np.int64
    owner_of_key = owner_of_key.astype(small)
    key_order = np.argsort(owner_of_key, kind="stable")
    new_code = np.empty(len(key_order), dtype=np.int64)
    new_code[key_order] = np.arange(len(key_order), dtype=np.int64)
    key_bounds = np.searchsorted(owner_of_key[key_order], np.arange(shards + 1)).tolist()
    codes = new_code[rows.codes]
    owner = owner_of_key[rows.codes]
    row_order = np.argsort(owner, kind="stable")
    row_bounds = np.searchsorted(owner[row_order], np.arange(shards + 1)).tolist()
    sorted_keys = [rows.keys[i] for i in key_order.tolist()]
    out: list[tuple[int, ViewRows]] = []
    for shard in range(shards):
        lo, hi = row_bounds[shard], row_bounds[shard + 1]
        if lo == hi:
            continue
        klo, khi = key_bounds[shard], key_bounds[shard + 1]
        idx = row_order[lo:hi]
        out.append(
            (
                shard,
                ViewRows(
                    keys=sorted_keys[klo:khi],
                    codes=codes[idx] - klo,
                    join_values={k: v[idx] for k, v in rows.join_values.items()},
                    event_ts=rows.event_ts[idx],
                    offsets=rows.offsets[idx],
                    values=rows.values[idx],
                    raw_values={k: v[idx] for k, v in rows.raw_values.items()},
                ),
            )
        )
    return out


def route(
    batch: DecodedBatch,
    views: Sequence[RoutableView],
    shards: int,
    *,
    factorized: Factorized | None = None,
) -> list[tuple[str, ShardBatch]]:
    """One ``(shard key, ShardBatch)`` per shard, for a sink partitioned by shard.

    ``factorized`` (backfill) gives, per string column, distinct entity keys (each
    ``str(value).encode()``) and a code per batch row; single-join-key views on such a
    column use it instead of factorizing again, and their ``join_values`` stay empty.
    """
    per_shard: list[dict[bytes, ViewRows]] = [{} for _ in range(shards)]
    shared = factorized is None
    if shared and len(batch.offsets):
        factorized = factorize_join_columns(views, batch)
    selections = _RowSelections(batch)
    for view in views:
        rows = _view_rows(view, batch, factorized, shared=shared, selections=selections)
        if not len(rows):
            continue
        for shard, part in split_by_shard(rows, view.fingerprint, shards):
            per_shard[shard][view.fingerprint] = part
    return [
        (
            shard_key(shard),
            ShardBatch(
                shard=shard,
                topic=batch.topic,
                partition=batch.partition,
                last_offset=batch.last_offset,
                top_ts_after=batch.top_ts_after,
                views=per_shard[shard],
            ),
        )
        for shard in range(shards)
    ]


def shard_key(shard: int) -> str:
    return f"shard-{shard:03d}"


def merge_codes(parts: Sequence[tuple[ViewRows, int]]) -> tuple[list[bytes], npt.NDArray[np.int64]]:
    """One key list and one code per row over several routed parts of a view.

    Keys are looked up once per distinct key of a part (not per row); keys no row
    names any more (after replay/handoff selection) are dropped, so every returned
    key gets a record written.
    """
    if len(parts) == 1:
        keys, codes = parts[0][0].keys, parts[0][0].codes
    else:
        index: dict[bytes, int] = {}
        setdefault = index.setdefault
        code_parts: list[npt.NDArray[np.int64]] = []
        for rows, _ in parts:
            to_global = np.fromiter(
                (setdefault(k, len(index)) for k in rows.keys), dtype=np.int64, count=len(rows.keys)
            )
            code_parts.append(to_global[rows.codes])
        keys, codes = list(index), np.concatenate(code_parts)
    used = np.bincount(codes, minlength=len(keys)) > 0
    if not bool(used.all()):
        new_code = np.cumsum(used, dtype=np.int64) - 1
        keys = [k for k, u in zip(keys, used.tolist(), strict=True) if u]
        codes = new_code[codes]
    return keys, codes
