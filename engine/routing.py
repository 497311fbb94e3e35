"""Split a decoded batch of one source partition into one item per state shard.

Every shard receives an item for every source batch, even when none of the batch's
rows belong to it: the item still carries the partition's last offset and maximum
event time, so every shard records the same progress and a restart never has to
replay from a shard that simply saw no traffic (docs/semantics.md, section 6).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from engine.io.batches import DecodedBatch

ENTITY_KEY_SEPARATOR = "\x1f"


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


@dataclass(frozen=True)
class ViewRows:
    """The rows of one view that belong to one shard, ready for the kernel."""

    entity_keys: list[bytes]
    join_values: dict[str, npt.NDArray[np.object_]]
    event_ts: npt.NDArray[np.int64]
    offsets: npt.NDArray[np.int64]
    values: npt.NDArray[np.float64]  # shape (rows, len(view.columns))

    def __len__(self) -> int:
        return len(self.entity_keys)

    def select(self, mask: npt.NDArray[np.bool_]) -> ViewRows:
        idx = np.flatnonzero(mask)
        return ViewRows(
            entity_keys=[self.entity_keys[i] for i in idx.tolist()],
            join_values={k: v[idx] for k, v in self.join_values.items()},
            event_ts=self.event_ts[idx],
            offsets=self.offsets[idx],
            values=self.values[idx],
        )


@dataclass(frozen=True)
class ShardBatch:
    """One source batch's share for one shard. ``views`` maps fingerprint -> rows."""

    shard: int
    topic: str
    partition: int
    last_offset: int
    max_ts_after: int
    views: dict[bytes, ViewRows] = field(default_factory=dict)

    @property
    def row_count(self) -> int:
        return sum(len(rows) for rows in self.views.values())


def encode_entity_keys(join_values: Sequence[npt.NDArray[np.object_]]) -> list[bytes]:
    """Entity key bytes per row: join-key values as text, UTF-8, joined by 0x1F."""
    if len(join_values) == 1:
        return [str(v).encode() for v in join_values[0].tolist()]
    return [
        ENTITY_KEY_SEPARATOR.join(str(v) for v in parts).encode()
        for parts in zip(*(col.tolist() for col in join_values), strict=True)
    ]


def shard_of(
    fingerprint: bytes, entity_keys: Sequence[bytes], shards: int
) -> npt.NDArray[np.int64]:
    """``crc32(fingerprint + entity key) mod shards`` for each key."""
    crc = zlib.crc32
    seed = crc(fingerprint)
    return (
        np.fromiter((crc(k, seed) for k in entity_keys), dtype=np.int64, count=len(entity_keys))
        % shards
    )


def _view_rows(view: RoutableView, batch: DecodedBatch) -> ViewRows:
    columns = batch.columns
    n = len(batch.offsets)
    mask: npt.NDArray[np.bool_] | None = None
    if view.filter is not None and n:
        mask = np.asarray(view.filter.evaluate(columns), dtype=np.bool_)  # type: ignore[attr-defined]
    idx = np.flatnonzero(mask) if mask is not None else np.arange(n)
    join_values = {k: np.asarray(columns[k], dtype=object)[idx] for k in view.join_keys}
    if view.columns:
        types = view.column_types
        values = np.column_stack(
            [
                # A non-numeric column is only ever counted: its partial needs no value.
                np.asarray(columns[c], dtype=np.float64)[idx]
                if str(getattr(types[c], "value", types[c])) in ("int", "float", "bool")
                else np.zeros(len(idx), dtype=np.float64)
                for c in view.columns
            ]
        )
    else:
        values = np.empty((len(idx), 0), dtype=np.float64)
    return ViewRows(
        entity_keys=encode_entity_keys([join_values[k] for k in view.join_keys]),
        join_values=join_values,
        event_ts=np.asarray(batch.event_ts, dtype=np.int64)[idx],
        offsets=np.asarray(batch.offsets, dtype=np.int64)[idx],
        values=values,
    )


def route(
    batch: DecodedBatch, views: Sequence[RoutableView], shards: int
) -> list[tuple[str, ShardBatch]]:
    """One ``(shard key, ShardBatch)`` per shard, for a sink partitioned by shard."""
    per_shard: list[dict[bytes, ViewRows]] = [{} for _ in range(shards)]
    for view in views:
        rows = _view_rows(view, batch)
        if not len(rows):
            continue
        owner = shard_of(view.fingerprint, rows.entity_keys, shards)
        for shard in np.unique(owner).tolist():
            per_shard[shard][view.fingerprint] = rows.select(owner == shard)
    return [
        (
            shard_key(shard),
            ShardBatch(
                shard=shard,
                topic=batch.topic,
                partition=batch.partition,
                last_offset=batch.last_offset,
                max_ts_after=batch.max_ts_after,
                views=per_shard[shard],
            ),
        )
        for shard in range(shards)
    ]


def shard_key(shard: int) -> str:
    return f"shard-{shard:03d}"
