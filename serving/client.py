"""``FeatureClient``: a small synchronous client of the feature server.

One ``httpx.Client`` per FeatureClient keeps connections alive between calls. Error
answers become the typed errors of :mod:`serving.exceptions` (ServiceNotFound,
InvalidRequest, PayloadTooLarge, OnlineTableUnavailableError, TransformError,
ServerError); connection failures and timeouts become ClientTransportError.

Optional, for inference services: ``cache=CacheConfig(...)`` keeps single-entity rows
of hot entities for their views' TTL (``serving.client_cache``); ``fallbacks={service:
{feature: value}}`` declares what a call answers when the server times out, cannot be
reached or has no online table: those values, with status DEFAULTED, counted in
``fallbacks_used``. Other errors (a bad request, a failing transform) still raise.
``shadow=ShadowConfig(baseline_url, sample_rate, log_path)`` compares a share of the
answered requests with a baseline feature server off the caller's path
(``serving.client_shadow``).

>>> with FeatureClient("http://127.0.0.1:8000") as client:          # doctest: +SKIP
...     client.get_feature_vector("fraud_scoring", {"user_id": "u1", "merchant_id": "m1"},
...                               request_data={"amount": 42.0})
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any

import httpx
import orjson

from serving.client_cache import CacheConfig, FeatureRowCache
from serving.client_shadow import LiveShadow, ShadowConfig
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


def _as_of(value: AsOf) -> int | str | list[int | str] | None:
    if value is None or isinstance(value, int | str | datetime):
        return None if value is None else _one_time(value)
    return [_one_time(v) for v in value]


def _error_from(response: httpx.Response) -> ServingError:
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
        error = InvalidRecords(str(detail.get("source", "?")), int(detail.get("accepted", 0)),
                               list(detail.get("rejected") or [{"index": "?", "reason": "?", "detail": message}]))
    elif detail.get("code") == PushUnavailable.code:
        error = PushUnavailable(message, hint=hint)
    elif response.status_code == 503 and "reason" in detail:
        error = OnlineTableUnavailableError(str(detail["reason"]), hint=hint)
    else:
        kind = BY_STATUS.get(response.status_code, ServerError)
        error = kind(message, hint=hint, field=detail.get("field"))
    return error


class FeatureClient:
    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5.0,
        api_key: str | None = None,
        transport: httpx.BaseTransport | None = None,
        cache: CacheConfig | None = None,
        fallbacks: Mapping[str, Mapping[str, Any]] | None = None,
        shadow: ShadowConfig | None = None,
    ) -> None:
        headers = {"content-type": "application/json"}
        if api_key is not None:
            headers["authorization"] = f"Bearer {api_key}"
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout, headers=headers, transport=transport)
        self.cache = FeatureRowCache(cache) if cache is not None else None
        self.fallbacks = {service: dict(values) for service, values in (fallbacks or {}).items()}
        self.fallbacks_used = 0
        self._row_ttl_s: dict[str, float] = {}
        self.shadow = LiveShadow(shadow, self.url) if shadow is not None else None

    def _post(self, path: str, body: Mapping[str, Any]) -> Any:
        try:
            response = self._http.post(path, content=orjson.dumps(body))
        except httpx.HTTPError as exc:
            raise ClientTransportError(f"POST {self.url}{path}: {type(exc).__name__}: {exc}",
                                       hint="is `streamfeat serve` running at that address?") from exc
        if response.status_code != 200:
            raise _error_from(response)
        return orjson.loads(response.content)

    def _get(self, path: str) -> Any:
        try:
            response = self._http.get(path)
        except httpx.HTTPError as exc:
            raise ClientTransportError(f"GET {self.url}{path}: {type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            raise _error_from(response)
        return orjson.loads(response.content)

    def get_feature_vectors(
        self,
        service: str,
        entities: Mapping[str, Sequence[str | int]],
        request_data: Mapping[str, Sequence[Any]] | None = None,
        as_of: AsOf = None,
        include_metadata: bool = False,
    ) -> dict[str, Any]:
        """The server's whole answer for many entities: ``{"service", "as_of", "features": [...]}``."""
        body: dict[str, Any] = {"entities": {k: list(v) for k, v in entities.items()}}
        if request_data:
            body["request_data"] = {k: list(v) for k, v in request_data.items()}
        if as_of is not None:
            body["as_of"] = _as_of(as_of)
        if include_metadata:
            body["include_metadata"] = True
        try:
            answer: dict[str, Any] = self._post(f"/v1/features/{service}", body)
        except (ClientTransportError, OnlineTableUnavailableError) as exc:
            if service not in self.fallbacks:
                raise
            return self._fallback(service, entities, exc)
        if self.shadow is not None:
            self.shadow.offer(service, entities, request_data, answer.get("as_of"))
        return answer

    def _fallback(self, service: str, entities: Mapping[str, Sequence[str | int]], exc: ServingError) -> dict[str, Any]:
        """The declared fallback answer: join keys, the declared values, status DEFAULTED."""
        self.fallbacks_used += 1
        values = self.fallbacks[service]
        n = len(next(iter(entities.values()), []))
        rows = [{**{k: v[i] for k, v in entities.items()}, **values} for i in range(n)]
        return {"service": service, "as_of": None, "features": rows,
                "metadata": {"statuses": [dict.fromkeys(values, DEFAULTED) for _ in range(n)],
                             "fallback": f"{type(exc).__name__}: {exc}"}}

    def _ttl_s(self, service: str, cache: FeatureRowCache) -> float:
        if service not in self._row_ttl_s:
            views = [v["name"] for v in self.describe_service(service)["views"]]
            self._row_ttl_s[service] = cache.config.ttl_for(views)
        return self._row_ttl_s[service]

    def get_feature_vector(
        self,
        service: str,
        join_keys: Mapping[str, str | int],
        request_data: Mapping[str, Any] | None = None,
        as_of: AsOf = None,
    ) -> dict[str, Any]:
        """One entity's features as a flat ``{name: value}`` dict (join keys first).

        With a cache, a request without ``as_of`` is answered from it while the row is
        younger than its TTL; a fallback answer is never cached.
        """
        cache = self.cache if as_of is None else None
        key: tuple[Any, ...] | None = None
        if cache is not None:
            key = (service, tuple(join_keys.items()), tuple(sorted((request_data or {}).items())))
            try:
                cached = cache.get(key)
            except TypeError:  # an unhashable request value (a list): not cacheable
                key = None
            else:
                if cached is not None:
                    return cached
        answer = self.get_feature_vectors(
            service,
            {k: [v] for k, v in join_keys.items()},
            {k: [v] for k, v in request_data.items()} if request_data else None,
            as_of,
        )
        row: dict[str, Any] = answer["features"][0]
        if cache is not None and key is not None and "fallback" not in answer.get("metadata", {}):
            cache.put(key, row, self._ttl_s(service, cache))
        return row

    def push(self, source: str, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Write events to ``source``'s topic through the server: ``{"source", "accepted", "rejected": []}``.

        Raises InvalidRecords (``.accepted``, ``.rejected``: index, reason, detail) when some
        records were refused; the others were written.
        """
        answer: dict[str, Any] = self._post(f"/v1/push/{source}", {"records": [dict(r) for r in records]})
        return answer

    def list_services(self) -> list[dict[str, Any]]:
        services: list[dict[str, Any]] = self._get("/v1/services")["services"]
        return services

    def describe_service(self, name: str) -> dict[str, Any]:
        described: dict[str, Any] = self._get(f"/v1/services/{name}")
        return described

    def close(self) -> None:
        self._http.close()
        if self.shadow is not None:
            self.shadow.close()

    def __enter__(self) -> FeatureClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
