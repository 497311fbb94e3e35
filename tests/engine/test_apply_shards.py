"""One kernel call for several shards (engine.apply.apply_shards, what a streaming worker
runs for its group of shards) writes exactly what one apply per shard writes: the same
records, metadata and offsets in every shard, replays included, however many rows one
call may take."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import engine.apply
import engine.view_merge
from engine.apply import GROUP_VIEW_ROWS, ShardApplier, apply_shards
from engine.io.batches import DecodedBatch
from engine.routing import ShardBatch, route
from engine.state.rocksdb_store import RocksDBStore
from engine.view_merge import CompiledView, MergedView, ShardRows
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
@given(cycles=cycles, group_view_rows=st.sampled_from([1, 40, GROUP_VIEW_ROWS]))
def test_one_call_for_all_shards_writes_what_one_apply_per_shard_writes(
    tmp_path_factory: object, cycles: list[list[tuple[int, list[int], int]]], group_view_rows: int
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
            apply_shards(
                [(a, [b for b in routed if b.shard == a.partition.shard]) for a in group],
                group_view_rows=group_view_rows,
            )
        assert _contents(one_by_one) == _contents(together)
        for single, grouped in zip(singles, group, strict=True):
            assert single.offsets == grouped.offsets
            assert single.stats.rows_applied == grouped.stats.rows_applied
            assert single.stats.rows_skipped_replay == grouped.stats.rows_skipped_replay
    finally:
        one_by_one.close()
        together.close()


@pytest.mark.parametrize("bound", ["all", "one", "two"])
def test_shards_share_a_kernel_call_until_their_rows_pass_the_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bound: str
) -> None:
    shards_per_call: list[int] = []
    merge = engine.view_merge.merge_view_rows_many

    def counting_merge(compiled: CompiledView, shards: Sequence[ShardRows], now_ms: int) -> list[MergedView]:
        shards_per_call.append(len(shards))
        return merge(compiled, shards, now_ms)

    monkeypatch.setattr(engine.apply, "merge_view_rows_many", counting_merge)
    view = next(v for v in VIEWS if v.name == "user_spend")
    routed = _routed(_batches([(0, list(range(40)), list(range(40)))])[0])
    work_rows = {b.shard: b.row_count for b in routed}
    assert len(work_rows) == SHARDS, "every shard needs rows for this test"
    limit = {"all": sum(work_rows.values()), "one": 1, "two": work_rows[0] + work_rows[1]}[bound]
    store = RocksDBStore(tmp_path / "state", SHARDS)
    try:
        appliers = [
            ShardApplier(store.partition(shard), [view], "transactions", clock_ms=lambda: START_MS)
            for shard in range(SHARDS)
        ]
        apply_shards(
            [(a, [b for b in routed if b.shard == a.partition.shard]) for a in appliers], group_view_rows=limit
        )
    finally:
        store.close()
    if bound == "all":
        assert shards_per_call == [SHARDS]
    elif bound == "one":
        assert shards_per_call == [1] * SHARDS
    else:
        assert shards_per_call[0] == 2
        assert sum(shards_per_call) == SHARDS


def test_a_view_that_joins_its_stream_starts_empty_and_takes_events_from_the_join(tmp_path: Path) -> None:
    """settle_joins: a fingerprint applied again holds records from before it was removed
    (with every event of the time it was away missing); joining clears them and sets the
    handoff, once: the next open leaves the view's new state alone."""
    from engine.apply import ShardApplier, settle_joins
    from engine.routing import route
    from engine.state.records import decode_handoff, handoff_key, meta_key, view_prefix
    from engine.state.rocksdb_store import RocksDBStore
    from tests.engine.streaming_support import example_views, transactions_batch

    _source, views = example_views("transactions")
    start = 1_767_225_600_000
    old = transactions_batch(start + np.arange(4, dtype=np.int64) * 1_000, [f"j-{i}" for i in range(4)])
    with RocksDBStore(tmp_path / "state", 1) as store:
        part = store.partition(0)
        first = ShardApplier(part, views, "transactions")
        first.apply([b for _, b in route(old, views, 1)])
        first.close()
        view = views[0]
        assert list(part.scan_prefix(view_prefix(view.fingerprint)))
        join_at = start + 10_000
        assert settle_joins(part, {view.fingerprint: join_at}) == (view.fingerprint,)
        assert not list(part.scan_prefix(view_prefix(view.fingerprint)))  # its stale records are gone
        assert part.get_many([meta_key(view.fingerprint)]) == [None]
        assert [decode_handoff(r) for r in part.get_many([handoff_key(view.fingerprint)]) if r] == [join_at]
        others = [v for v in views[1:] if list(part.scan_prefix(view_prefix(v.fingerprint)))]
        assert others  # the other views keep theirs
        # The stream: the joined view takes the events at or after the join only.
        later = transactions_batch(
            np.array([join_at - 1, join_at, join_at + 1], dtype=np.int64), ["j-0", "j-1", "j-2"], first_offset=4
        )
        applier = ShardApplier(part, views, "transactions", joins={view.fingerprint: join_at})
        applier.apply([b for _, b in route(later, views, 1)])
        applier.close()
        kept = list(part.scan_prefix(view_prefix(view.fingerprint)))
        assert settle_joins(part, {view.fingerprint: join_at}) == ()  # settled once
        assert list(part.scan_prefix(view_prefix(view.fingerprint))) == kept
        assert applier.stats.rows_skipped_handoff >= 1
