"""``FeatureClient``: a small synchronous client of the feature server.

One ``httpx.Client`` per FeatureClient keeps connections alive between calls. Error
answers become the typed errors of :mod:`serving.exceptions` (ServiceNotFound,
InvalidRequest, PayloadTooLarge, OnlineTableUnavailableError, TransformError,
ServerError); connection failures and timeouts become ClientTransportError.

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

from serving.exceptions import (
    BY_STATUS,
    ClientTransportError,
    OnlineTableUnavailableError,
    ServerError,
    ServingError,
    TransformError,
)

OneTime = int | str | datetime
AsOf = OneTime | Sequence[OneTime] | None  # a sequence: one time per entity row


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
    ) -> None:
        headers = {"content-type": "application/json"}
        if api_key is not None:
            headers["authorization"] = f"Bearer {api_key}"
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout, headers=headers, transport=transport)

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
        answer: dict[str, Any] = self._post(f"/v1/features/{service}", body)
        return answer

    def get_feature_vector(
        self,
        service: str,
        join_keys: Mapping[str, str | int],
        request_data: Mapping[str, Any] | None = None,
        as_of: AsOf = None,
    ) -> dict[str, Any]:
        """One entity's features as a flat ``{name: value}`` dict (join keys first)."""
        answer = self.get_feature_vectors(
            service,
            {k: [v] for k, v in join_keys.items()},
            {k: [v] for k, v in request_data.items()} if request_data else None,
            as_of,
        )
        row: dict[str, Any] = answer["features"][0]
        return row

    def list_services(self) -> list[dict[str, Any]]:
        services: list[dict[str, Any]] = self._get("/v1/services")["services"]
        return services

    def describe_service(self, name: str) -> dict[str, Any]:
        described: dict[str, Any] = self._get(f"/v1/services/{name}")
        return described

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> FeatureClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
