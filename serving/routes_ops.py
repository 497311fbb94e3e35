"""Operations routes: /v1/quality/{view}, /v1/ops/summary and the dashboard at /ui.

The summary joins the three monitoring layers of docs/operations.md for one page:
views and freshness (online table metadata), ingest (the dataflow's metrics
endpoints, scraped from ``metrics_port`` upwards: process ``i`` of a cluster listens
on ``metrics_port + i``), dead letters by reason (same endpoints), serving latency
percentiles (this app's own histogram) and the data-quality series (the quality
tables ``streamfeat quality`` writes) and, with ``state_backup: kafka``, every shard's
owner, lag, durable point and restore (serving/ops_cluster.py). The app keeps the last
samples in memory so the dashboard can draw rates and latencies over time.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import httpx
from fastapi import APIRouter
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from starlette.requests import Request
from starlette.responses import Response

from engine.clock import wall_clock_ms
from engine.json_types import JSONObject
from engine.quality import STRING, QualityError, read_quality
from serving.deps import get_state, json_response
from serving.exceptions import NotFound, ServingError
from serving.ops_cluster import ClusterReader, ClusterWatch

UI_DIR = Path(__file__).resolve().parent / "ui"
UI_FILES: dict[str, str] = {
    "index.html": "text/html; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "charts.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
HISTORY_LENGTH = 150  # 5 minutes at the dashboard's 2-second refresh
MAX_METRICS_ENDPOINTS = 16
SCRAPE_TIMEOUT_S = 0.5
QUALITY_CACHE_S = 10.0


class ViewNotFound(ServingError):
    """GET /v1/quality/{view} for a view the applied plan does not serve."""

    status_code: ClassVar[int] = 404
    code = "view_not_found"


@dataclass
class IngestSample:
    """What the dataflow metrics endpoints said at one moment."""

    endpoints: int = 0
    events_in: float = 0.0
    rows_applied: dict[str, float] = field(default_factory=dict)
    dead_letters: dict[str, float] = field(default_factory=dict)
    lag: dict[str, float] = field(default_factory=dict)
    state_bytes: float = 0.0


def parse_dataflow_metrics(texts: Iterable[str]) -> IngestSample:
    """Sum the exposition texts of every dataflow process into one sample."""
    out = IngestSample()
    for text in texts:
        out.endpoints += 1
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == "streamfeat_events_in_total":
                    out.events_in += s.value
                elif s.name == "streamfeat_rows_applied_total":
                    view = s.labels.get("view", "")
                    out.rows_applied[view] = out.rows_applied.get(view, 0.0) + s.value
                elif s.name == "streamfeat_dead_letters_total":
                    reason = s.labels.get("reason", "")
                    out.dead_letters[reason] = out.dead_letters.get(reason, 0.0) + s.value
                elif s.name == "streamfeat_consumer_lag_records":
                    key = f"{s.labels.get('topic', '')}/{s.labels.get('partition', '')}"
                    out.lag[key] = s.value
                elif s.name == "streamfeat_state_bytes":
                    out.state_bytes += s.value
    return out


async def scrape_dataflow(port: int) -> IngestSample:
    """Scrape ``127.0.0.1:port``, ``port + 1``, ... until one does not answer."""
    texts: list[str] = []
    if port <= 0:
        return IngestSample()
    async with httpx.AsyncClient(timeout=SCRAPE_TIMEOUT_S) as client:
        for p in range(port, port + MAX_METRICS_ENDPOINTS):
            try:
                reply = await client.get(f"http://127.0.0.1:{p}/metrics")
            except httpx.HTTPError:
                break
            if reply.status_code != 200 or "streamfeat_events_in" not in reply.text:
                break  # something else listens there
            texts.append(reply.text)
    return parse_dataflow_metrics(texts)


def histogram_quantiles(buckets: dict[float, float], quantiles: Iterable[float]) -> dict[float, float | None]:
    """Quantiles from cumulative bucket counts (upper bound -> count), interpolated linearly
    inside the bucket, the way Prometheus' histogram_quantile does."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0.0
    out: dict[float, float | None] = {}
    for q in quantiles:
        if total <= 0:
            out[q] = None
            continue
        rank = q * total
        lower, below = 0.0, 0.0
        for bound in bounds:
            count = buckets[bound]
            if count >= rank:
                if math.isinf(bound):
                    out[q] = lower  # beyond the last finite bucket: its bound is all we know
                else:
                    width = count - below
                    out[q] = lower + (bound - lower) * ((rank - below) / width if width else 1.0)
                break
            lower, below = bound, count
    return out


