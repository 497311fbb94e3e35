"""Redis writer details and outage behaviour of the Redis online table."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import redis

from engine.state.exceptions import OnlineTableUnavailable, OnlineWriteError, StateValueError
from engine.state.keys import entity_key, shard_for
from engine.state.online_redis import RedisOnlineTable
from engine.state.protocols import ColdWrites
from engine.state.records import REDIS_TILE_PREFIX, redis_cold_key, redis_copied_key, redis_key
from engine.state.redis_writer import RedisOnlineWriter
from tests.fixtures.redis import RedisServer
from tests.reference import redis_tile_key_bytes

FP = bytes.fromhex("00000000000000ff")

pytestmark = pytest.mark.redis


def test_writer_sets_expiry_and_deletes(state_redis_url: str) -> None:
    admin: redis.Redis[bytes] = redis.Redis.from_url(state_redis_url)
    key_a, key_b = entity_key(["ttl-a"]), entity_key(["ttl-b"])
    with RedisOnlineWriter(state_redis_url) as writer:
        writer.write([(FP, key_a, b"a"), (FP, key_b, b"b")], ttl_ms=30_000)
        assert admin.get(redis_tile_key_bytes(FP, key_a)) == b"a"
        assert 0 < admin.pttl(redis_key(FP, key_a)) <= 30_000
        writer.write([(FP, key_a, b"a2")], ttl_ms=None)
        assert admin.pttl(redis_key(FP, key_a)) == -1  # no expiry
        writer.write([(FP, key_b, None)], ttl_ms=30_000)
        assert admin.exists(redis_key(FP, key_b)) == 0
        writer.write([], ttl_ms=1)  # nothing to do is fine
        with pytest.raises(StateValueError, match="ttl_ms"):
            writer.write([(FP, key_a, b"x")], ttl_ms=0)
    admin.close()


def test_cold_parts_are_written_with_their_tile_records_and_read_together(state_redis_url: str) -> None:
    admin: redis.Redis[bytes] = redis.Redis.from_url(state_redis_url)
    key_a, key_b = entity_key(["cold-a"]), entity_key(["cold-b"])
    with RedisOnlineWriter(state_redis_url) as writer, RedisOnlineTable(state_redis_url) as table:
        writer.write([(FP, key_a, b"hot-a"), (FP, key_b, b"b")], 30_000, ColdWrites([(FP, key_a, b"cold-a")], []))
        assert table.read_parts(FP, [key_a, key_b]) == [(b"hot-a", b"cold-a"), (b"b", None)]
        assert 0 < admin.pttl(redis_cold_key(FP, key_a)) <= 30_000
        admin.pexpire(redis_cold_key(FP, key_a), 1_000)
        writer.write([(FP, key_a, b"hot-a2")], 30_000, ColdWrites([], [(FP, key_a)]))
        assert admin.pttl(redis_cold_key(FP, key_a)) > 1_000  # renewed with its tile record
        writer.write([(FP, key_a, b"whole")], 30_000, ColdWrites([(FP, key_a, None)], []))
        assert table.read_parts(FP, [key_a]) == [(b"whole", None)]
        assert table.read_parts(FP, []) == []
    admin.close()


def test_outage_raises_typed_error_and_recovers(restartable_redis: RedisServer) -> None:
    key = entity_key(["u1"])
    table = RedisOnlineTable(restartable_redis.url, socket_timeout_s=0.5)
    writer = RedisOnlineWriter(restartable_redis.url, socket_timeout_s=0.5)
    try:
        writer.write([(FP, key, b"before")], ttl_ms=60_000)
        assert table.read(FP, [key]) == [b"before"]

        restartable_redis.stop(kill=True)
        with pytest.raises(OnlineTableUnavailable) as info:
            table.read(FP, [key])
        assert f"127.0.0.1:{restartable_redis.port}" in info.value.reason
        health = table.health()
        assert not health.ready and health.last_error is not None
        with pytest.raises(OnlineWriteError):
            writer.write([(FP, key, b"lost")], ttl_ms=60_000)

        restartable_redis.start()  # same port, empty (no persistence)
        assert table.read(FP, [key]) == [None]
        writer.write([(FP, key, b"after")], ttl_ms=60_000)
        assert table.read(FP, [key]) == [b"after"]
        assert table.health().ready
    finally:
        table.close()
        writer.close()


def test_each_views_records_expire_after_its_own_retention(state_redis_url: str) -> None:
    # One batch writes records of a windowed view and of a lifetime view: before, the
    # lifetime view took the expiry off every record of the batch (none ever expired).
    admin: redis.Redis[bytes] = redis.Redis.from_url(state_redis_url)
    windowed, lifetime, longer = FP, bytes.fromhex("00000000000000fe"), bytes.fromhex("00000000000000fd")
    key = entity_key(["per-view-ttl"])
    with RedisOnlineWriter(state_redis_url) as writer:
        ttl = {windowed: 30_000, lifetime: None, longer: 90_000}
        writer.write([(windowed, key, b"w"), (lifetime, key, b"l"), (longer, key, b"x")], ttl)
        assert 0 < admin.pttl(redis_key(windowed, key)) <= 30_000
        assert admin.pttl(redis_key(lifetime, key)) == -1
        assert 30_000 < admin.pttl(redis_key(longer, key)) <= 90_000
        with pytest.raises(StateValueError, match="ttl_ms"):
            writer.write([(windowed, key, b"w")], {windowed: 0})
    admin.close()


def test_the_applier_gives_each_views_redis_records_its_own_expiry(state_redis_url: str, tmp_path: Path) -> None:
    # The example repo has a lifetime view on the same source as its windowed views: one
    # batch writes all of them. Each record gets its view's retention; the lifetime view's none.
    from engine.apply import ShardApplier
    from engine.routing import route
    from engine.state.rocksdb_store import RocksDBStore
    from tests.engine.streaming_support import example_views, transactions_batch

    _source, views = example_views("transactions")
    assert any(v.has_lifetime_window for v in views) and any(not v.has_lifetime_window for v in views)
    admin: redis.Redis[bytes] = redis.Redis.from_url(state_redis_url)
    users = [f"ttl-user-{i}" for i in range(8)]
    batch = transactions_batch(1_767_225_600_000 + np.arange(len(users), dtype=np.int64) * 1_000, users)
    with RocksDBStore(tmp_path / "state", 1) as store, RedisOnlineWriter(state_redis_url) as writer:
        applier = ShardApplier(store.partition(0), views, "transactions", online_copy=writer)
        applier.apply([shard_batch for _, shard_batch in route(batch, views, 1)])
        applier.close()
    checked = 0
    for view in views:
        for key in admin.scan_iter(match=REDIS_TILE_PREFIX + view.fingerprint.hex().encode() + b":*"):
            ttl = admin.pttl(key)
            if view.has_lifetime_window:
                assert ttl == -1, (view.name, key)
            else:
                assert 0 < ttl <= view.retention_ms, (view.name, key, ttl, view.retention_ms)
            checked += 1
    admin.close()
    assert checked >= len(users)


def test_an_applier_fills_a_redis_copy_that_lost_its_data(
    state_redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A Redis restarted without persistence (or a project switched to Redis) holds nothing
    # of what the shard applied: opening the shard copies it, records, freshness and offsets.
    from engine.apply import ShardApplier
    from engine.routing import route
    from engine.state.online_redis import RedisOnlineTable
    from engine.state.records import view_prefix
    from engine.state.rocksdb_store import RocksDBStore
    from tests.engine.streaming_support import example_views, transactions_batch

    _source, views = example_views("transactions")
    admin: redis.Redis[bytes] = redis.Redis.from_url(state_redis_url)
    users = [f"lost-user-{i}" for i in range(30)]
    batch = transactions_batch(1_767_225_600_000 + np.arange(len(users), dtype=np.int64) * 1_000, users)
    with RocksDBStore(tmp_path / "state", 1) as store, RedisOnlineWriter(state_redis_url) as writer:
        part = store.partition(0)
        ShardApplier(part, views, "transactions", online_copy=writer).apply(
            [shard_batch for _, shard_batch in route(batch, views, 1)]
        )
        admin.flushdb()
        with caplog.at_level("WARNING", logger="engine.apply"):
            ShardApplier(part, views, "transactions", online_copy=writer).close()
        assert "the online copy lacked its applied state; copied" in caplog.text
        table = RedisOnlineTable(state_redis_url)
        try:
            for view in views:
                stored = {
                    key[len(view_prefix(view.fingerprint)) :]: value
                    for key, value in part.scan_prefix(view_prefix(view.fingerprint))
                }
                assert stored, view.name
                assert table.read(view.fingerprint, list(stored)) == list(stored.values()), view.name
                assert table.read_meta(view.fingerprint).max_event_ts_ms == int(batch.event_ts.max())
            assert table.read_offsets("transactions") == [part.read_offsets("transactions")]
        finally:
            table.close()
        caplog.clear()
        with caplog.at_level("WARNING", logger="engine.apply"):  # a complete copy is left alone
            ShardApplier(part, views, "transactions", online_copy=writer).close()
        assert "lacked its applied state" not in caplog.text
    admin.close()


def test_a_redis_that_loses_its_data_while_batches_are_written_is_filled_again(
    state_redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A Redis restarted empty within the writes' retries: the next batch alone would hold
    # only its own entities; the applier notices the lost mark and copies the shard first.
    import engine.apply
    from engine.apply import ShardApplier
    from engine.routing import route
    from engine.state.online_redis import RedisOnlineTable
    from engine.state.records import view_prefix
    from engine.state.rocksdb_store import RocksDBStore
    from tests.engine.streaming_support import example_views, transactions_batch

    monkeypatch.setattr(engine.apply, "_COPY_CHECK_S", 0.0)
    _source, views = example_views("transactions")
    admin: redis.Redis[bytes] = redis.Redis.from_url(state_redis_url)
    first = transactions_batch(1_767_225_600_000 + np.arange(20, dtype=np.int64) * 1_000, [f"a-{i}" for i in range(20)])
    later = transactions_batch(
        1_767_225_700_000 + np.arange(5, dtype=np.int64) * 1_000, [f"b-{i}" for i in range(5)], first_offset=20
    )
    with RocksDBStore(tmp_path / "state", 1) as store, RedisOnlineWriter(state_redis_url) as writer:
        part = store.partition(0)
        applier = ShardApplier(part, views, "transactions", online_copy=writer)
        applier.apply([b for _, b in route(first, views, 1)])
        admin.flushdb()
        applier.apply([b for _, b in route(later, views, 1)])
        applier.close()
        table = RedisOnlineTable(state_redis_url)
        try:
            for view in views:
                cut = len(view_prefix(view.fingerprint))
                stored = {k[cut:]: v for k, v in part.scan_prefix(view_prefix(view.fingerprint))}
                assert table.read(view.fingerprint, list(stored)) == list(stored.values()), view.name
        finally:
            table.close()
    admin.close()


def test_reads_of_a_topic_whose_copy_redis_lacks_are_refused_not_answered_not_found(state_redis_url: str) -> None:
    """A Redis without a shard's copy mark (lost its data, or never written) would answer
    NOT_FOUND for entities it holds nothing of: the table refuses reads of entities in
    that shard (503) and is not ready, naming the topic and shards, until it is marked.
    The marks are read with the records (one MGET): a mark lost just now is seen."""
    other = bytes.fromhex("00000000000000fe")
    view_topics = {FP: "copy-check-a", other: "copy-check-b"}
    by_shard: dict[int, bytes] = {}
    for i in range(100):  # one entity of each of the 3 shards
        key = entity_key([f"copy-u{i}"])
        by_shard.setdefault(shard_for(FP, key, 3), key)
    in_0, in_1, in_2 = by_shard[0], by_shard[1], by_shard[2]
    admin: redis.Redis[bytes] = redis.Redis.from_url(state_redis_url)
    admin.delete(*(redis_copied_key(t, s) for t in ("copy-check-a", "copy-check-b") for s in range(3)))
    with (
        RedisOnlineWriter(state_redis_url) as writer,
        RedisOnlineTable(state_redis_url, view_topics=view_topics, n_shards=3) as table,
    ):
        writer.write([(FP, key, b"rec") for key in (in_0, in_1, in_2)], ttl_ms=None)
        for shard in range(3):
            writer.mark_copied("copy-check-b", shard)
        writer.mark_copied("copy-check-a", 1)
        with pytest.raises(OnlineTableUnavailable, match=r"shards 0, 2 of topic 'copy-check-a'") as refused:
            table.read_views([(FP, [in_0, in_1, in_2])])
        assert refused.value.hint is not None and "streamfeat run" in refused.value.hint
        with pytest.raises(OnlineTableUnavailable, match=r"shard 2 of topic 'copy-check-a'"):
            table.read_parts(FP, [in_2])
        assert table.read_views([(FP, [in_1])]) == [[b"rec"]]  # its shard's copy is whole
        assert table.read_views([(other, [in_0])]) == [[None]]  # so is the other topic's
        assert table.missing_copies() == {"copy-check-a": (0, 2)}
        health = table.health()
        assert not health.ready and "shards 0, 2 of topic 'copy-check-a'" in health.detail
        assert "`streamfeat run` refills the copy" in health.detail and health.last_error is None
        writer.mark_copied("copy-check-a", 0)
        writer.mark_copied("copy-check-a", 2)
        assert table.read_views([(FP, [in_0, in_1, in_2])]) == [[b"rec"] * 3]
        assert table.health().ready
        admin.delete(redis_copied_key("copy-check-a", 2))  # Redis lost it again
        with pytest.raises(OnlineTableUnavailable, match=r"shard 2 of topic 'copy-check-a'"):
            table.read_views([(FP, [in_2])])
    # Without view topics (a table given no expectation) every read is trusted, as before.
    with RedisOnlineTable(state_redis_url) as plain:
        assert plain.read_views([(FP, [in_2])]) == [[b"rec"]]
    admin.close()


def test_a_batch_whose_redis_copy_fails_commits_nothing_and_close_records_nothing_of_it(
    restartable_redis: RedisServer, tmp_path: Path
) -> None:
    """Redis down during a batch: the batch fails and is not committed; close() must not
    record its offsets either (it did, through the log offsets it records at close: the
    next run skipped the batch and its events were lost from the state for good), and
    close() itself must not raise (in the dataflow's shutdown that aborted the process)."""
    from engine.apply import ShardApplier
    from engine.routing import route
    from engine.state.exceptions import OnlineWriteError
    from engine.state.rocksdb_store import RocksDBStore
    from tests.engine.streaming_support import example_views, transactions_batch

    _source, views = example_views("transactions")
    first = transactions_batch(1_767_225_600_000 + np.arange(10, dtype=np.int64) * 1_000, [f"f-{i}" for i in range(10)])
    second = transactions_batch(
        1_767_225_700_000 + np.arange(10, dtype=np.int64) * 1_000, [f"f-{i}" for i in range(10)], first_offset=10
    )
    with RocksDBStore(tmp_path / "state", 1) as store:
        part = store.partition(0)
        with RedisOnlineWriter(restartable_redis.url) as writer:
            applier = ShardApplier(
                part, views, "transactions", online_copy=writer, log_root=str(tmp_path / "log"), retry_delays_s=(0.01,)
            )
            applier.apply([b for _, b in route(first, views, 1)])
            committed = part.read_offsets("transactions")
            restartable_redis.stop()
            with pytest.raises(OnlineWriteError):
                applier.apply([b for _, b in route(second, views, 1)])
            applier.close()  # no exception, and nothing of the failed batch recorded
            assert part.read_offsets("transactions") == committed
            assert {r.applied_offset for r in committed.values()} == {9}
        restartable_redis.start()
        with RedisOnlineWriter(restartable_redis.url) as writer:  # the next run replays the batch
            again = ShardApplier(part, views, "transactions", online_copy=writer, log_root=str(tmp_path / "log"))
            again.apply([b for _, b in route(second, views, 1)])
            again.close()
        assert {r.applied_offset for r in part.read_offsets("transactions").values()} == {19}
        assert again.stats.rows_applied > 0


def test_a_redis_error_quoting_binary_arguments_is_shown_as_text() -> None:
    from engine.state.redis_client import describe_redis_error

    shown = describe_redis_error(
        "redis://:secret@127.0.0.1:6379/0", redis.ResponseError("OOM SET k \xe9\x00" + "x" * 500)
    )
    assert (
        shown.startswith("redis at 127.0.0.1:6379/0: ResponseError: OOM SET k \\xe9\\x00xxx") and "secret" not in shown
    )
    assert shown.isascii() and shown.isprintable() and shown.endswith("...") and len(shown) < 400


def test_a_stream_copies_records_that_a_shard_holds_without_offsets_of_its_topic(
    state_redis_url: str, tmp_path: Path
) -> None:
    """A shard filled by a backfill without Redis holds records but no offset records of
    the stream's topic. A project switched to Redis then ran the stream: the applier found
    nothing applied, marked the copy whole without copying, and serving answered the
    backfilled entities NOT_FOUND. Without the mark, the shard is now copied whatever it holds."""
    from engine.apply import ShardApplier
    from engine.routing import route
    from engine.state.records import view_prefix
    from engine.state.rocksdb_store import RocksDBStore
    from tests.engine.streaming_support import example_views, transactions_batch

    _source, views = example_views("transactions")
    admin: redis.Redis[bytes] = redis.Redis.from_url(state_redis_url)
    admin.flushdb()
    users = [f"hist-user-{i}" for i in range(12)]
    batch = transactions_batch(1_767_225_600_000 + np.arange(len(users), dtype=np.int64) * 1_000, users)
    with RocksDBStore(tmp_path / "state", 1) as store, RedisOnlineWriter(state_redis_url) as writer:
        part = store.partition(0)
        backfilled = ShardApplier(part, views, "transactions#history-test")  # no online copy
        backfilled.apply([dataclasses.replace(b, topic=backfilled.topic) for _, b in route(batch, views, 1)])
        backfilled.close()
        assert part.read_offsets("transactions") == {}
        ShardApplier(part, views, "transactions", online_copy=writer).close()
        with RedisOnlineTable(state_redis_url, view_topics={v.fingerprint: "transactions" for v in views}) as table:
            assert table.missing_copies() == {}
            for view in views:
                cut = len(view_prefix(view.fingerprint))
                stored = {k[cut:]: v for k, v in part.scan_prefix(view_prefix(view.fingerprint))}
                assert stored, view.name
                assert table.read(view.fingerprint, list(stored)) == list(stored.values()), view.name
    admin.close()


def test_a_backfill_into_redis_leaves_a_copy_serving_accepts(
    state_redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A Parquet backfill with Redis as the online table marked its copy under its own
    history topic, never the source's: serving over Redis refused every read (503) until a
    `streamfeat run`. Now a whole replay leaves the source's copy whole and marked for all
    of the source's views, those the backfill did not replay (``--views``) included."""
    from engine.apply import ShardApplier
    from engine.generate import GeneratorConfig, write_parquet
    from engine.offline.backfill import BackfillTarget, backfill_parquet
    from engine.routing import route
    from engine.state.records import view_prefix
    from engine.state.rocksdb_store import RocksDBStore
    from tests.engine.streaming_support import example_views, transactions_batch

    source, views = example_views("transactions")
    shards = 2
    admin: redis.Redis[bytes] = redis.Redis.from_url(state_redis_url)
    admin.flushdb()
    target = BackfillTarget(tmp_path / "state", shards, str(tmp_path / "log"), redis_url=state_redis_url)
    # State the stream applied before, without Redis: the other views' records too.
    streamed = transactions_batch(1_767_225_600_000 + np.arange(6, dtype=np.int64), [f"s-{i}" for i in range(6)])
    with RocksDBStore(target.state_dir, shards) as store:
        for _, batch in route(streamed, views, shards):
            applier = ShardApplier(store.partition(batch.shard), views, "transactions")
            applier.apply([batch])
            applier.close()
    config = GeneratorConfig(events=300, users=30, merchants=5, seed=1, start_ms=1_767_229_200_000, rate=1.0)
    write_parquet(config, tmp_path / "history")
    files = [str(p) for p in sorted((tmp_path / "history").rglob("*.parquet"))]
    replayed = [views[0]]
    report = backfill_parquet(target, source, replayed, files, 0, config.end_ms + 1, source_views=views)
    assert report.complete and report.rows_total > 0
    with RocksDBStore(target.state_dir, shards) as store:
        with RedisOnlineTable(
            state_redis_url, view_topics={v.fingerprint: "transactions" for v in views}, n_shards=shards
        ) as table:
            assert table.missing_copies() == {}
            for view in views:
                cut = len(view_prefix(view.fingerprint))
                stored = {k[cut:]: v for p in store.partitions for k, v in p.scan_prefix(view_prefix(view.fingerprint))}
                assert stored, view.name
                assert table.read(view.fingerprint, list(stored)) == list(stored.values()), view.name
        with RedisOnlineWriter(state_redis_url) as writer, caplog.at_level("WARNING", logger="engine.apply"):
            for shard in range(shards):  # the stream finds the copy whole: nothing copied again
                ShardApplier(store.partition(shard), views, "transactions", online_copy=writer).close()
        assert "lacked its applied state" not in caplog.text
    admin.close()


def test_a_view_that_joins_its_stream_again_loses_its_old_records_in_redis_too(
    state_redis_url: str, tmp_path: Path
) -> None:
    """settle_joins clears a re-applied fingerprint's stale records from the Redis copy as
    well: serving over Redis would otherwise answer them after the backfill."""
    from engine.apply import ShardApplier, settle_joins
    from engine.routing import route
    from engine.state.records import view_prefix
    from engine.state.rocksdb_store import RocksDBStore
    from tests.engine.streaming_support import example_views, transactions_batch

    _source, views = example_views("transactions")
    users = [f"rejoin-{i}" for i in range(6)]
    batch = transactions_batch(1_767_225_600_000 + np.arange(len(users), dtype=np.int64) * 1_000, users)
    with RocksDBStore(tmp_path / "state", 1) as store, RedisOnlineWriter(state_redis_url) as writer:
        part = store.partition(0)
        applier = ShardApplier(part, views, "transactions", online_copy=writer)
        applier.apply([b for _, b in route(batch, views, 1)])
        applier.close()
        view = views[0]
        cut = len(view_prefix(view.fingerprint))
        entities = [key[cut:] for key, _ in part.scan_prefix(view_prefix(view.fingerprint))]
        with RedisOnlineTable(state_redis_url) as table:
            assert all(record is not None for record in table.read(view.fingerprint, entities))
            assert settle_joins(part, {view.fingerprint: 1_767_225_700_000}, writer) == (view.fingerprint,)
            assert table.read(view.fingerprint, entities) == [None] * len(entities)
            other = views[1]
            kept = [
                key[len(view_prefix(other.fingerprint)) :]
                for key, _ in part.scan_prefix(view_prefix(other.fingerprint))
            ]
            assert kept and all(record is not None for record in table.read(other.fingerprint, kept))
