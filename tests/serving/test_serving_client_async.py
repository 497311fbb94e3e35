"""AsyncFeatureClient against a real uvicorn server on loopback: the same answers, typed
errors, cache and fallbacks as the synchronous FeatureClient (one shared policy)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import httpx
import pytest

from serving.client import FeatureClient
from serving.client_async import AsyncFeatureClient
from serving.client_cache import CacheConfig
from serving.exceptions import ClientTransportError, InvalidRequest, ServiceNotFound
from tests.serving.asgi_support import ASGIClient
from tests.serving.serving_support import T_END, uvicorn_server

KEYS = {"user_id": "u0", "merchant_id": "m0"}


@pytest.fixture(scope="module")
def server_url(client: ASGIClient) -> Iterator[str]:
    with uvicorn_server(client.app) as url:
        yield url


class CountingAsyncTransport(httpx.AsyncHTTPTransport):
    """The real HTTP transport, counting the requests that reach the server."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(f"{request.method} {request.url.path}")
        return await super().handle_async_request(request)


def test_async_answers_equal_the_sync_client(server_url: str) -> None:
    async def calls() -> tuple[dict[str, object], dict[str, object], list[str]]:
        async with AsyncFeatureClient(server_url, timeout=5.0) as fc:
            row = await fc.get_feature_vector("fraud_scoring", KEYS, {"amount": 20.0}, as_of=T_END)
            many = await fc.get_feature_vectors(
                "fraud_scoring",
                {"user_id": ["u0", "u1"], "merchant_id": ["m0", "m1"]},
                {"amount": [20.0, 1.0]},
                as_of=T_END,
                include_metadata=True,
            )
            names = [s["name"] for s in await fc.list_services()]
            return row, many, names

    row, many, names = asyncio.run(calls())
    with FeatureClient(server_url) as sync:
        assert row == sync.get_feature_vector("fraud_scoring", KEYS, {"amount": 20.0}, as_of=T_END)
        assert names == [s["name"] for s in sync.list_services()]
        assert many == sync.get_feature_vectors(
            "fraud_scoring",
            {"user_id": ["u0", "u1"], "merchant_id": ["m0", "m1"]},
            {"amount": [20.0, 1.0]},
            as_of=T_END,
            include_metadata=True,
        )
    assert isinstance(row["amount_count_15m"], int) and row["amount_count_15m"] >= 1


def test_async_typed_errors(server_url: str) -> None:
    async def calls() -> None:
        async with AsyncFeatureClient(server_url) as fc:
            with pytest.raises(ServiceNotFound):
                await fc.get_feature_vector("nope", {"user_id": "u0"})
            with pytest.raises(InvalidRequest) as caught:
                await fc.get_feature_vector("fraud_scoring", {"user_id": "u0"}, {"amount": 1.0})
            assert caught.value.field == "entities.merchant_id"

    asyncio.run(calls())


def test_async_cache_answers_hot_entities_without_the_server(server_url: str) -> None:
    transport = CountingAsyncTransport()

    async def calls() -> None:
        async with AsyncFeatureClient(
            server_url, transport=transport, cache=CacheConfig(max_entries=2, default_ttl_s=60.0)
        ) as fc:
            first = await fc.get_feature_vector("fraud_scoring", KEYS, {"amount": 20.0})
            again = await fc.get_feature_vector("fraud_scoring", KEYS, {"amount": 20.0})
            assert again == first
            assert fc.cache is not None and (fc.cache.stats.hits, fc.cache.stats.misses) == (1, 1)
            assert transport.sent == ["POST /v1/features/fraud_scoring", "GET /v1/services/fraud_scoring"]
            await fc.get_feature_vector("fraud_scoring", KEYS, {"amount": 20.0}, as_of=T_END)  # as_of: not cached
            assert transport.sent.count("POST /v1/features/fraud_scoring") == 2

    asyncio.run(calls())


def test_async_declared_fallback_when_the_server_does_not_answer() -> None:
    fallbacks = {"fraud_scoring": {"amount_sum_15m": 0.0}}

    async def calls(url: str) -> None:
        async with AsyncFeatureClient(url, timeout=0.2, fallbacks=fallbacks, cache=CacheConfig()) as fc:
            row = await fc.get_feature_vector("fraud_scoring", KEYS, {"amount": 2.0})
            assert row == {**KEYS, "amount_sum_15m": 0.0}
            many = await fc.get_feature_vectors(
                "fraud_scoring", {"user_id": ["u0"], "merchant_id": ["m0"]}, include_metadata=True
            )
            assert many["metadata"]["statuses"] == [{"amount_sum_15m": "DEFAULTED"}]
            assert fc.fallbacks_used == 2 and fc.cache is not None and len(fc.cache) == 0
            with pytest.raises(ClientTransportError):
                await fc.get_feature_vector("batch_review", {"user_id": "u0"})

    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        asyncio.run(calls(f"http://127.0.0.1:{silent.getsockname()[1]}"))
