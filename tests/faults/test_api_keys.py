"""API keys: 401 without or with an unknown key, 403 for a service not allowed, keys never logged."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from engine.config import Settings
from engine.plan import apply_plan
from engine.state import RocksDBOnlineTable
from serving.app import create_app
from serving.auth import ApiKeyFileError, load_api_keys
from serving.client import FeatureClient
from tests.serving.asgi_support import ASGIClient
from tests.serving.serving_support import N_SHARDS, example_repo, make_events, write_rocksdb

ALL_KEY = "all-services-key-0123456789"
SCORING_KEY = "scoring-only-key-0123456789"
OPS_KEY = "operations-only-key-0123456789"
OPS_ROUTES = ("/metrics", "/v1/ops/summary", "/ui", "/ui/index.html", "/v1/quality/user_spend")
GOOD = {"entities": {"user_id": ["u1"], "merchant_id": ["m1"]}, "request_data": {"amount": [3.0]}}


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ASGIClient]:
    root = tmp_path_factory.mktemp("auth")
    keys = root / "keys.yaml"
    keys.write_text(
        "keys:\n"
        f"  - {{name: ops, sha256: {hashlib.sha256(ALL_KEY.encode()).hexdigest()}, services: ['*']}}\n"
        f"  - {{name: checkout, key: {SCORING_KEY}, services: [fraud_scoring]}}\n"
        f"  - {{name: prometheus, key: {OPS_KEY}, services: [], scopes: ['ops:read']}}\n"
    )
    repo = example_repo()
    _, plan = apply_plan(repo, root / "plan.json", shards=N_SHARDS, check_transforms=False)
    write_rocksdb(root / "state", repo.views, make_events(), meta_for=("user_spend",))
    table = RocksDBOnlineTable(root / "state", N_SHARDS, root / "secondary", background=False)
    client = ASGIClient(create_app(Settings(api_keys_file=str(keys)), repo=repo, plan=plan, online_table=table))
    try:
        yield client
    finally:
        client.close()
        table.close()


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def test_no_or_unknown_key_is_401_and_health_stays_open(keyed: ASGIClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        for headers in ({}, bearer("not-a-key"), {"authorization": "Basic abc"}, bearer(ALL_KEY + "x")):
            reply = keyed.post("/v1/features/fraud_scoring", json=GOOD, headers=headers)
            assert reply.status_code == 401, reply.text
            assert reply.json()["error"]["code"] == "unauthorized"
            assert reply.headers["www-authenticate"] == "Bearer"
        assert keyed.get("/v1/services").status_code == 401
        assert keyed.get("/healthz").status_code == 200
    logged = caplog.text
    assert "not-a-key" not in logged and ALL_KEY not in logged


def test_known_key_reads_its_services_only(keyed: ASGIClient, caplog: pytest.LogCaptureFixture) -> None:
    ok = keyed.post("/v1/features/fraud_scoring", json=GOOD, headers=bearer(SCORING_KEY))
    assert ok.status_code == 200, ok.text
    with caplog.at_level(logging.DEBUG):
        denied = keyed.post(
            "/v1/features/batch_review", json={"entities": {"user_id": ["u1"]}}, headers=bearer(SCORING_KEY)
        )
        assert denied.status_code == 403 and denied.json()["error"]["code"] == "forbidden"
        assert keyed.get("/v1/services/batch_review", headers=bearer(SCORING_KEY)).status_code == 403
        # Feast route: the service is named in the body.
        feast = {"feature_service": "batch_review", "entities": {"user_id": ["u1"]}}
        assert keyed.post("/get-online-features", json=feast, headers=bearer(SCORING_KEY)).status_code == 403
        # "view:feature" references can name any view: refused for a key limited to some services.
        refs = {"features": ["user_spend:amount_sum_1d"], "entities": {"user_id": ["u1"]}}
        refused = keyed.post("/get-online-features", json=refs, headers=bearer(SCORING_KEY))
        assert refused.status_code == 403 and "references" in json.loads(refused.json())["message"]
        assert keyed.post("/get-online-features", json=refs, headers=bearer(ALL_KEY)).status_code == 200
        # A push writes to a topic: refused for a key limited to some services.
        push = keyed.post("/v1/push/transactions", json={"records": [{}]}, headers=bearer(SCORING_KEY))
        assert push.status_code == 403 and "may not push" in push.json()["error"]["message"]
    assert SCORING_KEY not in caplog.text and "checkout" in caplog.text
    feast_ok = {
        "feature_service": "fraud_scoring",
        "entities": {"user_id": ["u1"], "merchant_id": ["m1"]},
        "request_context": {"amount": [3.0]},
    }
    reply = keyed.post("/get-online-features", json=feast_ok, headers=bearer(SCORING_KEY))
    assert reply.status_code == 200, reply.text
    everything = keyed.get("/v1/services/batch_review", headers=bearer(ALL_KEY))
    assert everything.status_code == 200, everything.text
    # An over-limit Feast body is refused before the service check, never truncated.
    big = orjson.dumps({"feature_service": "fraud_scoring", "pad": "x" * 2_000_000})
    assert keyed.post("/get-online-features", content=big, headers=bearer(SCORING_KEY)).status_code == 413


def test_ops_routes_need_the_ops_read_scope(keyed: ASGIClient) -> None:
    for path in OPS_ROUTES:
        for key in (SCORING_KEY, ALL_KEY):  # a service key, even "*", does not open operations routes
            reply = keyed.get(path, headers=bearer(key))
            assert reply.status_code == 403, (path, reply.text)
            assert reply.json()["error"]["code"] == "forbidden" and "ops:read" in reply.json()["error"]["hint"]
        assert keyed.get(path, headers=bearer(OPS_KEY)).status_code == 200, path
        assert keyed.get(path).status_code == 401
    # The operations key reads no feature service.
    assert keyed.post("/v1/features/fraud_scoring", json=GOOD, headers=bearer(OPS_KEY)).status_code == 403


def test_service_catalogue_lists_only_what_the_key_may_read(keyed: ASGIClient) -> None:
    def names(key: str) -> list[str]:
        reply = keyed.get("/v1/services", headers=bearer(key))
        assert reply.status_code == 200, reply.text
        return [s["name"] for s in reply.json()["services"]]

    assert names(SCORING_KEY) == ["fraud_scoring"]
    assert names(OPS_KEY) == []
    assert "batch_review" in names(ALL_KEY) and "fraud_scoring" in names(ALL_KEY)


def test_feature_client_sends_the_key_the_server_checks(keyed: ASGIClient) -> None:
    import httpx

    transport = httpx.MockTransport(lambda r: httpx.Response(200, json={"auth": r.headers.get("authorization")}))
    client = FeatureClient("http://x", api_key=SCORING_KEY, transport=transport)
    try:
        sent = client._http.get("/").json()["auth"]
    finally:
        client._http.close()
    assert keyed.post("/v1/features/fraud_scoring", json=GOOD, headers={"authorization": sent}).status_code == 200


@pytest.mark.parametrize(
    "text,field",
    [
        ("keys: []", "at least one key"),
        ("keys:\n  - {name: a, key: short, services: ['*']}", "at least 16"),
        ("keys:\n  - {name: a, sha256: zz, services: ['*']}", "64 hex"),
        ("keys:\n  - {name: a, key: 0123456789abcdefg, sha256: " + "0" * 64 + ", services: ['*']}", "exactly one"),
        ("keys:\n  - {name: a, key: 0123456789abcdefg, services: []}", "services"),
        ("keys:\n  - {name: a, key: 0123456789abcdefg, services: ['*'], admin: true}", "unknown fields"),
        ("keys:\n  - {name: a, key: 0123456789abcdefg, services: ['*'], scopes: ['ops:write']}", "scopes"),
        ("keys:\n  - {name: a, key: 0123456789abcdefg, services: ['*'], scopes: 'ops:read'}", "scopes"),
        ("[1, 2]", "'keys'"),
    ],
)
def test_bad_key_files_are_refused_with_the_reason(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(text)
    with pytest.raises(ApiKeyFileError, match=field):
        load_api_keys(path)
