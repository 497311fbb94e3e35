"""Hot and cold parts (engine/kernel/codec.py, engine/view_merge.py): applying the same
batches with entities split into a cold and a hot part (a small ``SPILL_ABOVE`` forces
splits, late events reach cold parts, retention trims and folds them, the sweep runs
between batches) stores, for every (view, entity), byte for byte the record written
without splits once the parts are joined, and serving reads the same records."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import engine.view_merge as view_merge
from engine.apply import ShardApplier
from engine.kernel.codec import encode_tiles, has_cold, join_parts, split_record
from engine.retention import sweep_view
from engine.routing import route
from engine.state.online_rocksdb import RocksDBOnlineTable
from engine.state.records import COLD_PREFIX, TILE_PREFIX
from engine.state.rocksdb_store import RocksDBStore
from serving.online import OnlineAccess
from tests.engine.streaming_support import example_views, transactions_batch

START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
SHARDS = 2
MINUTE = 60_000
_SOURCE, VIEWS = example_views("transactions")


@contextlib.contextmanager
def _spill(above: int, keep: int) -> Iterator[None]:
    saved = view_merge.SPILL_ABOVE, view_merge.HOT_KEEP
    view_merge.SPILL_ABOVE, view_merge.HOT_KEEP = above, keep
    try:
        yield
    finally:
        view_merge.SPILL_ABOVE, view_merge.HOT_KEEP = saved


def _whole_records(store: RocksDBStore) -> list[dict[bytes, bytes]]:
    """Every shard's keys and values with each hot part joined to its cold part; checks
    that every cold part belongs to a flagged tile record and the other way round."""
    out = []
    for part in store.partitions:
        contents = dict(part.scan_prefix(b""))
        colds = {k[1:]: v for k, v in contents.items() if k.startswith(COLD_PREFIX)}
        whole = {}
        for key, value in contents.items():
            if key.startswith(COLD_PREFIX):
                continue
            if key.startswith(TILE_PREFIX) and has_cold(value):
                whole[key] = join_parts(colds.pop(key[1:]), value)
            else:
                whole[key] = value
        assert colds == {}, "a cold part without a flagged tile record"
        out.append(whole)
    return out


def _appliers(store: RocksDBStore) -> list[ShardApplier]:
    return [
        ShardApplier(store.partition(shard), VIEWS, "transactions", clock_ms=lambda: START_MS)
        for shard in range(SHARDS)
    ]


def _sweep(store: RocksDBStore, appliers: list[ShardApplier], limit: int) -> None:
    for applier in appliers:
        for compiled in applier.views.values():
            view = compiled.view
            sweep_view(
                store.partition(applier.partition.shard),
                view.fingerprint,
                view.retention_ms,
                view.interval_ms,
                compact_into=compiled.layout if view.has_lifetime_window else None,
                limit=limit,
            )


batches = st.lists(
    st.tuples(
        st.lists(st.tuples(st.integers(0, 3), st.integers(-30, 30)), min_size=1, max_size=10),
        st.integers(0, 40),  # minutes the batch's time moves on
        st.booleans(),  # sweep after the batch
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=batches, above=st.integers(1, 5), keep=st.integers(1, 5), gap_days=st.integers(0, 1))
def test_parts_join_to_the_records_written_whole(
    tmp_path_factory: pytest.TempPathFactory,
    batches: list[tuple[list[tuple[int, int]], int, bool]],
    above: int,
    keep: int,
    gap_days: int,
) -> None:
    keep = min(keep, above)
    root = Path(str(tmp_path_factory.mktemp("cold")))
    whole_store, split_store = RocksDBStore(root / "whole", SHARDS), RocksDBStore(root / "split", SHARDS)
    try:
        whole, split = _appliers(whole_store), _appliers(split_store)
        now, offset = START_MS, 0
        for i, (events, step, sweep) in enumerate(batches):
            # Half way a jump of a day, so whole parts expire (retention and folds).
            now += step * MINUTE + (gap_days * 86_400_000 if i == len(batches) // 2 else 0)
            ts = np.array([now + minutes * MINUTE + 7 * j for j, (_, minutes) in enumerate(events)], dtype=np.int64)
            batch = transactions_batch(ts, [f"u{u}" for u, _ in events], first_offset=offset)
            offset += len(events)
            routed = [b for _, b in route(dataclasses.replace(batch, partition=0), VIEWS, SHARDS)]
            with _spill(10**9, 1):
                for applier in whole:
                    applier.apply([b for b in routed if b.shard == applier.partition.shard])
                if sweep:
                    _sweep(whole_store, whole, 3)
            with _spill(above, keep):
                for applier in split:
                    applier.apply([b for b in routed if b.shard == applier.partition.shard])
                if sweep:
                    _sweep(split_store, split, 3)
            got, want = _whole_records(split_store), _whole_records(whole_store)
            for shard, (g, w) in enumerate(zip(got, want, strict=True)):
                bad = sorted(k for k in g.keys() | w.keys() if g.get(k) != w.get(k))
                assert not bad, (shard, i, above, keep, [(k, g.get(k), w.get(k)) for k in bad][:2])
    finally:
        whole_store.close()
        split_store.close()


class _Table:
    """An online table over plain dicts (tile keys and cold keys by entity)."""

    def __init__(self, hot: dict[bytes, bytes], cold: dict[bytes, bytes]) -> None:
        self.hot, self.cold = hot, cold
        self.part_reads = 0

    def read_views(self, requests: list[tuple[bytes, list[bytes]]]) -> list[list[bytes | None]]:
        return [[self.hot.get(k) for k in keys] for _, keys in requests]

    def read_parts(self, fingerprint: bytes, keys: list[bytes]) -> list[tuple[bytes | None, bytes | None]]:
        self.part_reads += 1
        return [(self.hot.get(k), self.cold.get(k)) for k in keys]


@given(n_tiles=st.integers(1, 9), cut=st.integers(1, 8), slots=st.integers(0, 2), data=st.data())
def test_serving_reads_the_whole_record(n_tiles: int, cut: int, slots: int, data: st.DataObject) -> None:
    tiles = np.array(sorted(data.draw(st.sets(st.integers(0, 50), min_size=n_tiles, max_size=n_tiles))))
    partials = np.arange(n_tiles * 2, dtype=np.float64).reshape(n_tiles, 2)
    blobs = None
    if slots:
        blobs = np.empty((n_tiles, slots), dtype=object)
        blobs[:] = [[data.draw(st.binary(max_size=3)) for _ in range(slots)] for _ in range(n_tiles)]
    record = encode_tiles(tiles, partials, 99, blobs)
    hot, cold = {b"small": record}, {}
    if cut < n_tiles:
        cold[b"big"], hot[b"big"] = split_record(record, cut)
    table = _Table(hot, cold)
    access = OnlineAccess(table, None, backend="test")  # type: ignore[arg-type]
    found = access.read_views([(b"f" * 8, [b"small", b"big", b"none"])])
    assert found == [[record, record if cut < n_tiles else None, None]]
    assert table.part_reads == (1 if cut < n_tiles else 0)
    assert access.read_views([(b"f" * 8, [b"small"])]) == [[record]]
    assert table.part_reads == (1 if cut < n_tiles else 0)  # a small entity: no second read


def test_rocksdb_reads_hot_and_cold_parts_together(tmp_path: Path) -> None:
    """Entities of many tiles, applied with the default ``SPILL_ABOVE``, are stored in two
    parts and served whole from the RocksDB secondaries (one multi-get per such entity)."""
    store = RocksDBStore(tmp_path / "state", SHARDS)
    minutes = np.arange(view_merge.SPILL_ABOVE * 3, dtype=np.int64)
    ts = START_MS + np.repeat(minutes, 2) * MINUTE
    users = ["u1", "u2"] * len(minutes)
    try:
        appliers = _appliers(store)
        for lo in range(0, len(ts), 30):  # many batches: hot parts spill into cold ones
            batch = transactions_batch(ts[lo : lo + 30], users[lo : lo + 30], first_offset=lo)
            routed = [b for _, b in route(batch, VIEWS, SHARDS)]
            for applier in appliers:
                applier.apply([b for b in routed if b.shard == applier.partition.shard])
        whole = {k: v for shard in _whole_records(store) for k, v in shard.items() if k.startswith(TILE_PREFIX)}
        flagged = [k for part in store.partitions for k, v in part.scan_prefix(TILE_PREFIX) if has_cold(v)]
    finally:
        store.close()
    assert flagged, "no entity was split"
    with RocksDBOnlineTable(tmp_path / "state", SHARDS, tmp_path / "sec", background=False) as table:
        access = OnlineAccess(table, None, backend="rocksdb")  # type: ignore[arg-type]
        for key in flagged:
            fingerprint, entity = key[1:9], key[9:]
            assert access.read_views([(fingerprint, [entity, b"nobody"])]) == [[whole[key], None]]
