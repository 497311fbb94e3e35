"""Test helpers: deterministic events, tile records built with the kernel, written to
RocksDB shards or Redis the way the ingest sink lays them out (tile and meta records)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import redis
import uvicorn
from fastapi import FastAPI

from engine.config import Settings
from engine.definitions import (
    Aggregation,
    FeatureRepo,
    FeatureService,
    OnDemandFeatureView,
    StreamFeatureView,
    col,
    load_repo,
)
from engine.definitions.base import FieldType
from engine.io.log_format import raw_column, value_column
from engine.io.parquet_log import ParquetLogWriter
from engine.kernel import PartialLayout, aggregate_batch, encode_positions, encode_tiles
from engine.kernel.aggregate import aggregate_sketches
from engine.plan import AppliedPlan
from engine.ports import free_port
from engine.retention import sweep_view
from engine.state import (
    OffsetRecord,
    OnlineTable,
    RedisOnlineWriter,
    RocksDBOnlineTable,
    RocksDBStore,
)
from engine.state.keys import entity_key, shard_for
from engine.state.records import encode_meta, meta_key, redis_meta_key, tile_key
from serving.app import create_app
from tests.serving.asgi_support import ASGIClient

REPO_DIR = Path(__file__).resolve().parents[2] / "feature_defs"
T_END = 1_767_225_600_000 + 37_123  # just after the last event; not on a tile boundary
USERS = ("u0", "u1", "u2", "u3", "u4")
MERCHANTS = ("m0", "m1", "m2")
N_SHARDS = 4
# Views whose ingest metadata (freshness) is written; user_defaults has none (unknown freshness).
META_VIEWS = ("user_spend", "merchant_activity", "user_merchant_spend")


def make_events(n: int = 400, seed: int = 7) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    span = 26 * 3_600_000
    times = np.sort(rng.integers(T_END - span, T_END - 1_000, size=n))
    events = []
    for i, ts in enumerate(times.tolist()):
        events.append(
            {
                "transaction_id": f"t{i}",
                "user_id": USERS[int(rng.integers(len(USERS)))],
                "merchant_id": MERCHANTS[int(rng.integers(len(MERCHANTS)))],
                "card_id": f"c{i % 7}",  # not drawn from rng: the other fields stay as they were
                "amount": round(float(rng.uniform(1, 500)), 2),
                "event_type": "PURCHASE" if rng.random() < 0.8 else "REFUND",
                "ts": int(ts),
                "partition": 0,
                "offset": i,
            }
        )
    # The last 20 minutes belong to u0 only, so u0's 15-minute window is non-empty at T_END.
    events.append(
        {
            "transaction_id": "last",
            "user_id": "u0",
            "merchant_id": "m0",
            "card_id": "c0",
            "amount": 10.0,
            "event_type": "PURCHASE",
            "ts": T_END - 2_000,
            "partition": 0,
            "offset": n,
        }
    )
    return events


def example_repo() -> FeatureRepo:
    return load_repo(REPO_DIR)


def build_test_repo(base: FeatureRepo) -> FeatureRepo:
    """The example repo plus a view with defaults and a transform that can raise."""
    user_spend = base.view("user_spend")
    request = next(r for r in base.request_sources if r.name == "transaction_request")
    user_defaults = StreamFeatureView(
        name="user_defaults",
        source=user_spend.source,
        entities=user_spend.entities,
        filter=col("event_type") == "PURCHASE",
        aggregations=[
            Aggregation("amount", "max", timedelta(minutes=15), name="amount_max_15m_or_default", default=-1.0),
            Aggregation("amount", "count", timedelta(minutes=30), name="purchases_30m"),
        ],
    )
    flaky = OnDemandFeatureView(
        name="flaky",
        sources=[user_defaults, request],
        schema={"flaky_out": "float"},
        mode="python",
        fn="tests.serving.transforms_support:flaky",
    )
    service = FeatureService(name="with_defaults", features=[user_defaults, flaky])
    # One feature from each of two views: serving evaluates those two windows only.
    subset = FeatureService(
        name="user_subset",
        features=[base.view("merchant_activity")[["merchant_txn_count_1h"]], user_spend[["amount_max_1h"]]],
    )
    # "amount_sum_1h" in two views: the service returns user_spend's, its transform reads
    # merchant_amounts' (all transactions, not only purchases).
    merchant = base.view("merchant_activity").entities[0]
    merchant_amounts = StreamFeatureView(
        name="merchant_amounts",
        source=user_spend.source,
        entities=[merchant],
        aggregations=[Aggregation("amount", "sum", timedelta(hours=1))],
    )
    merchant_ratio = OnDemandFeatureView(
        name="merchant_ratio",
        sources=[merchant_amounts[["amount_sum_1h"]], request],
        schema={"merchant_ratio": "float"},
        mode="python",
        fn="tests.serving.transforms_support:merchant_ratio",
    )
    shadowed = FeatureService(name="shadowed", features=[user_spend[["amount_sum_1h"]], merchant_ratio])
    # In no service: served only to "view:feature" references (Feast route).
    unserved = StreamFeatureView(
        name="user_unserved",
        source=user_spend.source,
        entities=user_spend.entities,
        filter=col("event_type") == "PURCHASE",
        aggregations=[Aggregation("amount", "count", timedelta(hours=1), name="purchases_1h")],
    )
    # The example's lifetime view alone: as_of rows it refuses name its compacted horizon.
    lifetime = FeatureService(name="lifetime", features=[base.view("user_lifetime")])
    objects: list[object] = [
        *base.views,
        *base.on_demand_views,
        *base.services,
        user_defaults,
        flaky,
        service,
        subset,
        merchant_amounts,
        merchant_ratio,
        shadowed,
        unserved,
        lifetime,
    ]
    return FeatureRepo.from_objects(objects)


def passes(view: StreamFeatureView, events: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    if view.filter is None:
        return list(events)
    columns = {f: np.array([e[f] for e in events], dtype=object) for f in view.filter.fields()}
    mask = view.filter.evaluate(columns)
    return [e for e, keep in zip(events, mask.tolist(), strict=True) if keep]


def view_records(view: StreamFeatureView, events: Sequence[Mapping[str, Any]]) -> tuple[dict[bytes, bytes], int]:
    """Packed tile record per entity key, and the view's max event time."""
    rows = passes(view, events)
    layout = PartialLayout.for_view(view)
    keys = [entity_key([e[k] for k in view.join_keys]) for e in rows]
    codes_of: dict[bytes, int] = {}
    codes = np.array([codes_of.setdefault(k, len(codes_of)) for k in keys], dtype=np.int64)
    ts = np.array([e["ts"] for e in rows], dtype=np.int64)
    positions = encode_positions([e["partition"] for e in rows], [e["offset"] for e in rows])
    # A non-numeric column is only counted, timed, hashed or listed: its float partial needs no value.
    numeric = [view.column_types[c] in (FieldType.INT, FieldType.FLOAT) for c in layout.columns]
    values = np.array(
        [[float(e[c]) if num else 0.0 for c, num in zip(layout.columns, numeric, strict=True)] for e in rows],
        dtype=np.float64,
    ).reshape(len(rows), len(layout.columns))
    tiles = ts // view.interval_ms
    code_u, tiles_u, partials = aggregate_batch(layout, codes, tiles, ts, positions, values)
    raw = {c: np.array([e[c] for e in rows], dtype=object) for c in layout.sketch_columns}
    sketches = aggregate_sketches(layout, codes, tiles, ts, positions, raw)
    records: dict[bytes, bytes] = {}
    for key, code in codes_of.items():
        sel = code_u == code
        max_ts = int(ts[codes == code].max())
        records[key] = encode_tiles(tiles_u[sel], partials[sel], max_ts, sketches[sel])
    return records, int(ts.max())


