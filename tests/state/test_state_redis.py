"""Redis writer details and outage behaviour of the Redis online table."""

from __future__ import annotations

import pytest
import redis

from engine.state.exceptions import OnlineTableUnavailable, OnlineWriteError, StateValueError
from engine.state.keys import entity_key
from engine.state.online_redis import RedisOnlineTable
from engine.state.protocols import ColdWrites
from engine.state.records import redis_cold_key, redis_key
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
