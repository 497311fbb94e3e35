"""Redis connections shared by the online-table reader and the writer."""

from __future__ import annotations

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from engine.state.exceptions import StateValueError

REDIS_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, OSError)
"""What a Redis outage can raise (redis-py wraps most socket errors, not all)."""


def make_client(url: str, *, socket_timeout_s: float, max_connections: int) -> redis.Redis[bytes]:
    """A client with a bounded connection pool and fail-fast timeouts.

    One immediate retry: after Redis restarts, every pooled connection is dead and
    the first command on each fails once before reconnecting. More retries (with
    backoff, the redis-py default) would turn an outage into slow requests instead of
    a quick, typed failure.
    """
    if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
        raise StateValueError(f"redis url: expected redis://host:port/db (or rediss://, unix://), got {url!r}")
    if not socket_timeout_s > 0:
        raise StateValueError(f"redis socket_timeout_s: expected > 0, got {socket_timeout_s}")
    pool = redis.ConnectionPool.from_url(
        url,
        max_connections=max_connections,
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=socket_timeout_s,
        retry=Retry(NoBackoff(), 1),
    )
    client: redis.Redis[bytes] = redis.Redis(connection_pool=pool)
    return client


def describe_redis_error(url: str, exc: BaseException) -> str:
    """Short reason naming the server and the failure, without credentials."""
    safe = url.split("@")[-1]
    return f"redis at {safe}: {type(exc).__name__}: {exc}"


def close_client(client: redis.Redis[bytes]) -> None:
    """Close a client and every pooled connection it opened."""
    client.close()
    client.connection_pool.disconnect()
