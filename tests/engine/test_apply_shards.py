"""One kernel call for several shards (engine.apply.apply_shards, what a streaming worker
runs for its group of shards) writes exactly what one apply per shard writes: the same
records, metadata and offsets in every shard, replays included."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.apply import ShardApplier, apply_shards
from engine.io.batches import DecodedBatch
from engine.routing import ShardBatch, route
from engine.state.rocksdb_store import RocksDBStore
from tests.engine.streaming_support import example_views, transactions_batch

START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
SHARDS = 4
_SOURCE, VIEWS = example_views("transactions")


def _batches(spec: list[tuple[int, list[int], list[int]]]) -> list[DecodedBatch]:
    """Per source batch (partition, user numbers, seconds after START_MS); offsets follow
    on per partition, and a negative first second replays the partition from offset 0."""
    next_offset: dict[int, int] = {}
    out = []
    for partition, users, seconds in spec:
        first = next_offset.get(partition, 0)
        if seconds[0] < 0:
            first = 0
        ts = START_MS + np.abs(np.asarray(seconds, dtype=np.int64)) * 1_000
        batch = transactions_batch(ts, [f"u{u}" for u in users], first_offset=first, cards=[f"c{u % 3}" for u in users])
        out.append(dataclasses.replace(batch, partition=partition))
        next_offset[partition] = max(next_offset.get(partition, 0), first + len(users))
    return out


def _appliers(store: RocksDBStore) -> list[ShardApplier]:
    return [
        ShardApplier(store.partition(shard), VIEWS, "transactions", clock_ms=lambda: START_MS)
        for shard in range(SHARDS)
    ]


def _contents(store: RocksDBStore) -> list[list[tuple[bytes, bytes]]]:
    return [list(part.scan_prefix(b"")) for part in store.partitions]


def _routed(batch: DecodedBatch) -> list[ShardBatch]:
    return [shard_batch for _, shard_batch in route(batch, VIEWS, SHARDS)]


cycles = st.lists(
    st.lists(
        st.tuples(
            st.integers(0, 2),
            st.lists(st.integers(0, 30), min_size=1, max_size=12),
            st.integers(-4_000, 4_000),
        ),
        min_size=1,
        max_size=3,
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cycles=cycles)
def test_one_call_for_all_shards_writes_what_one_apply_per_shard_writes(
    tmp_path_factory: object, cycles: list[list[tuple[int, list[int], int]]]
) -> None:
    spec = [
        (partition, users, [start + 7 * i for i in range(len(users))])
        for cycle in cycles
        for partition, users, start in cycle
    ]
    batches = _batches(spec)
    bounds = np.cumsum([0] + [len(cycle) for cycle in cycles]).tolist()
    root = Path(str(tmp_path_factory.mktemp("shards")))  # type: ignore[attr-defined]
    one_by_one, together = RocksDBStore(root / "a", SHARDS), RocksDBStore(root / "b", SHARDS)
    try:
        singles, group = _appliers(one_by_one), _appliers(together)
        for lo, hi in itertools.pairwise(bounds):
            routed = [b for batch in batches[lo:hi] for b in _routed(batch)]
            for applier in singles:
                applier.apply([b for b in routed if b.shard == applier.partition.shard])
            apply_shards([(a, [b for b in routed if b.shard == a.partition.shard]) for a in group])
        assert _contents(one_by_one) == _contents(together)
        for single, grouped in zip(singles, group, strict=True):
            assert single.offsets == grouped.offsets
            assert single.stats.rows_applied == grouped.stats.rows_applied
            assert single.stats.rows_skipped_replay == grouped.stats.rows_skipped_replay
    finally:
        one_by_one.close()
        together.close()
