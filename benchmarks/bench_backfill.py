"""Backfill throughput and peak memory: Parquet history -> route + ShardApplier (RocksDB
tiles + Parquet log), side by side with a plain polars group_by of the same aggregates (no
state, no log). Each side runs in a child process of its own, so each peak RSS (VmHWM) is
that side's alone.

    .venv/bin/python -m benchmarks.bench_backfill 10000000           # 10M events, 100k users
    .venv/bin/python -m benchmarks.bench_backfill 5000000 1000000    # 5M events, 1M users

``run(size)`` returns a dict; the polars figure is a floor for "just compute the numbers",
not an equivalent workload (it writes no tiles, no offsets and no log).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import polars as pl

from benchmarks.common import PY, emit, own_peak_rss_kb, run_child
from engine.definitions import load_repo
from engine.generate import GeneratorConfig, write_parquet
from engine.offline.backfill import (
    DEFAULT_CHUNK_ROWS,
    BackfillTarget,
    backfill_parquet,
)
from engine.offline.history_files import resolve_history_files
from engine.state.rocksdb_store import RocksDBStore

REPO = Path(__file__).resolve().parents[1] / "feature_defs"


def _polars_same_aggregates(files: list[str], interval_ms: int) -> float:
    """Per (user, minute tile) and (merchant, tile) partials of the purchase rows."""
    started = time.perf_counter()
    frame = pl.scan_parquet(files).filter(pl.col("event_type") == "PURCHASE")
    tile = (pl.col("ts") // interval_ms).alias("tile")
    frame.group_by("user_id", tile).agg(
        pl.len(),
        pl.col("amount").sum().alias("sum"),
        pl.col("amount").max().alias("max"),
        pl.col("amount").var(ddof=0).alias("var"),
    ).collect()
    frame.group_by("merchant_id", tile).agg(pl.len(), pl.col("amount").sum().alias("sum")).collect()
    return time.perf_counter() - started


def config_for(size: int, users: int | None = None) -> GeneratorConfig:
    """``size`` events over ``users`` users (default ``size // 100``: 10M events, the issue's 100k)."""
    return GeneratorConfig(
        events=size,
        users=users or max(size // 100, 1),
        merchants=1_000,
        seed=1,
        start_ms=1_780_000_000_000,
        rate=200.0,
    )


def generate_history(size: int, directory: Path, users: int | None = None) -> Path:
    """Write the history of ``config_for(size, users)`` under ``directory`` (not timed)."""
    write_parquet(config_for(size, users), directory)
    return directory


def _views() -> tuple[Any, list[Any]]:
    repo = load_repo(REPO)
    return repo.source("transactions"), [v for v in repo.views if v.source.name == "transactions"]


def _child(side: str, history: str, work: str, chunk_rows: int, shards: int) -> dict[str, Any]:
    """One side, timed, in this (child) process; reports its own peak RSS."""
    source, views = _views()
    files = resolve_history_files([history])
    cpu_started = time.process_time()
    if side == "polars":
        seconds = _polars_same_aggregates(files, views[0].interval_ms)
        return {
            "seconds": seconds,
            "cpu_seconds": time.process_time() - cpu_started,
            "peak_rss_mb": round(own_peak_rss_kb() / 1024),
        }
    target = BackfillTarget(Path(work) / "state", shards, str(Path(work) / "log"))
    report = backfill_parquet(target, source, views, files, 0, 2**53, chunk_rows=chunk_rows)
    return {
        "seconds": report.seconds,
        # CPU time of the process: on a shared machine it moves less than wall time.
        "cpu_seconds": time.process_time() - cpu_started,
        "records_written": report.records_written,
        "peak_rss_mb": round(own_peak_rss_kb() / 1024),
        "applied_per_view": dict(report.applied_per_view),
        "views": list(report.views),
        "state_users": _users_in_state(Path(work) / "state", shards, views),
    }


def _users_in_state(state_dir: Path, shards: int, views: list[Any]) -> int:
    """Entities of the per-user view in the state (the figure "1M users" is about)."""
    view = next(v for v in views if v.name == "user_spend")
    store = RocksDBStore(state_dir, shards)
    try:
        return sum(sum(1 for _ in part.iter_view(view.fingerprint)) for part in store.partitions)
    finally:
        store.close()


def run(
    size: int,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    shards: int = 8,
    history: Path | None = None,
    users: int | None = None,
) -> dict[str, Any]:
    """One timed backfill of ``size`` events and its polars baseline, each in a child;
    ``history`` reuses files of ``generate_history``."""
    work = Path(tempfile.mkdtemp(prefix="bench_backfill_"))
    try:
        config = config_for(size, users)
        if history is None:
            history = generate_history(size, work / "history", users)
        args = [str(history), str(work / "out"), str(chunk_rows), str(shards)]
        ours = run_child([PY, "-m", "benchmarks.bench_backfill", "--child", "ours", *args], timeout=3600)
        polars = run_child([PY, "-m", "benchmarks.bench_backfill", "--child", "polars", *args], timeout=3600)
        return {
            "events": size,
            "users": config.users,
            "users_in_state": ours["state_users"],
            "chunk_rows": chunk_rows,
            "shards": shards,
            "backfill_seconds": round(ours["seconds"], 2),
            "backfill_events_per_s": round(size / ours["seconds"]),
            "backfill_cpu_seconds": round(ours["cpu_seconds"], 2),
            "backfill_records_written": ours["records_written"],
            "backfill_peak_rss_mb": ours["peak_rss_mb"],
            "polars_group_by_seconds": round(polars["seconds"], 2),
            "polars_events_per_s": round(size / polars["seconds"]),
            "polars_cpu_seconds": round(polars["cpu_seconds"], 2),
            "polars_peak_rss_mb": polars["peak_rss_mb"],
            "ours_over_polars": round(polars["seconds"] / ours["seconds"], 3),
            "applied_per_view": ours["applied_per_view"],
            "views": ours["views"],
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        side, hist, out, chunk, n_shards = sys.argv[2:7]
        emit(_child(side, hist, out, int(chunk), int(n_shards)))
    else:
        n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
        print(run(n, users=int(sys.argv[2]) if len(sys.argv) > 2 else None))
