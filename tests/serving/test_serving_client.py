"""FeatureClient against a real uvicorn server on loopback; `streamfeat serve` start-up errors."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli import main as cli_main
from engine.ports import free_port
from serving.client import FeatureClient
from serving.client_cache import CacheConfig, FeatureRowCache
from serving.exceptions import (
    ClientTransportError,
    InvalidRequest,
    PayloadTooLarge,
    ServiceNotFound,
    TransformError,
)
from tests.serving.asgi_support import ASGIClient
from tests.serving.serving_support import REPO_DIR, T_END, build_test_repo, example_repo, uvicorn_server


@pytest.fixture(scope="module")
def server_url(client: ASGIClient) -> Iterator[str]:
    with uvicorn_server(client.app) as url:
        yield url


def test_feature_vector_and_vectors(server_url: str) -> None:
    with FeatureClient(server_url, timeout=5.0) as fc:
        row = fc.get_feature_vector(
            "fraud_scoring", {"user_id": "u0", "merchant_id": "m0"}, request_data={"amount": 20.0}, as_of=T_END
        )
        assert list(row)[:2] == ["user_id", "merchant_id"] and row["amount_count_15m"] >= 1
        many = fc.get_feature_vectors(
            "fraud_scoring",
            {"user_id": ["u0", "u1"], "merchant_id": ["m0", "m1"]},
            {"amount": [20.0, 1.0]},
            as_of=T_END,
            include_metadata=True,
        )
        # One entity and many sum tiles in different orders (kernel evaluate vs evaluate_many).
        first = many["features"][0]
        assert list(first) == list(row)
        assert all(
            first[k] == v if isinstance(v, str | list) else first[k] == pytest.approx(v, rel=1e-9)
            for k, v in row.items()
        )
        assert len(many["metadata"]["statuses"]) == 2
        per_row = fc.get_feature_vectors(
            "fraud_scoring",
            {"user_id": ["u0", "u0"], "merchant_id": ["m0", "m0"]},
            {"amount": [20.0, 20.0]},
            as_of=[T_END, datetime.fromtimestamp(T_END / 1000, UTC)],
        )
        assert per_row["as_of"] == [T_END, T_END] and per_row["features"][0] == per_row["features"][1]
        assert [s["name"] for s in fc.list_services()] == sorted(
            s.name for s in build_test_repo(example_repo()).services
        )
        assert fc.describe_service("with_defaults")["inputs"]["entities"][0]["name"] == "user_id"


@pytest.mark.parametrize(
    ("call", "kind"),
    [
        (lambda fc: fc.get_feature_vector("nope", {"user_id": "u0"}), ServiceNotFound),
        (lambda fc: fc.get_feature_vector("fraud_scoring", {"user_id": "u0"}, {"amount": 1.0}), InvalidRequest),
        (
            lambda fc: fc.get_feature_vectors(
                "fraud_scoring", {"user_id": ["u"] * 60, "merchant_id": ["m"] * 60}, {"amount": [1.0] * 60}
            ),
            PayloadTooLarge,
        ),
        (lambda fc: fc.get_feature_vector("with_defaults", {"user_id": "u0"}, {"amount": 13.0}), TransformError),
    ],
)
def test_typed_errors(server_url: str, call: Any, kind: type[Exception]) -> None:
    with FeatureClient(server_url) as fc, pytest.raises(kind) as caught:
        call(fc)
    if isinstance(caught.value, TransformError):
        assert caught.value.transform == "flaky"
    if isinstance(caught.value, InvalidRequest):
        assert caught.value.field == "entities.merchant_id"


def test_unreachable_server_is_transport_error() -> None:
    with FeatureClient(f"http://127.0.0.1:{free_port()}", timeout=1.0) as fc, pytest.raises(ClientTransportError):
        fc.list_services()


def test_serve_without_plan_exits_2_with_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("STREAMFEAT_DATA_DIR", "STREAMFEAT_REPO", "STREAMFEAT_ONLINE"):
        monkeypatch.delenv(name, raising=False)
    code = cli_main(["serve", "--repo", str(REPO_DIR), "--port", str(free_port())])
    err = capsys.readouterr().err
    assert code == 2
    assert "no applied plan" in err and "streamfeat apply" in err


class CountingTransport(httpx.HTTPTransport):
    """The real HTTP transport, counting the requests that reach the server."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(f"{request.method} {request.url.path}")
        return super().handle_request(request)


