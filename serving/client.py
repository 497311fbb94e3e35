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
What is sent, what an answer means, caching and fallbacks are decided in
``serving.client_core``, shared with ``serving.client_async.AsyncFeatureClient``.

>>> with FeatureClient("http://127.0.0.1:8000") as client:          # doctest: +SKIP
...     client.get_feature_vector("fraud_scoring", {"user_id": "u1", "merchant_id": "m1"},
...                               request_data={"amount": 42.0})
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

import httpx

from serving.client_cache import CacheConfig
from serving.client_core import (
    DEFAULTED,
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
from serving.client_shadow import LiveShadow, ShadowConfig
from serving.exceptions import ServingError

__all__ = ["DEFAULTED", "AsOf", "CacheConfig", "FeatureClient"]


class FeatureClient(ClientBase):
    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5.0,
        api_key: str | None = None,
        transport: httpx.BaseTransport | None = None,
        cache: CacheConfig | None = None,
        fallbacks: Mapping[str, Mapping[str, object]] | None = None,
        shadow: ShadowConfig | None = None,
    ) -> None:
        super().__init__(url, api_key, cache, fallbacks)
        self._http = httpx.Client(base_url=self.url, timeout=timeout, headers=self.headers, transport=transport)
        self.shadow = LiveShadow(shadow, self.url, api_key) if shadow is not None else None

    def _send(self, call: Call) -> Any:  # the answer's decoded JSON, indexed by the caller
        try:
            response = self._http.request(call.method, call.path, content=call.content())
        except httpx.HTTPError as exc:
            raise transport_error(call.method, f"{self.url}{call.path}", exc) from exc
        return answer_of(response)

    def get_feature_vectors(
        self,
        service: str,
        entities: Mapping[str, Sequence[str | int]],
        request_data: Mapping[str, Sequence[object]] | None = None,
        as_of: AsOf = None,
        include_metadata: bool = False,
    ) -> dict[str, Any]:  # the decoded JSON answer, for the caller to index
        """The server's whole answer for many entities: ``{"service", "as_of", "features": [...]}``."""
        call = vectors_call(service, entities, request_data, as_of, include_metadata)
        try:
            answer: dict[str, Any] = self._send(call)  # decoded JSON, indexed below
        except ServingError as exc:
            if not self.policy.falls_back(service, exc):
                raise
            return self.policy.fallback(service, entities, exc)
        if self.shadow is not None:
            self.shadow.offer(service, entities, request_data, answer.get("as_of"))
        return answer

    def get_feature_vector(
        self,
        service: str,
        join_keys: Mapping[str, str | int],
        request_data: Mapping[str, object] | None = None,
        as_of: AsOf = None,
    ) -> dict[str, Any]:  # the decoded JSON answer, for the caller to index
        """One entity's features as a flat ``{name: value}`` dict (join keys first).

        With a cache, a request without ``as_of`` is answered from it while the row is
        younger than its TTL; a fallback answer is never cached.
        """
        key = self.policy.cache_key(service, join_keys, request_data, as_of)
        cached = self.policy.cached(key)
        if cached is not None:
            return cached
        answer = self.get_feature_vectors(service, *one_row_args(join_keys, request_data), as_of)
        if key is not None and self.policy.storable(key, answer):
            if self.policy.needs_views(service):
                self.policy.learn_views(service, self.describe_service(service))
            self.policy.store(service, key, answer)
        row: dict[str, Any] = answer["features"][0]  # one decoded JSON row, for the caller to index
        return row

    def push(self, source: str, records: Sequence[Mapping[str, object]]) -> dict[str, Any]:  # decoded JSON answer
        """Write events to ``source``'s topic through the server: ``{"source", "accepted", "rejected": []}``.

        Raises InvalidRecords (``.accepted``, ``.rejected``: index, reason, detail) when some
        records were refused; the others were written.
        """
        answer: dict[str, Any] = self._send(push_call(source, records))  # decoded JSON answer
        return answer

    def list_services(self) -> list[dict[str, Any]]:  # decoded JSON, for the caller to index
        # Any: the decoded JSON answer's service entries, for the caller to index
        services: list[dict[str, Any]] = self._send(LIST_SERVICES)["services"]
        return services

    def describe_service(self, name: str) -> dict[str, Any]:  # decoded JSON, for the caller to index
        described: dict[str, Any] = self._send(describe_call(name))  # decoded JSON answer
        return described

    def close(self) -> None:
        self._http.close()
        if self.shadow is not None:
            self.shadow.close()

    def __enter__(self) -> FeatureClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
