"""``create_app``: the FastAPI feature server, built from settings (uvicorn factory).

    uvicorn --factory serving.app:create_app \
        --http serving.http_guard:GuardedHttpToolsProtocol   # settings from cwd / STREAMFEAT_* env

(without ``--http`` the read timeouts and per-client connection caps are not applied).

Startup loads the repo, requires an applied plan whose fingerprints match the repo,
compiles every service, and opens the online table (RocksDB secondaries or Redis).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from engine.config import Settings, load_settings
from engine.definitions import FeatureRepo, load_repo
from engine.io.request_log import RequestLogger
from engine.plan import AppliedPlan, load_applied_plan
from engine.state import OnlineTable, RedisOnlineTable, RocksDBOnlineTable
from serving import error_handlers, push, routes_feast, routes_ops, routes_v1
from serving.auth import ApiKeyMiddleware, load_api_keys
from serving.deps import ServingState
from serving.exceptions import ServingSetupError
from serving.history import HistoricalReads
from serving.hot_path import FeatureRoute
from serving.metrics import ServingMetrics
from serving.online import OnlineAccess
from serving.ops_cluster import cluster_watch
from serving.plan_watch import PlanWatch
from serving.registry import build_registry
from serving.shedding import SheddingMiddleware, SheddingStats
from serving.telemetry import telemetry_config
from serving.window_cache import DEFAULT_MAX_BYTES, WindowCache


def open_online_table(settings: Settings, n_shards: int, view_topics: Mapping[bytes, str]) -> OnlineTable:
    """``view_topics`` (fingerprint -> source topic of every view served) lets a Redis
    table refuse views whose copy Redis lost (engine/state/online_redis.py)."""
    if settings.online == "redis":
        return RedisOnlineTable(settings.redis_url, view_topics=view_topics, n_shards=n_shards)
    return RocksDBOnlineTable(
        settings.state_dir,
        n_shards,
        settings.path(settings.data_dir) / "secondary",
        catch_up_interval_s=settings.catch_up_interval_ms / 1000,
    )


def load_plan_or_fail(settings: Settings) -> AppliedPlan:
    plan = load_applied_plan(settings.plan_file)
    if plan is None:
        raise ServingSetupError(
            f"no applied plan at {settings.plan_file}: serving needs the view fingerprints and shard count",
            hint=f"run `streamfeat apply --repo {settings.repo_path}` first",
        )
    return plan


def create_app(
    settings: Settings | None = None,
    *,
    repo: FeatureRepo | None = None,
    plan: AppliedPlan | None = None,
    online_table: OnlineTable | None = None,
    freshness_ttl_s: float = 0.1,
    window_cache_bytes: int = DEFAULT_MAX_BYTES,
) -> FastAPI:
    """Build the app. Anything not given is loaded from ``settings`` (default: load_settings()).

    An ``online_table`` passed in stays the caller's to close; one opened here is closed
    at shutdown. ``window_cache_bytes`` bounds the cache of evaluated one-entity windows
    (serving/window_cache.py; 0 turns it off).
    """
    settings = settings if settings is not None else load_settings()
    repo = repo if repo is not None else load_repo(settings.repo_path)
    watched = settings.plan_file if plan is None else None  # a plan given in code is never re-read
    plan = plan if plan is not None else load_plan_or_fail(settings)
    registry = build_registry(repo, plan)
    owned = online_table is None
    view_topics = {view.fingerprint: view.source.topic for view in repo.views}
    table = online_table if online_table is not None else open_online_table(settings, plan.shards, view_topics)
    metrics = ServingMetrics()
    online = OnlineAccess(
        table,
        metrics,
        backend=settings.online,
        freshness_ttl_s=freshness_ttl_s,
        window_cache=WindowCache(window_cache_bytes) if window_cache_bytes else None,
    )
    on_demand = {t.name for service in registry.services.values() for t in service.transforms}
    online.plan = PlanWatch(plan, registry.views, watched, on_demand=on_demand)
    state = ServingState(
        registry=registry,
        online=online,
        metrics=metrics,
        history=HistoricalReads(online, settings.log_uri),
        max_entities_per_request=settings.max_entities_per_request,
        max_request_bytes=settings.max_request_bytes,
        request_log=RequestLogger(settings.request_log_dir) if settings.request_log_dir else None,
    )

    pusher = push.Pusher(push.pushable_sources(repo, settings.push_sources), settings.kafka_bootstrap, views=repo.views)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if state.request_log is not None:
                state.request_log.close()
            pusher.close()
            if owned:
                table.close()

    app = FastAPI(
        title="streamfeat feature server",
        version="1",
        description="Streaming features as of request time. See docs/serving.md.",
        lifespan=lifespan,
        telemetry=telemetry_config(settings),
    )
    app.state.serving = state
    error_handlers.install(app)
    app.include_router(routes_v1.build_router(registry))
    app.include_router(routes_feast.build_router(registry))
    app.include_router(
        routes_ops.build_router(settings.log_uri, settings.metrics_port, cluster_watch(settings, registry))
    )
    if pusher.sources:
        app.include_router(push.build_router(pusher))
    # Added first = innermost: feature requests are answered after every other middleware.
    app.add_middleware(FeatureRoute)
    # Added last = outermost: shed before spending anything on a request, then check its key.
    if settings.api_keys_file:
        app.add_middleware(
            ApiKeyMiddleware,
            keys=load_api_keys(settings.path(Path(settings.api_keys_file))),
            max_request_bytes=settings.max_request_bytes,
        )
    app.state.shedding = SheddingStats()
    app.add_middleware(
        SheddingMiddleware,
        max_in_flight=settings.max_in_flight,
        stats=app.state.shedding,
        max_request_bytes=settings.max_request_bytes,
    )
    return app
