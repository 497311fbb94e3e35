"""A Redis that may evict keys is refused: an evicted tile record would be served as an
entity without events (engine/state/redis_client.py, refuse_evicting_server)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from engine.state.exceptions import RedisEvictionError
from engine.state.keys import entity_key
from engine.state.online_redis import RedisOnlineTable
from engine.state.redis_writer import RedisOnlineWriter
from tests.engine.streaming_support import copy_repo, streamfeat
from tests.fixtures.redis import RedisServer

pytestmark = pytest.mark.redis

FP = bytes.fromhex("00000000000000aa")
EVICTING_POLICIES = (
    "allkeys-lru",
    "allkeys-lfu",
    "allkeys-random",
    "volatile-lru",
    "volatile-lfu",
    "volatile-random",
    "volatile-ttl",
)


@pytest.fixture()
def limited_redis(tmp_path: Path) -> Iterator[tuple[RedisServer, redis.Redis[bytes]]]:
    """A private server with a memory limit, and an admin client to change its policy."""
    server = RedisServer(tmp_path / "redis", extra_args=("--maxmemory", "64mb"))
    server.start()
    admin: redis.Redis[bytes] = redis.Redis.from_url(server.url)
    try:
        yield server, admin
    finally:
        admin.close()
        server.stop()


def test_reader_and_writer_refuse_every_evicting_policy(limited_redis: tuple[RedisServer, redis.Redis[bytes]]) -> None:
    server, admin = limited_redis
    for policy in EVICTING_POLICIES:
        admin.config_set("maxmemory-policy", policy)
        for opener in (RedisOnlineWriter, RedisOnlineTable):
            with pytest.raises(
                RedisEvictionError, match=f"maxmemory 67108864 bytes with maxmemory-policy {policy}"
            ) as info:
                opener(server.url)
            assert "maxmemory-policy noeviction" in (info.value.hint or "")
            assert info.value.exit_code == 2


def test_noeviction_or_no_limit_is_accepted_and_used(limited_redis: tuple[RedisServer, redis.Redis[bytes]]) -> None:
    server, admin = limited_redis
    key = entity_key(["evict-ok"])
    admin.config_set("maxmemory-policy", "noeviction")  # limited, but a full Redis refuses writes
    with RedisOnlineWriter(server.url) as writer, RedisOnlineTable(server.url) as table:
        writer.write([(FP, key, b"kept")], ttl_ms=60_000)
        assert table.read(FP, [key]) == [b"kept"]
    admin.config_set("maxmemory-policy", "allkeys-lru")
    admin.config_set("maxmemory", "0")  # no limit: nothing is ever evicted
    with RedisOnlineWriter(server.url) as writer, RedisOnlineTable(server.url) as table:
        writer.write([(FP, key, b"again")], ttl_ms=60_000)
        assert table.read(FP, [key]) == [b"again"]


def test_a_server_without_config_get_is_left_to_the_operator(tmp_path: Path) -> None:
    # Managed Redis often disables CONFIG; the policy cannot be read, so it is not refused
    # (docs/operations.md tells the operator what to set).
    server = RedisServer(
        tmp_path / "redis",
        extra_args=("--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru", "--rename-command", "CONFIG", ""),
    )
    server.start()
    try:
        with RedisOnlineWriter(server.url) as writer, RedisOnlineTable(server.url) as table:
            writer.write([(FP, entity_key(["no-config"]), b"v")], ttl_ms=60_000)
            assert table.read(FP, [entity_key(["no-config"])]) == [b"v"]
    finally:
        server.stop()


@pytest.mark.parametrize("command", ["run", "serve"])
def test_cli_refuses_an_evicting_redis_in_one_line(
    tmp_path: Path, limited_redis: tuple[RedisServer, redis.Redis[bytes]], command: str
) -> None:
    server, admin = limited_redis
    admin.config_set("maxmemory-policy", "volatile-lru")
    repo, data = copy_repo(tmp_path, "eviction-check"), tmp_path / "data"
    streamfeat("apply", "--repo", str(repo), "--data-dir", str(data), "--shards", "2")
    # serve with two workers checks before forking; one worker checks in create_app.
    extra = ("--workers", "2") if command == "serve" else ()
    done = streamfeat(
        command,
        "--repo",
        str(repo),
        "--data-dir",
        str(data),
        "--online",
        "redis",
        "--redis-url",
        server.url,
        *extra,
        check=False,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "maxmemory-policy volatile-lru" in done.stderr
    assert "hint: set `maxmemory-policy noeviction`" in done.stderr
    assert "Traceback" not in done.stderr
