"""One contract for every OnlineTable: values written by the ingest side read back."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import redis

from engine.apply import ShardApplier
from engine.io.batches import DecodedBatch
from engine.routing import route
from engine.state.keys import entity_key, shard_for
from engine.state.offsets import OffsetRecord
from engine.state.online_redis import RedisOnlineTable
from engine.state.online_rocksdb import RocksDBOnlineTable
from engine.state.protocols import OnlineTable
from engine.state.records import UNKNOWN_FRESHNESS, Freshness, tile_key
from engine.state.redis_writer import RedisOnlineWriter
from engine.state.rocksdb_store import RocksDBStore
from tests.engine.streaming_support import example_views, transactions_batch

FP_A = bytes.fromhex("a1a2a3a4a5a6a7a8")
FP_B = bytes.fromhex("b1b2b3b4b5b6b7b8")
N_SHARDS = 4


class Harness:
    """Writes like the ingest side does and exposes the table under test."""

    def __init__(self, store: RocksDBStore, table: OnlineTable, writer: RedisOnlineWriter | None) -> None:
        self.store = store
        self.table = table
        self.writer = writer

    def write(self, fingerprint: bytes, items: Sequence[tuple[bytes, bytes | None]]) -> None:
        txs = [part.begin() for part in self.store.partitions]
        for key, value in items:
            tx = txs[shard_for(fingerprint, key, N_SHARDS)]
            if value is None:
                tx.delete(tile_key(fingerprint, key))
            else:
                tx.put(tile_key(fingerprint, key), value)
        for tx in txs:
            tx.commit()
        if self.writer is not None:
            self.writer.write([(fingerprint, k, v) for k, v in items], ttl_ms=60_000)

    def visible(self) -> None:
        """What a reader does to see everything committed so far."""
        self.table.refresh()


@pytest.fixture(params=["rocksdb", pytest.param("redis", marks=pytest.mark.redis)])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    store = RocksDBStore(tmp_path / "state", N_SHARDS)
    table: OnlineTable
    writer = None
    if request.param == "rocksdb":
        table = RocksDBOnlineTable(tmp_path / "state", N_SHARDS, tmp_path / "secondary", background=False)
    else:
        url: str = request.getfixturevalue("state_redis_url")
        admin: redis.Redis[bytes] = redis.Redis.from_url(url)
        admin.flushdb()
        admin.close()
        table = RedisOnlineTable(url)
        writer = RedisOnlineWriter(url)
    try:
        yield Harness(store, table, writer)
    finally:
        table.close()
        if writer is not None:
            writer.close()
        store.close()


def keys(n: int, prefix: str = "user") -> list[bytes]:
    return [entity_key([f"{prefix}-{i}"]) for i in range(n)]


def test_is_an_online_table(harness: Harness) -> None:
    assert isinstance(harness.table, OnlineTable)
    health = harness.table.health()
    assert health.ready, health.detail


def test_a_current_table_is_never_behind(harness: Harness) -> None:
    """reopen_if_behind is False for a table that shows what was written (Redis: always)."""
    txs = [part.begin() for part in harness.store.partitions]
    for shard, tx in enumerate(txs):
        tx.set_offset("events", 0, OffsetRecord(shard + 1, (1,), shard, (1,)))
        tx.commit()
    harness.visible()
    assert harness.table.reopen_if_behind("events") is False


def test_missing_keys_read_as_none(harness: Harness) -> None:
    harness.visible()
    assert harness.table.read(FP_A, keys(3)) == [None, None, None]
    assert harness.table.read(FP_A, []) == []


def test_batch_across_shards_round_trip(harness: Harness) -> None:
    entities = keys(600)
    assert len({shard_for(FP_A, k, N_SHARDS) for k in entities}) == N_SHARDS
    harness.write(FP_A, [(k, b"value:" + k) for k in entities])
    harness.visible()
    request = [*entities[::-1], entity_key(["absent"]), *entities[:5]]
    got = harness.table.read(FP_A, request)
    assert got == [b"value:" + k for k in entities[::-1]] + [None] + [b"value:" + k for k in entities[:5]]
    assert harness.table.read(FP_A, [entities[17]]) == [b"value:" + entities[17]]


def test_binary_values_and_multi_part_keys(harness: Harness) -> None:
    key = entity_key(["merchant-ü", 42])
    value = bytes(range(256)) * 20
    harness.write(FP_A, [(key, value)])
    harness.visible()
    assert harness.table.read(FP_A, [key]) == [value]


def test_views_are_isolated(harness: Harness) -> None:
    shared = keys(10)
    harness.write(FP_A, [(k, b"A") for k in shared])
    harness.write(FP_B, [(k, b"B") for k in shared[:5]])
    harness.visible()
    assert harness.table.read(FP_A, shared) == [b"A"] * 10
    assert harness.table.read(FP_B, shared) == [b"B"] * 5 + [None] * 5


def test_several_views_read_at_once(harness: Harness) -> None:
    users, shops = keys(40), keys(7, "shop")
    harness.write(FP_A, [(k, b"A:" + k) for k in users])
    harness.write(FP_B, [(k, b"B:" + k) for k in shops[:3]])
    harness.visible()
    ask_a = [users[3], entity_key(["absent"]), users[39]]
    got = harness.table.read_views([(FP_A, ask_a), (FP_B, shops), (FP_A, [])])
    assert got == [harness.table.read(FP_A, ask_a), harness.table.read(FP_B, shops), []]
    assert got[0] == [b"A:" + users[3], None, b"A:" + users[39]]
    assert got[1] == [b"B:" + k for k in shops[:3]] + [None] * 4
    assert harness.table.read_views([]) == []


def test_new_commits_visible_after_refresh(harness: Harness) -> None:
    first, second = keys(50, "first"), keys(50, "second")
    harness.write(FP_A, [(k, b"1") for k in first])
    harness.visible()
    assert harness.table.read(FP_A, first) == [b"1"] * 50
    harness.write(FP_A, [(k, b"2") for k in second])
    harness.visible()
    assert harness.table.read(FP_A, first + second) == [b"1"] * 50 + [b"2"] * 50


def test_overwrite_and_delete(harness: Harness) -> None:
    entities = keys(40)
    harness.write(FP_A, [(k, b"old") for k in entities])
    harness.visible()
    harness.write(FP_A, [(k, b"new") for k in entities[:20]] + [(k, None) for k in entities[20:30]])
    harness.visible()
    assert harness.table.read(FP_A, entities) == [b"new"] * 20 + [None] * 10 + [b"old"] * 10


def test_packed_tile_records_survive_the_round_trip(harness: Harness) -> None:
    codec = pytest.importorskip("engine.kernel.codec")
    rng = np.random.default_rng(7)
    entities = keys(30, "packed")
    expected = {}
    for i, key in enumerate(entities):
        tiles = np.sort(rng.choice(50_000, size=i + 1, replace=False)).astype(np.int64)
        partials = rng.normal(size=(i + 1, 16))
        expected[key] = (tiles, partials, 1_700_000_000_000 + i)
    harness.write(FP_A, [(k, codec.encode_tiles(*v)) for k, v in expected.items()])
    harness.visible()
    for key, value in zip(entities, harness.table.read(FP_A, entities), strict=True):
        assert value is not None
        tiles, partials, max_ts = codec.decode_tiles(value)
        np.testing.assert_array_equal(tiles, expected[key][0])
        np.testing.assert_array_equal(partials, expected[key][1])
        assert max_ts == expected[key][2]


START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
WRITTEN_AT_MS = 1_767_229_200_000


def _transactions(first_offset: int, users: Sequence[str], step_ms: int) -> DecodedBatch:
    ts = START_MS + np.arange(first_offset, first_offset + len(users), dtype=np.int64) * step_ms
    return transactions_batch(ts, users, first_offset=first_offset)


def test_freshness_written_by_the_real_writer_reads_back(harness: Harness) -> None:
    """The freshness record as the ingest writer (ShardApplier, with its Redis copy when
    the table is Redis) writes it, in every shard: the table answers the freshest shard's."""
    _source, views = example_views("transactions")
    appliers = {
        shard: ShardApplier(
            harness.store.partition(shard),
            views,
            "transactions",
            online_copy=harness.writer,
            clock_ms=lambda: WRITTEN_AT_MS,
        )
        for shard in range(N_SHARDS)
    }
    view = views[0]
    harness.visible()
    assert harness.table.read_meta(view.fingerprint) == UNKNOWN_FRESHNESS

    users = [f"user-{i}" for i in range(40)]
    batch = _transactions(0, users, step_ms=1_000)
    routed = route(batch, views, N_SHARDS)
    assert len(routed) == N_SHARDS  # every shard writes its own record
    for _, shard_batch in routed:
        appliers[shard_batch.shard].apply([shard_batch])
    harness.visible()
    newest = int(batch.event_ts.max())
    for each in views:
        assert harness.table.read_meta(each.fingerprint) == Freshness(newest, WRITTEN_AT_MS)
    user_spend = next(v for v in views if v.join_keys == ("user_id",))
    user_keys = [entity_key([u]) for u in users]
    stored = [
        part.get_many([tile_key(user_spend.fingerprint, k) for k in user_keys]) for part in harness.store.partitions
    ]
    written = [next(v for v in per_user if v is not None) for per_user in zip(*stored, strict=True)]
    assert harness.table.read(user_spend.fingerprint, user_keys) == written

    # A later batch reaching one shard only moves the view's freshness forward.
    later = _transactions(1_000, ["user-0"], step_ms=1_000)
    for _, shard_batch in route(later, views, N_SHARDS):
        appliers[shard_batch.shard].apply([shard_batch])
    harness.visible()
    assert harness.table.read_meta(view.fingerprint) == Freshness(int(later.event_ts.max()), WRITTEN_AT_MS)
    # The offset records (how far the log is published) read back as the shards hold them.
    in_shards = [part.read_offsets("transactions") for part in harness.store.partitions]
    read_back = harness.table.read_offsets("transactions")
    assert read_back is not None and [r for r in read_back if r] == [r for r in in_shards if r]
    assert sum(len(r) for r in in_shards) == N_SHARDS  # partition 0 in every shard
    for applier in appliers.values():
        applier.close()
