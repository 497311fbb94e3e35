"""Redis connections shared by the online-table reader and the writer."""

from __future__ import annotations

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from engine.state.exceptions import RedisEvictionError, StateValueError

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


#: The one maxmemory policy under which Redis never drops a key to make room.
SAFE_EVICTION_POLICY = "noeviction"


def refuse_evicting_server(client: redis.Redis[bytes], url: str) -> None:
    """Raise :class:`RedisEvictionError` when the server has a memory limit and a policy
    that evicts keys to stay under it: the tiles live only in Redis for its readers, and
    a dropped record would be answered as an entity without events, a wrong value with
    no status to say so. Under ``noeviction`` a full Redis refuses writes instead, which
    the writer reports.

    A server that does not answer CONFIG GET (down right now, or a managed Redis with
    the command disabled) is not refused here: an outage is reported by the reads and
    writes themselves, and a disabled CONFIG leaves the policy to the operator
    (docs/operations.md).
    """
    try:
        found = client.config_get("maxmemory*")
    except REDIS_ERRORS:
        return
    config = {_text(k): _text(v) for k, v in found.items()}
    policy = config.get("maxmemory-policy", SAFE_EVICTION_POLICY)
    limit = config.get("maxmemory", "0")
    if policy == SAFE_EVICTION_POLICY or limit in ("", "0"):
        return
    raise RedisEvictionError(
        f"{redacted_url(url)}: maxmemory {limit} bytes with maxmemory-policy {policy}: Redis would evict tile "
        "records when full, and an evicted record would be served as an entity without events",
        hint=f"set `maxmemory-policy {SAFE_EVICTION_POLICY}` (CONFIG SET or redis.conf; a full Redis then "
        "refuses writes, and the dataflow retries, then stops with the error instead of losing a record), "
        "or `maxmemory 0`; the policy is the whole server's, so give streamfeat a Redis server of its "
        "own when other users need eviction",
    )


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def open_checked_client(url: str, *, socket_timeout_s: float, max_connections: int) -> redis.Redis[bytes]:
    """:func:`make_client`, refused (and closed) when the server may evict keys
    (:func:`refuse_evicting_server`): what the online table's reader and writer open."""
    client = make_client(url, socket_timeout_s=socket_timeout_s, max_connections=max_connections)
    try:
        refuse_evicting_server(client, url)
    except RedisEvictionError:
        close_client(client)
        raise
    return client


def refuse_evicting_url(url: str) -> None:
    """:func:`refuse_evicting_server` on a connection opened and closed for it: the
    one-line preflight of `streamfeat run` and `serve`, before any worker opens its own."""
    close_client(open_checked_client(url, socket_timeout_s=2.0, max_connections=1))


def redacted_url(url: str) -> str:
    """``url`` without its credentials (``user:password@``), for messages and logs."""
    return url.split("@")[-1]


def describe_redis_error(url: str, exc: BaseException) -> str:
    """Short reason naming the server and the failure, without credentials."""
    # A server error may quote the command with its arguments (packed tile records):
    # shown printable and cut short, so a log stays text.
    text = str(exc).encode("unicode_escape").decode("ascii")
    text = text if len(text) <= 300 else text[:300] + "..."
    return f"redis at {redacted_url(url)}: {type(exc).__name__}: {text}"


def close_client(client: redis.Redis[bytes]) -> None:
    """Close a client and every pooled connection it opened."""
    client.close()
    client.connection_pool.disconnect()