def test_cache_answers_hot_entities_without_the_server(server_url: str) -> None:
    transport = CountingTransport()
    config = CacheConfig(max_entries=2, default_ttl_s=60.0, view_ttl_s={"merchant_activity": 30.0})
    with FeatureClient(server_url, transport=transport, cache=config) as fc:
        first = fc.get_feature_vector("fraud_scoring", {"user_id": "u0", "merchant_id": "m0"}, {"amount": 20.0})
        assert fc.cache is not None and (fc.cache.stats.hits, fc.cache.stats.misses) == (0, 1)
        again = fc.get_feature_vector("fraud_scoring", {"user_id": "u0", "merchant_id": "m0"}, {"amount": 20.0})
        assert again == first and fc.cache.stats.hits == 1
        # The row TTL is the shortest of the service's views (describe asked once).
        assert transport.sent == ["POST /v1/features/fraud_scoring", "GET /v1/services/fraud_scoring"]
        # Other request data is another row (an on-demand output depends on it); as_of bypasses the cache.
        other = fc.get_feature_vector("fraud_scoring", {"user_id": "u0", "merchant_id": "m0"}, {"amount": 40.0})
        assert other["spend_velocity_ratio"] == pytest.approx(2 * first["spend_velocity_ratio"])
        fc.get_feature_vector("fraud_scoring", {"user_id": "u0", "merchant_id": "m0"}, {"amount": 20.0}, as_of=T_END)
        assert transport.sent.count("POST /v1/features/fraud_scoring") == 3
        # Size bound: a third row evicts the least recently used.
        fc.get_feature_vector("fraud_scoring", {"user_id": "u1", "merchant_id": "m1"}, {"amount": 1.0})
        assert len(fc.cache) == 2 and fc.cache.stats.evictions == 1
        assert fc.cache.stats.hit_rate == pytest.approx(1 / 4)


def test_row_cache_expires_and_evicts_least_recently_used() -> None:
    now = [100.0]
    cache = FeatureRowCache(CacheConfig(max_entries=2), clock=lambda: now[0])
    cache.put("a", {"x": 1}, ttl_s=1.0)
    cache.put("b", {"x": 2}, ttl_s=5.0)
    assert cache.get("a") == {"x": 1}  # "a" is now the most recently used
    cache.put("c", {"x": 3}, ttl_s=5.0)
    assert cache.get("b") is None and cache.stats.evictions == 1
    now[0] += 2.0
    assert cache.get("a") is None and cache.stats.expired == 1 and cache.get("c") == {"x": 3}
    assert CacheConfig(view_ttl_s={"fast": 0.5}).ttl_for(["slow", "fast"]) == 0.5
    with pytest.raises(ValueError, match="expected seconds > 0"):
        CacheConfig(default_ttl_s=0)


def test_declared_fallback_when_the_server_does_not_answer() -> None:
    fallbacks = {"fraud_scoring": {"amount_sum_15m": 0.0, "spend_velocity_ratio": 1.0}}
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with FeatureClient(url, timeout=0.2, fallbacks=fallbacks, cache=CacheConfig()) as fc:
            row = fc.get_feature_vector("fraud_scoring", {"user_id": "u0", "merchant_id": "m0"}, {"amount": 2.0})
            assert row == {"user_id": "u0", "merchant_id": "m0", "amount_sum_15m": 0.0, "spend_velocity_ratio": 1.0}
            many = fc.get_feature_vectors(
                "fraud_scoring",
                {"user_id": ["u0", "u1"], "merchant_id": ["m0", "m1"]},
                {"amount": [1.0, 2.0]},
                include_metadata=True,
            )
            assert (
                many["metadata"]["statuses"]
                == [{"amount_sum_15m": "DEFAULTED", "spend_velocity_ratio": "DEFAULTED"}] * 2
            )
            assert "ReadTimeout" in many["metadata"]["fallback"]
            assert fc.fallbacks_used == 2 and fc.cache is not None and len(fc.cache) == 0  # never cached
            # A service without a declared fallback still raises.
            with pytest.raises(ClientTransportError):
                fc.get_feature_vector("batch_review", {"user_id": "u0"}, {"amount": 2.0})
