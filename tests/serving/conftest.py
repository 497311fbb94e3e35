"""Serving test fixtures: one repo, one set of events, one app per online table."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.definitions import FeatureRepo
from engine.plan import AppliedPlan, apply_plan
from engine.state import OnlineTable, RedisOnlineTable, RocksDBOnlineTable
from tests.serving.asgi_support import ASGIClient
from tests.serving.serving_support import (
    META_VIEWS,
    N_SHARDS,
    build_test_repo,
    example_repo,
    make_app,
    make_events,
    write_log,
    write_redis,
    write_rocksdb,
)


@pytest.fixture(scope="session")
def repo() -> FeatureRepo:
    return build_test_repo(example_repo())


@pytest.fixture(scope="session")
def events() -> list[dict[str, Any]]:
    return make_events()


@pytest.fixture(scope="session")
def plan(repo: FeatureRepo, tmp_path_factory: pytest.TempPathFactory) -> AppliedPlan:
    _, applied = apply_plan(
        repo, tmp_path_factory.mktemp("plan") / "plan.json", shards=N_SHARDS, check_transforms=False
    )
    return applied


@pytest.fixture(scope="module", params=["rocksdb", pytest.param("redis", marks=pytest.mark.redis)])
def backend_client(
    request: pytest.FixtureRequest,
    repo: FeatureRepo,
    plan: AppliedPlan,
    events: list[dict[str, Any]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ASGIClient]:
    """A TestClient over the app, once with RocksDB secondaries and once with Redis."""
    table: OnlineTable
    root: Path = tmp_path_factory.mktemp(request.param)
    write_log(str(root / "log"), repo.views, events)
    if request.param == "rocksdb":
        write_rocksdb(root / "state", repo.views, events, meta_for=META_VIEWS)
        table = RocksDBOnlineTable(root / "state", N_SHARDS, root / "secondary", background=False)
    else:
        url: str = request.getfixturevalue("redis_server")
        write_redis(url, repo.views, events, meta_for=META_VIEWS)
        table = RedisOnlineTable(url)
    client = ASGIClient(make_app(repo, plan, table, log_root=str(root / "log")))
    try:
        yield client
    finally:
        client.close()
        table.close()


@pytest.fixture(scope="module")
def client(
    repo: FeatureRepo, plan: AppliedPlan, events: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ASGIClient]:
    """RocksDB-backed TestClient for the tests that do not depend on the backend."""
    root: Path = tmp_path_factory.mktemp("rocks1")
    write_log(str(root / "log"), repo.views, events)
    write_rocksdb(root / "state", repo.views, events, meta_for=META_VIEWS)
    table = RocksDBOnlineTable(root / "state", N_SHARDS, root / "secondary", background=False)
    test_client = ASGIClient(
        make_app(repo, plan, table, max_entities_per_request=50, max_request_bytes=20_000, log_root=str(root / "log"))
    )
    try:
        yield test_client
    finally:
        test_client.close()
        table.close()
