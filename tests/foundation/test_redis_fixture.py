"""The session redis-server fixture: reachable on loopback, nothing persisted."""

from __future__ import annotations

import pytest
import redis

pytestmark = pytest.mark.redis


def test_redis_server_is_private_and_ephemeral(redis_server: str) -> None:
    assert redis_server.startswith("redis://127.0.0.1:") and redis_server.endswith("/0")
    client = redis.Redis.from_url(redis_server)
    try:
        assert client.ping()
        client.set(b"sf:probe", b"1")
        assert client.get(b"sf:probe") == b"1"
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}
        assert client.config_get("bind")["bind"] == "127.0.0.1"
    finally:
        client.close()
