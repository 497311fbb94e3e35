"""When serving sheds load, Feast's route answers 503 in the error shape Feast's client reads
(a JSON string holding module, class and message), with Retry-After. Feast's own SDK retries
a 503 (its HTTP session retries 429/5xx with backoff, honouring Retry-After) and then raises
requests' RetryError without reading the body; the test checks that too. Other routes keep
streamfeat's error shape."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.peers.install import PeerInstallError, RegistryUnreachable, ensure
from engine.definitions import FeatureRepo
from engine.plan import AppliedPlan
from engine.state import RocksDBOnlineTable
from tests.serving.asgi_support import ASGIClient
from tests.serving.serving_support import N_SHARDS, make_app, uvicorn_server, write_rocksdb
from tests.serving.test_feast_sdk import run_feast_sdk, write_feast_repo

BODY = {"feature_service": "fraud_scoring", "entities": {"user_id": ["u0"], "merchant_id": ["m0"], "amount": [1.0]}}


@pytest.fixture(scope="module")
def full_app(
    repo: FeatureRepo, plan: AppliedPlan, events: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """The app with its in-flight budget already used up (max_in_flight requests counted in flight)."""
    root = tmp_path_factory.mktemp("overload")
    write_rocksdb(root / "state", repo.views, events, meta_for=[v.name for v in repo.views])
    table = RocksDBOnlineTable(root / "state", N_SHARDS, root / "secondary", background=False)
    app = make_app(repo, plan, table, max_in_flight=2)
    app.state.shedding.in_flight = 2
    try:
        yield app
    finally:
        table.close()


def test_shed_feast_request_is_answered_in_feast_error_shape(full_app: Any) -> None:
    client = ASGIClient(full_app)
    try:
        feast = client.post("/get-online-features", json=BODY)
        v1 = client.post(
            "/v1/features/fraud_scoring",
            json={"entities": {"user_id": ["u0"], "merchant_id": ["m0"]}, "request_data": {"amount": [1.0]}},
        )
    finally:
        client.close()
    assert feast.status_code == 503 and feast.headers["retry-after"] == "1"
    detail = json.loads(feast.json())  # Feast's client json-decodes the body, then the string inside it
    assert (detail["module"], detail["class"], detail["code"]) == ("feast.errors", "FeastError", "overloaded")
    assert "server overloaded: 2 requests in flight, at most 2" in detail["message"]
    assert "retry after 1 s" in detail["message"]
    assert v1.status_code == 503 and v1.json()["error"]["code"] == "overloaded"


def test_too_large_feast_body_is_refused_in_feast_error_shape(
    repo: FeatureRepo, plan: AppliedPlan, events: list[dict[str, Any]], tmp_path: Path
) -> None:
    """The body is read (bounded) before admission; a body over max_request_bytes is refused
    there, on Feast's route in Feast's shape too."""
    write_rocksdb(tmp_path / "state", repo.views, events, meta_for=())
    table = RocksDBOnlineTable(tmp_path / "state", N_SHARDS, tmp_path / "secondary", background=False)
    client = ASGIClient(make_app(repo, plan, table, max_request_bytes=2_000))
    users = ["u0"] * 500
    try:
        feast = client.post(
            "/get-online-features",
            json={**BODY, "entities": {"user_id": users, "merchant_id": ["m0"] * 500, "amount": [1.0] * 500}},
        )
        v1 = client.post(
            "/v1/features/fraud_scoring",
            json={"entities": {"user_id": users, "merchant_id": ["m0"] * 500}, "request_data": {"amount": [1.0] * 500}},
        )
    finally:
        client.close()
        table.close()
    assert feast.status_code == 413
    detail = json.loads(feast.json())
    assert (detail["module"], detail["code"]) == ("feast.errors", "payload_too_large")
    assert "at most 2000 accepted" in detail["message"]  # by its declared Content-Length
    assert v1.status_code == 413 and v1.json()["error"]["code"] == "payload_too_large"


@pytest.mark.slow
def test_feast_sdk_raises_feast_error_when_streamfeat_sheds(full_app: Any, tmp_path: Path) -> None:
    try:
        python = ensure("feast").python
    except RegistryUnreachable as exc:
        pytest.skip(f"the package index is unreachable, Feast cannot be installed: {exc}")
    except PeerInstallError as exc:
        pytest.fail(f"Feast did not install: {exc}")
    with uvicorn_server(full_app) as url:
        repo = write_feast_repo(tmp_path / "feast_repo", int(url.rsplit(":", 1)[1]))
        rows = [{"user_id": "u0", "merchant_id": "m0", "amount": 1.0}]
        sdk = run_feast_sdk(python, repo, [{"id": "shed", "feature_service": "fraud_scoring", "entity_rows": rows}])
    shed = sdk["results"]["shed"]
    assert not shed["ok"]
    # Feast 0.67: retried, then urllib3's "too many 503 error responses" (the body is not parsed on 5xx).
    assert (shed["module"], shed["class"]) == ("requests.exceptions", "RetryError"), shed
    assert "too many 503 error responses" in shed["message"]
    assert full_app.state.shedding.shed > 2, "Feast's client retries a 503 before giving up"
