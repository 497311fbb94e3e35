"""FeatureClient against a real uvicorn server on loopback; `streamfeat serve` start-up errors."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from asgi_client import ASGIClient
from serving_state import REPO_DIR, T_END

from engine.cli import main as cli_main
from serving.client import FeatureClient
from serving.exceptions import (
    ClientTransportError,
    InvalidRequest,
    PayloadTooLarge,
    ServiceNotFound,
    TransformError,
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def server_url(client: ASGIClient) -> Iterator[str]:
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(client.app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            pytest.fail("uvicorn did not start within 10 s")
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_feature_vector_and_vectors(server_url: str) -> None:
    with FeatureClient(server_url, timeout=5.0) as fc:
        row = fc.get_feature_vector("fraud_scoring", {"user_id": "u0", "merchant_id": "m0"},
                                    request_data={"amount": 20.0}, as_of=T_END)
        assert list(row)[:2] == ["user_id", "merchant_id"] and row["amount_count_15m"] >= 1
        many = fc.get_feature_vectors("fraud_scoring", {"user_id": ["u0", "u1"], "merchant_id": ["m0", "m1"]},
                                      {"amount": [20.0, 1.0]}, as_of=T_END, include_metadata=True)
        # One entity and many sum tiles in different orders (kernel evaluate vs evaluate_many).
        first = many["features"][0]
        assert list(first) == list(row)
        assert all(first[k] == v if isinstance(v, str) else first[k] == pytest.approx(v, rel=1e-9)
                   for k, v in row.items())
        assert len(many["metadata"]["statuses"]) == 2
        per_row = fc.get_feature_vectors("fraud_scoring", {"user_id": ["u0", "u0"], "merchant_id": ["m0", "m0"]},
                                         {"amount": [20.0, 20.0]},
                                         as_of=[T_END, datetime.fromtimestamp(T_END / 1000, UTC)])
        assert per_row["as_of"] == [T_END, T_END] and per_row["features"][0] == per_row["features"][1]
        assert [s["name"] for s in fc.list_services()] == ["batch_review", "fraud_scoring", "shadowed", "user_subset", "with_defaults"]
        assert fc.describe_service("with_defaults")["inputs"]["entities"][0]["name"] == "user_id"


@pytest.mark.parametrize(("call", "kind"), [
    (lambda fc: fc.get_feature_vector("nope", {"user_id": "u0"}), ServiceNotFound),
    (lambda fc: fc.get_feature_vector("fraud_scoring", {"user_id": "u0"}, {"amount": 1.0}), InvalidRequest),
    (lambda fc: fc.get_feature_vectors("fraud_scoring", {"user_id": ["u"] * 60, "merchant_id": ["m"] * 60},
                                       {"amount": [1.0] * 60}), PayloadTooLarge),
    (lambda fc: fc.get_feature_vector("with_defaults", {"user_id": "u0"}, {"amount": 13.0}), TransformError),
])
def test_typed_errors(server_url: str, call: Any, kind: type[Exception]) -> None:
    with FeatureClient(server_url) as fc, pytest.raises(kind) as caught:
        call(fc)
    if isinstance(caught.value, TransformError):
        assert caught.value.transform == "flaky"
    if isinstance(caught.value, InvalidRequest):
        assert caught.value.field == "entities.merchant_id"


def test_unreachable_server_is_transport_error() -> None:
    with FeatureClient(f"http://127.0.0.1:{_free_port()}", timeout=1.0) as fc, pytest.raises(ClientTransportError):
        fc.list_services()


def test_serve_without_plan_exits_2_with_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("STREAMFEAT_DATA_DIR", "STREAMFEAT_REPO", "STREAMFEAT_ONLINE"):
        monkeypatch.delenv(name, raising=False)
    code = cli_main(["serve", "--repo", str(REPO_DIR), "--port", str(_free_port())])
    err = capsys.readouterr().err
    assert code == 2
    assert "no applied plan" in err and "streamfeat apply" in err