def serving_latency(registry: CollectorRegistry) -> dict[str, float | None]:
    """p50/p90/p99 (ms) and request count of the feature routes since the app started."""
    buckets: dict[float, float] = {}
    for family in registry.collect():
        if family.name != "streamfeat_request_duration_seconds":
            continue
        for s in family.samples:
            if s.name.endswith("_bucket"):
                bound = float(s.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + s.value
    q = histogram_quantiles(buckets, (0.5, 0.9, 0.99))
    count = buckets.get(math.inf, 0.0)

    def ms(v: float | None) -> float | None:
        return None if v is None else v * 1000.0

    return {"requests": count, "p50_ms": ms(q[0.5]), "p90_ms": ms(q[0.9]), "p99_ms": ms(q[0.99])}


# Any: polars' iter_rows(named=True) rows are typed dict[str, Any] (float, int, str, None by column)
def quality_rows(log_root: str, view: str) -> list[dict[str, Any]]:
    table = read_quality(log_root, view)
    # Any: polars' iter_rows(named=True) rows are typed dict[str, Any] (float, int, str, None by column)
    rows: list[dict[str, Any]] = []
    for row in table.iter_rows(named=True):
        rows.append({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})
    return rows


# Any: polars' iter_rows(named=True) rows are typed dict[str, Any] (float, int, str, None by column)
def quality_series(rows: list[dict[str, Any]]) -> dict[str, list[list[object]]]:
    """Per numeric column: ``[interval_start, mean, p50, p99, alert]`` points for the
    dashboard (a string column has none of these; its rows stay in /v1/quality)."""
    series: dict[str, list[list[object]]] = {}
    for r in rows:
        if r.get("kind") == STRING:
            continue
        series.setdefault(r["feature"], []).append(
            [r["interval_start"], r["mean"], r["p50"], r["p99"], bool(r["alert"])]
        )
    return series


def build_router(log_root: str, metrics_port: int, cluster: ClusterWatch | None = None) -> APIRouter:
    """``cluster``: the durable shards to show per host and shard (serving/ops_cluster.py)."""
    router = APIRouter()
    cluster_reader = ClusterReader(cluster)
    history: deque[JSONObject] = deque(maxlen=HISTORY_LENGTH)
    previous: dict[str, float] = {}
    # Any: polars' iter_rows(named=True) rows are typed dict[str, Any] (float, int, str, None by column)
    quality_cache: dict[str, tuple[float, list[dict[str, Any]]]] = {}
    lock = asyncio.Lock()

    # Any: polars' iter_rows(named=True) rows are typed dict[str, Any] (float, int, str, None by column)
    def cached_quality(view: str) -> list[dict[str, Any]]:
        now = time.monotonic()
        hit = quality_cache.get(view)
        if hit is not None and now - hit[0] < QUALITY_CACHE_S:
            return hit[1]
        try:
            rows = quality_rows(log_root, view)
        except QualityError:
            rows = []
        quality_cache[view] = (now, rows)
        return rows

    @router.get(
        "/v1/quality/{view}", summary="Data-quality table of a view (per interval and column)", response_class=Response
    )
    async def quality(request: Request, view: str) -> Response:
        registry = get_state(request).registry
        if view not in registry.views:
            raise ViewNotFound(
                f"view '{view}' is not served (views: {', '.join(sorted(registry.views))})",
                hint="GET /v1/ops/summary lists the views",
            )
        rows = await asyncio.to_thread(quality_rows, log_root, view)
        return json_response({"view": view, "rows": rows})

    @router.get("/v1/ops/summary", summary="Everything the dashboard shows, in one document", response_class=Response)
    async def summary(request: Request) -> Response:
        state = get_state(request)
        now_ms = wall_clock_ms()
        views = []
        for name, view in sorted(state.registry.views.items()):
            fresh = state.online.freshness(view)
            lag_ms = fresh.lag_ms(now_ms)
            lag_s = None if lag_ms is None else lag_ms / 1000.0
            expected_s = view.expected_freshness_ms / 1000.0
            views.append(
                {
                    "name": name,
                    "newest_event_ms": fresh.max_event_ts_ms,
                    "written_at_ms": fresh.written_at_ms,
                    "freshness_lag_s": lag_s,
                    "expected_freshness_s": expected_s,
                    "stale": fresh.is_stale(now_ms, view.expected_freshness_ms),
                }
            )
        ingest = await scrape_dataflow(metrics_port)
        latency = serving_latency(state.metrics.registry)
        async with lock:
            t = time.monotonic()
            events_per_s: float | None = None
            if ingest.endpoints and "t" in previous and ingest.events_in >= previous["events_in"]:
                dt = t - previous["t"]
                events_per_s = (ingest.events_in - previous["events_in"]) / dt if dt > 0 else None
            if ingest.endpoints:
                previous.update(t=t, events_in=ingest.events_in)
            history.append(
                {
                    "t_ms": now_ms,
                    "events_per_s": events_per_s,
                    "events_in": ingest.events_in if ingest.endpoints else None,
                    "p50_ms": latency["p50_ms"],
                    "p99_ms": latency["p99_ms"],
                }
            )
            points = list(history)
        quality_by_view = {}
        for name in sorted(state.registry.views):
            rows = await asyncio.to_thread(cached_quality, name)
            quality_by_view[name] = {
                "series": quality_series(rows),
                "alerts": sum(1 for r in rows if r["alert"]),
            }
        return json_response(
            {
                "now_ms": now_ms,
                "views": views,
                "ingest": {
                    "endpoints": ingest.endpoints,
                    "events_in": ingest.events_in,
                    "events_per_s": events_per_s,
                    "rows_applied": ingest.rows_applied,
                    "consumer_lag": ingest.lag,
                    "state_bytes": ingest.state_bytes,
                },
                "dead_letters": ingest.dead_letters,
                "serving": latency,
                "history": points,
                "quality": quality_by_view,
                "cluster": await cluster_reader.read(),
            }
        )

    @router.get("/ui", include_in_schema=False, response_class=Response)
    async def ui_index() -> Response:
        return _ui_file("index.html")

    @router.get("/ui/{name}", include_in_schema=False, response_class=Response)
    async def ui_file(name: str) -> Response:
        return _ui_file(name)

    return router


def _ui_file(name: str) -> Response:
    media = UI_FILES.get(name)
    if media is None:  # only the known files: no path from the request reaches the disk
        raise NotFound(f"no dashboard file {name!r}", hint=f"files: {', '.join(sorted(UI_FILES))}")
    return Response((UI_DIR / name).read_bytes(), media_type=media, headers={"Cache-Control": "no-cache"})
