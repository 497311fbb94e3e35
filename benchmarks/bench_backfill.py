"""Backfill throughput: Parquet history -> route + ShardApplier (RocksDB tiles + Parquet log),
side by side with a plain polars group_by of the same aggregates (no state, no log).

    .venv/bin/python -m benchmarks.bench_backfill 10000000   # 10M events, 100k users

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

from engine.definitions import load_repo
from engine.generate import GeneratorConfig, write_parquet
from engine.offline.backfill import (
    DEFAULT_CHUNK_ROWS,
    BackfillTarget,
    backfill_parquet,
)
from engine.offline.history_files import resolve_history_files

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


def config_for(size: int) -> GeneratorConfig:
    """``size`` events over ``size // 100`` users (10M events: the issue's 100k users)."""
    return GeneratorConfig(
        events=size, users=max(size // 100, 1), merchants=1_000, seed=1, start_ms=1_780_000_000_000, rate=200.0
    )


def generate_history(size: int, directory: Path) -> Path:
    """Write the history of ``config_for(size)`` under ``directory`` (not timed)."""
    write_parquet(config_for(size), directory)
    return directory


def run(
    size: int, chunk_rows: int = DEFAULT_CHUNK_ROWS, shards: int = 8, history: Path | None = None
) -> dict[str, Any]:
    """One timed backfill of ``size`` events; ``history`` reuses files of ``generate_history``."""
    repo = load_repo(REPO)
    source = repo.source("transactions")
    views = [v for v in repo.views if v.source.name == "transactions"]
    work = Path(tempfile.mkdtemp(prefix="bench_backfill_"))
    try:
        config = config_for(size)
        if history is None:
            history = generate_history(size, work / "history")
        files = resolve_history_files([str(history)])
        target = BackfillTarget(work / "state", shards, str(work / "log"))
        report = backfill_parquet(target, source, views, files, 0, 2**53, chunk_rows=chunk_rows)
        polars_s = _polars_same_aggregates(files, views[0].interval_ms)
        return {
            "events": size,
            "users": config.users,
            "chunk_rows": chunk_rows,
            "shards": shards,
            "backfill_seconds": round(report.seconds, 2),
            "backfill_events_per_s": round(report.events_per_second),
            "polars_group_by_seconds": round(polars_s, 2),
            "polars_events_per_s": round(size / polars_s),
            "applied_per_view": dict(report.applied_per_view),
            "views": list(report.views),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    print(run(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000))
