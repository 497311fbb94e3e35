"""``AsyncFeatureClient``: the asyncio twin of ``serving.client.FeatureClient``.

Same methods (awaited), same cache, timeouts, fallbacks and counters: both clients
delegate every decision to ``serving.client_core`` and differ only in how bytes move
(``httpx.AsyncClient`` here). For an async inference service (FastAPI, aiohttp):

>>> async with AsyncFeatureClient("http://127.0.0.1:8000", cache=CacheConfig()) as fc:   # doctest: +SKIP
...     row = await fc.get_feature_vector("fraud_scoring", {"user_id": "u1", "merchant_id": "m1"},
...                                       request_data={"amount": 42.0})
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

import httpx

from serving.client_cache import CacheConfig
from serving.client_core import (
    LIST_SERVICES,
    AsOf,
    Call,
    ClientBase,
    answer_of,
    describe_call,
    one_row_args,
    push_call,
    transport_error,
    vectors_call,
)
from serving.exceptions import ServingError


class AsyncFeatureClient(ClientBase):
    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5.0,
        api_key: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        cache: CacheConfig | None = None,
        fallbacks: Mapping[str, Mapping[str, object]] | None = None,
    ) -> None:
        super().__init__(url, api_key, cache, fallbacks)
        self._http = httpx.AsyncClient(base_url=self.url, timeout=timeout, headers=self.headers, transport=transport)

    async def _send(self, call: Call) -> Any:  # the answer's decoded JSON, indexed by the caller
        try:
            response = await self._http.request(call.method, call.path, content=call.content())
        except httpx.HTTPError as exc:
            raise transport_error(call.method, f"{self.url}{call.path}", exc) from exc
        return answer_of(response)

    async def get_feature_vectors(
        self,
        service: str,
        entities: Mapping[str, Sequence[str | int]],
        request_data: Mapping[str, Sequence[object]] | None = None,
        as_of: AsOf = None,
        include_metadata: bool = False,
    ) -> dict[str, Any]:  # the decoded JSON answer, for the caller to index
        """See ``FeatureClient.get_feature_vectors``."""
        call = vectors_call(service, entities, request_data, as_of, include_metadata)
        try:
            answer: dict[str, Any] = await self._send(call)  # decoded JSON, indexed below
        except ServingError as exc:
            if not self.policy.falls_back(service, exc):
                raise
            return self.policy.fallback(service, entities, exc)
        return answer

    async def get_feature_vector(
        self,
        service: str,
        join_keys: Mapping[str, str | int],
        request_data: Mapping[str, object] | None = None,
        as_of: AsOf = None,
    ) -> dict[str, Any]:  # the decoded JSON answer, for the caller to index
        """See ``FeatureClient.get_feature_vector`` (a cache hit does not await anything)."""
        key = self.policy.cache_key(service, join_keys, request_data, as_of)
        cached = self.policy.cached(key)
        if cached is not None:
            return cached
        answer = await self.get_feature_vectors(service, *one_row_args(join_keys, request_data), as_of)
        if key is not None and self.policy.storable(key, answer):
            if self.policy.needs_views(service):
                self.policy.learn_views(service, await self.describe_service(service))
            self.policy.store(service, key, answer)
        row: dict[str, Any] = answer["features"][0]  # one decoded JSON row, for the caller to index
        return row

    async def push(self, source: str, records: Sequence[Mapping[str, object]]) -> dict[str, Any]:  # decoded JSON answer
        """See ``FeatureClient.push``."""
        answer: dict[str, Any] = await self._send(push_call(source, records))  # decoded JSON answer
        return answer

    async def list_services(self) -> list[dict[str, Any]]:  # decoded JSON, for the caller to index
        # Any: the decoded JSON answer's service entries, for the caller to index
        services: list[dict[str, Any]] = (await self._send(LIST_SERVICES))["services"]
        return services

    async def describe_service(self, name: str) -> dict[str, Any]:  # decoded JSON, for the caller to index
        described: dict[str, Any] = await self._send(describe_call(name))  # decoded JSON answer
        return described

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncFeatureClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
