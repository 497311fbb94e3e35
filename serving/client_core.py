"""What the sync and async feature clients share: the one owner of request bodies,
answer parsing, typed errors, the cache policy and the declared fallbacks.

The clients (``serving.client.FeatureClient``, ``serving.client_async.AsyncFeatureClient``)
only move bytes; every decision about what to send, what an answer means, what may be
cached for how long and when a fallback answers lives here.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import orjson

from engine.json_types import JSONValue
from serving.client_cache import CacheConfig, FeatureRowCache
from serving.exceptions import (
    BY_STATUS,
    ClientTransportError,
    InvalidRecords,
    OnlineTableUnavailableError,
    PushUnavailable,
    ServerError,
    ServingError,
    TransformError,
)

OneTime = int | str | datetime
AsOf = OneTime | Sequence[OneTime] | None  # a sequence: one time per entity row
DEFAULTED = "DEFAULTED"  # the status of a fallback value (docs/serving.md)


def _one_time(value: OneTime) -> int | str:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"as_of: expected an aware datetime, got naive {value!r}; add tzinfo")
        return value.isoformat()
    return value


def as_of_json(value: AsOf) -> int | str | list[int | str] | None:
    if value is None or isinstance(value, int | str | datetime):
        return None if value is None else _one_time(value)
    return [_one_time(v) for v in value]


def error_from(response: httpx.Response) -> ServingError:
    """The typed error of a non-200 answer (serving.exceptions), rebuilt from its JSON body."""
    try:
        detail = orjson.loads(response.content).get("error", {})
    except (orjson.JSONDecodeError, AttributeError):
        detail = {}
    if not isinstance(detail, dict):
        detail = {}
    message = str(detail.get("message") or f"HTTP {response.status_code}: {response.text[:200]}")
    hint = detail.get("hint")
    error: ServingError
    if response.status_code == 500 and detail.get("code") == TransformError.code:
        error = TransformError(message, transform=str(detail.get("transform", "?")), hint=hint)
    elif detail.get("code") == InvalidRecords.code:
        error = InvalidRecords(
            str(detail.get("source", "?")),
            int(detail.get("accepted", 0)),
            list(detail.get("rejected") or [{"index": "?", "reason": "?", "detail": message}]),
        )
    elif detail.get("code") == PushUnavailable.code:
        error = PushUnavailable(message, hint=hint)
    elif response.status_code == 503 and "reason" in detail:
        error = OnlineTableUnavailableError(str(detail["reason"]), hint=hint)
    else:
        kind = BY_STATUS.get(response.status_code, ServerError)
        error = kind(message, hint=hint, field=detail.get("field"))
    return error


def answer_of(response: httpx.Response) -> Any:  # decoded JSON, indexed by the caller
    """The decoded JSON of a 200 answer, else its typed error raised."""
    if response.status_code != 200:
        raise error_from(response)
    return orjson.loads(response.content)


def transport_error(method: str, url: str, exc: httpx.HTTPError) -> ClientTransportError:
    return ClientTransportError(
        f"{method} {url}: {type(exc).__name__}: {exc}", hint="is `streamfeat serve` running at that address?"
    )


@dataclass(frozen=True)
class Call:
    """One request of the feature server's API, built here, sent by either client."""

    method: str
    path: str
    body: Mapping[str, object] | None = None  # encoded by orjson as it is

    def content(self) -> bytes | None:
        return None if self.body is None else orjson.dumps(self.body)


def vectors_call(
    service: str,
    entities: Mapping[str, Sequence[str | int]],
    request_data: Mapping[str, Sequence[object]] | None,
    as_of: AsOf,
    include_metadata: bool,
) -> Call:
    """``POST /v1/features/{service}``."""
    body: dict[str, object] = {"entities": {k: list(v) for k, v in entities.items()}}
    if request_data:
        body["request_data"] = {k: list(v) for k, v in request_data.items()}
    if as_of is not None:
        body["as_of"] = as_of_json(as_of)
    if include_metadata:
        body["include_metadata"] = True
    return Call("POST", f"/v1/features/{service}", body)


def push_call(source: str, records: Sequence[Mapping[str, object]]) -> Call:
    """``POST /v1/push/{source}``."""
    return Call("POST", f"/v1/push/{source}", {"records": [dict(r) for r in records]})


LIST_SERVICES = Call("GET", "/v1/services")


def describe_call(name: str) -> Call:
    """``GET /v1/services/{name}``."""
    return Call("GET", f"/v1/services/{name}")