def write_rocksdb(
    state_dir: Path, views: Iterable[StreamFeatureView], events: Sequence[Mapping[str, Any]], *, meta_for: Iterable[str]
) -> None:
    """Tile records of every view; meta records only for the views named in ``meta_for``."""
    store = RocksDBStore(state_dir, N_SHARDS)
    try:
        txs = [p.begin() for p in store.partitions]
        with_meta = set(meta_for)
        for view in views:
            records, max_ts = view_records(view, events)
            for key, record in records.items():
                txs[shard_for(view.fingerprint, key, N_SHARDS)].put(tile_key(view.fingerprint, key), record)
            if view.name in with_meta:
                for tx in txs:
                    tx.put(meta_key(view.fingerprint), encode_meta(max_ts, T_END))
        for tx in txs:
            tx.commit()
    finally:
        store.close()


def write_redis(
    url: str, views: Iterable[StreamFeatureView], events: Sequence[Mapping[str, Any]], *, meta_for: Iterable[str]
) -> None:
    writer = RedisOnlineWriter(url)
    client = redis.Redis.from_url(url)
    try:
        with_meta = set(meta_for)
        for view in views:
            records, max_ts = view_records(view, events)
            writer.write([(view.fingerprint, k, v) for k, v in records.items()], ttl_ms=None)
            if view.name in with_meta:
                writer.write_meta([(view.fingerprint, shard, encode_meta(max_ts, T_END)) for shard in range(N_SHARDS)])
            else:
                client.delete(redis_meta_key(view.fingerprint))
        # Every event is applied and in the Parquet log (write_log), as the ingest writer records it.
        newest = max(events, key=lambda e: e["offset"])
        published = OffsetRecord(newest["offset"], (newest["ts"],), newest["offset"], (newest["ts"],))
        for topic in {view.source.topic for view in views}:
            for shard in range(N_SHARDS):
                writer.write_offsets(topic, shard, {newest["partition"]: published})
                writer.mark_copied(topic, shard)  # the whole copy is here, as a dataflow marks it
    finally:
        writer.close()
        client.close()


