"""Shared set-up for backfill tests: history files, backfill runs, reading state and log."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from engine.definitions import StreamFeatureView
from engine.generate import PARQUET_SCHEMA
from engine.offline.backfill import BackfillReport, BackfillTarget, backfill_parquet
from engine.offline.history_batches import HISTORY_PARTITION
from engine.offline.training import get_training_set
from engine.state.online_rocksdb import RocksDBOnlineTable
from tests.engine.streaming_support import (
    EXAMPLE_VIEW_KEYS,
    assert_close,
    example_views,
    expected_values,
    online_values,
    reference_event,
)

START_MS = 1_780_000_000_000  # 2026-05-28: in the past, so nothing is "in the future"
SHARDS = 4


def random_events(
    rng: np.random.Generator, n: int, users: int, merchants: int, start_ms: int, span_ms: int
) -> list[dict[str, Any]]:
    """Events as the source schema has them, in arrival order (times jittered by < 60 s)."""
    base = start_ms + np.sort(rng.integers(0, span_ms, n))
    ts = base - rng.integers(0, 60_000, n)  # well inside allowed_lateness (5 min)
    kinds = rng.choice(["PURCHASE", "PURCHASE", "REFUND"], n)
    return [
        {
            "transaction_id": f"t{i}",
            "user_id": f"u{int(rng.integers(users))}",
            "merchant_id": f"m{int(rng.integers(merchants))}",
            "card_id": f"c{(i * 7919) % (3 * users)}",  # not drawn from rng: the other fields stay as they were
            "amount": float(np.round(rng.gamma(2.0, 30.0), 2)),
            "currency": "EUR",
            "event_type": str(kinds[i]),
            "ts": int(ts[i]),
        }
        for i in range(n)
    ]


def write_history(events: Sequence[dict[str, Any]], path: Path, row_group_size: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = {f.name: [e[f.name] for e in events] for f in PARQUET_SCHEMA}
    pq.write_table(pa.table(columns, schema=PARQUET_SCHEMA), path, row_group_size=row_group_size)
    return path


def history_reference(
    events: Sequence[dict[str, Any]],
    start_ms: int,
    end_ms: int,
    event: Callable[[dict[str, Any], int, int], dict[str, Any]] = reference_event,
) -> list[dict[str, Any]]:
    """Reference events of a history backfill: positions (HISTORY_PARTITION, sorted index);
    ``event(doc, partition, offset)`` makes one (default: an example transaction's)."""
    chosen = [e for e in events if start_ms <= e["ts"] < end_ms]
    order = sorted(range(len(chosen)), key=lambda i: chosen[i]["ts"])  # stable: file order
    return [event(chosen[i], HISTORY_PARTITION, offset) for offset, i in enumerate(order)]


def run_backfill(
    tmp: Path, files: Sequence[Path], start_ms: int, end_ms: int, topic: str = "transactions", **kw: Any
) -> BackfillReport:
    source, views = example_views(topic)
    target = BackfillTarget(tmp / "state", SHARDS, str(tmp / "log"))
    return backfill_parquet(target, source, views, [str(f) for f in files], start_ms, end_ms, **kw)


def views_by_name(topic: str = "transactions") -> dict[str, StreamFeatureView]:
    return {v.name: v for v in example_views(topic)[1]}


def read_entity_states(
    state_dir: Path,
    shards: int,
    secondary: Path,
    view_keys: Sequence[tuple[StreamFeatureView, str]],
    applied: Sequence[dict[str, Any]],
    times: Iterable[int],
) -> list[tuple[StreamFeatureView, str, Any, int, dict[str, Any] | None]]:
    """``(view, key_field, key, t, online values)`` of every key of ``applied`` (the reference
    event field ``key_field`` holding each view's key) as of each t; None: no state."""
    table = RocksDBOnlineTable(state_dir, shards, secondary, background=False)
    try:
        return [
            (view, key_field, key, t, online_values(table, view, key, t))
            for t in times
            for view, key_field in view_keys
            for key in sorted({e[key_field] for e in applied})
        ]
    finally:
        table.close()


def compare_state(
    state_dir: Path,
    shards: int,
    secondary: Path,
    applied: Sequence[dict[str, Any]],
    times: Iterable[int],
    topic: str = "transactions",
) -> int:
    """Every user/merchant/pair's state as of each t equals the reference; returns comparisons."""
    views = views_by_name(topic)
    view_keys = [(views[name], key_field) for name, key_field in EXAMPLE_VIEW_KEYS]
    compared = 0
    for view, key_field, key, t, got in read_entity_states(state_dir, shards, secondary, view_keys, applied, times):
        mine = [e for e in applied if e[key_field] == key]
        want = expected_values(view, mine, key, t, key_field=key_field)
        if got is None:
            assert not any(e["event_type"] == "PURCHASE" for e in mine), key
            continue
        assert_close(got, want, f"{view.name} {key} at {t}")
        compared += 1
    return compared


def compare_training_set(
    log_root: Path,
    applied: Sequence[dict[str, Any]],
    spine_rows: Sequence[tuple[str, str, int]],
    topic: str = "transactions",
) -> None:
    """get_training_set on the Parquet log equals the reference for every spine row."""
    frame = training_rows(log_root, spine_rows, topic)
    by_name = views_by_name(topic)
    for row, (user, merchant, t) in zip(frame.iter_rows(named=True), spine_rows, strict=True):
        keys: dict[str, str | tuple[str, ...]] = {"entity": user, "merchant": merchant, "pair": (user, merchant)}
        for name, key_field in EXAMPLE_VIEW_KEYS:
            key = keys[key_field]
            view = by_name[name]
            mine = [e for e in applied if e[key_field] == key]
            want = expected_values(view, mine, key, t, key_field=key_field)
            assert_close({n: row[n] for n in want}, want, f"training set {name} {key} at {t}")


def training_rows(
    log_root: Path, spine_rows: Sequence[tuple[str, str, int]], topic: str = "transactions"
) -> pl.DataFrame:
    """get_training_set of every example view's features on the Parquet log, one row per
    ``(user_id, merchant_id, t)`` of the spine, in spine order."""
    _source, views = example_views(topic)
    spine = pl.DataFrame(
        {
            "user_id": [u for u, _, _ in spine_rows],
            "merchant_id": [m for _, m, _ in spine_rows],
            "event_timestamp": pl.Series([t for _, _, t in spine_rows], dtype=pl.Int64).cast(pl.Datetime("ms", "UTC")),
        }
    )
    return get_training_set(_repo_for(views), "backfill_check", spine, str(log_root))


def _repo_for(views: Sequence[StreamFeatureView]) -> Any:
    from engine.definitions import FeatureRepo, FeatureService

    service = FeatureService(name="backfill_check", features=list(views))
    objects: list[object] = [views[0].source, *views, service]
    for view in views:
        objects.extend(e for e in view.entities if e not in objects)
    return FeatureRepo.from_objects(objects)


def check_history_backfill(
    tmp: Path,
    docs: Sequence[dict[str, Any]],
    t_end: int,
    spine_rows: Sequence[tuple[str, str, int]],
    topic: str,
) -> None:
    """A backfill of ``docs`` from one Parquet history file, up to ``t_end``: its state at
    ``t_end`` and the training set from its log equal the reference."""
    history = write_history(docs, tmp / "history" / "part-0.parquet")
    end = t_end + 1
    report = run_backfill(tmp / "bf", [history], START_MS - 1, end, topic=topic)
    assert report.complete and report.rows_total == len(docs), report
    replayed = history_reference(docs, START_MS - 1, end)
    assert compare_state(tmp / "bf" / "state", SHARDS, tmp / "secbf", replayed, [t_end], topic=topic)
    compare_training_set(tmp / "bf" / "log", replayed, spine_rows, topic=topic)