def one_row_args(
    join_keys: Mapping[str, str | int],
    request_data: Mapping[str, object] | None,
) -> tuple[dict[str, list[str | int]], dict[str, list[object]] | None]:
    """A single entity's keys and request data as the columns of a one-row request."""
    return {k: [v] for k, v in join_keys.items()}, ({k: [v] for k, v in request_data.items()} if request_data else None)


class ClientPolicy:
    """Cache, fallbacks and their counters of one client (sync or async)."""

    def __init__(self, cache: CacheConfig | None, fallbacks: Mapping[str, Mapping[str, object]] | None) -> None:
        self.cache = FeatureRowCache(cache) if cache is not None else None
        self.fallbacks = {service: dict(values) for service, values in (fallbacks or {}).items()}
        self.fallbacks_used = 0
        self._row_ttl_s: dict[str, float] = {}

    # ---- fallbacks ---------------------------------------------------------

    def falls_back(self, service: str, exc: ServingError) -> bool:
        """Whether ``exc`` is answered by the service's declared fallback (slow or absent store)."""
        return isinstance(exc, ClientTransportError | OnlineTableUnavailableError) and service in self.fallbacks

    # Any: the fallback stands in for the server's answer, which callers index (see answer_of)
    def fallback(self, service: str, entities: Mapping[str, Sequence[str | int]], exc: ServingError) -> dict[str, Any]:
        """The declared fallback answer: join keys, the declared values, status DEFAULTED."""
        self.fallbacks_used += 1
        values = self.fallbacks[service]
        n = len(next(iter(entities.values()), []))
        rows = [{**{k: v[i] for k, v in entities.items()}, **values} for i in range(n)]
        return {
            "service": service,
            "as_of": None,
            "features": rows,
            "metadata": {
                "statuses": [dict.fromkeys(values, DEFAULTED) for _ in range(n)],
                "fallback": f"{type(exc).__name__}: {exc}",
            },
        }

    # ---- cache -------------------------------------------------------------

    def cache_key(
        self,
        service: str,
        join_keys: Mapping[str, str | int],
        request_data: Mapping[str, object] | None,
        as_of: AsOf,
    ) -> Hashable | None:
        """The cache key of a one-entity call, or None when it must not be cached (``as_of`` given,
        no cache, an unhashable request value)."""
        if self.cache is None or as_of is not None:
            return None
        key = (service, tuple(join_keys.items()), tuple(sorted((request_data or {}).items())))
        try:
            hash(key)
        except TypeError:  # an unhashable request value (a list): not cacheable
            return None
        return key

    def cached(self, key: Hashable | None) -> dict[str, JSONValue] | None:
        return self.cache.get(key) if self.cache is not None and key is not None else None

    def needs_views(self, service: str) -> bool:
        """True when storing a row of ``service`` first needs its views (``describe_service``)."""
        return self.cache is not None and service not in self._row_ttl_s

    # Any: describe_service's decoded JSON answer, indexed here
    def learn_views(self, service: str, described: Mapping[str, Any]) -> None:
        if self.cache is not None:
            self._row_ttl_s[service] = self.cache.config.ttl_for([v["name"] for v in described["views"]])

    # Any: the decoded JSON answer of get_feature_vectors, indexed here
    def storable(self, key: Hashable | None, answer: Mapping[str, Any]) -> bool:
        """Whether the answer's row goes into the cache: a cacheable call, not a fallback."""
        return self.cache is not None and key is not None and "fallback" not in answer.get("metadata", {})

    # Any: the decoded JSON answer of get_feature_vectors, indexed here
    def store(self, service: str, key: Hashable, answer: Mapping[str, Any]) -> None:
        """Caches the answer's row for the service's TTL (``learn_views`` first)."""
        if self.cache is not None:
            self.cache.put(key, answer["features"][0], self._row_ttl_s[service])


class ClientBase:
    """The state both clients hold: base URL, headers, policy; their counters as properties."""

    def __init__(
        self,
        url: str,
        api_key: str | None,
        cache: CacheConfig | None,
        fallbacks: Mapping[str, Mapping[str, object]] | None,
    ) -> None:
        self.url = url.rstrip("/")
        self.headers = {"content-type": "application/json"}
        if api_key is not None:
            self.headers["authorization"] = f"Bearer {api_key}"
        self.policy = ClientPolicy(cache, fallbacks)

    @property
    def cache(self) -> FeatureRowCache | None:
        return self.policy.cache

    @property
    def fallbacks_used(self) -> int:
        return self.policy.fallbacks_used