def write_log(log_root: str, views: Iterable[StreamFeatureView], events: Sequence[Mapping[str, Any]]) -> None:
    """The Parquet log of every view, as the ingest sink publishes it (one file per date)."""
    for view in views:
        rows = passes(view, events)
        sketch_columns = PartialLayout.for_view(view).sketch_columns
        raw_types = {c: str(view.column_types[c]) for c in sketch_columns}
        writer = ParquetLogWriter(
            log_root, view.name, view.fingerprint_hex, view.join_keys, view.columns, "test", raw_columns=raw_types
        )
        ts = np.array([e["ts"] for e in rows], dtype=np.int64)
        numeric = {c: view.column_types[c] in (FieldType.INT, FieldType.FLOAT) for c in view.columns}
        writer.append(
            {
                **{k: [str(e[k]) for e in rows] for k in view.join_keys},
                "event_time": ts,
                "partition": np.array([e["partition"] for e in rows], dtype=np.int32),
                "offset": np.array([e["offset"] for e in rows], dtype=np.int64),
                "tile_start": ts // view.interval_ms * view.interval_ms,
                **{
                    value_column(c): np.array([float(e[c]) if numeric[c] else 0.0 for e in rows], dtype=np.float64)
                    for c in view.columns
                },
                **{raw_column(c): [e[c] for e in rows] for c in sketch_columns},
            }
        )
        writer.publish()


def sweep_all(state_dir: Path, views: Iterable[StreamFeatureView], shards: int) -> int:
    """Run the retention sweep over every shard and view until it wraps; records deleted."""
    deleted = 0
    with RocksDBStore(state_dir, shards) as store:
        for partition in store.partitions:
            for view in views:
                cursor: bytes | None = None
                while True:
                    compact_into = PartialLayout.for_view(view) if view.has_lifetime_window else None
                    result = sweep_view(
                        partition,
                        view.fingerprint,
                        view.retention_ms,
                        view.interval_ms,
                        compact_into=compact_into,
                        start_after=cursor,
                    )
                    deleted += result.deleted
                    cursor = result.next_key
                    if cursor is None:
                        break
    return deleted


@contextmanager
def uvicorn_server(app: Any) -> Iterator[str]:
    """``app`` served by uvicorn on a free loopback port (a thread); yields its URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start within 10 s")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def make_app(repo: FeatureRepo, plan: AppliedPlan, table: OnlineTable, **settings: Any) -> FastAPI:
    """The app over ``table`` with ``settings`` overriding the defaults."""
    return create_app(Settings(**settings), repo=repo, plan=plan, online_table=table)


@contextmanager
def rocksdb_client(
    root: Path,
    repo: FeatureRepo,
    plan: AppliedPlan,
    events: Sequence[Mapping[str, Any]],
    *,
    meta_for: Iterable[str],
    **settings: Any,
) -> Iterator[Any]:
    """An ASGI client of the app over RocksDB shards holding ``events``' tiles under ``root``."""
    write_rocksdb(root / "state", repo.views, events, meta_for=meta_for)
    with state_client(root / "state", root / "secondary", repo, plan, **settings) as client:
        yield client


@contextmanager
def state_client(
    state_dir: Path, secondary: Path, repo: FeatureRepo, plan: AppliedPlan, **settings: Any
) -> Iterator[ASGIClient]:
    """An ASGI client of the app over the RocksDB shards in ``state_dir`` as they are."""
    table = RocksDBOnlineTable(state_dir, N_SHARDS, secondary, background=False)
    client = ASGIClient(make_app(repo, plan, table, **settings))
    try:
        yield client
    finally:
        client.close()
        table.close()


@contextmanager
def rocksdb_server(
    root: Path, repo: FeatureRepo, plan: AppliedPlan, events: Sequence[Mapping[str, Any]]
) -> Iterator[str]:
    """The app over RocksDB shards and a Parquet log holding ``events`` (every view's freshness
    record) under ``root``, served by uvicorn on loopback; yields its URL."""
    write_log(str(root / "log"), repo.views, events)
    write_rocksdb(root / "state", repo.views, events, meta_for=[v.name for v in repo.views])
    table = RocksDBOnlineTable(root / "state", N_SHARDS, root / "secondary", background=False)
    try:
        with uvicorn_server(make_app(repo, plan, table, log_root=str(root / "log"))) as url:
            yield url
    finally:
        table.close()
