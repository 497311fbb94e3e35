"""Training-set throughput: streamfeat's vectorized evaluation vs a plain polars baseline.

Both compute sum / count / mean over a 1-hour window (1-minute tiles) for every spine
row, per docs/semantics.md section 3, from the same event-level log. The baseline
uses per-entity cumulative sums and two ``join_asof`` lookups; it is checked
against streamfeat's output in the same run.

    .venv/bin/python -m benchmarks.bench_training [size [entities]]

Each side runs in a child process of its own, so each peak RSS (VmHWM) is its own.
"""

from __future__ import annotations

import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from benchmarks.common import PY, emit, own_peak_rss_kb, run_child
from engine.definitions import (
    Aggregation,
    Entity,
    EventSource,
    FeatureRepo,
    FeatureService,
    StreamFeatureView,
)
from engine.io.log_reader import read_log
from engine.io.parquet_log import ParquetLogWriter
from engine.offline.training import get_training_set

G = 60_000
W = 3_600_000
T0 = 1_710_000_000_000 // G * G


def _repo() -> tuple[FeatureRepo, StreamFeatureView]:
    user = Entity("user", ["user_id"])
    src = EventSource("txns", "txns", "ts", {"user_id": str, "amount": float})
    aggs = [Aggregation("amount", f, timedelta(hours=1)) for f in ("sum", "count", "mean")]
    view = StreamFeatureView("bench_spend", src, [user], aggs)
    return FeatureRepo.from_objects([view, FeatureService("bench", [view])]), view


def _baseline(log: pl.DataFrame, spine: pl.DataFrame) -> pl.DataFrame:
    """Plain polars: per-entity prefix sums looked up with two backward as-of joins."""
    right = log.select(
        "user_id",
        "event_time",
        pl.col("value__amount").cum_sum().over("user_id").alias("cs"),
        pl.int_range(1, pl.len() + 1).over("user_id").alias("cc"),
    ).sort("event_time")
    left = spine.with_row_index("row").with_columns(
        ((pl.col("event_timestamp") // G) * G - W - 1).alias("before_start")
    )
    hi = left.sort("event_timestamp").join_asof(
        right,
        left_on="event_timestamp",
        right_on="event_time",
        by="user_id",
        check_sortedness=False,
    )
    lo = left.sort("before_start").join_asof(
        right, left_on="before_start", right_on="event_time", by="user_id", check_sortedness=False
    )
    both = hi.select("row", "cs", "cc").join(
        lo.select("row", pl.col("cs").alias("cs0"), pl.col("cc").alias("cc0")), on="row"
    )
    return (
        both.sort("row")
        .select(
            (pl.col("cs").fill_null(0.0) - pl.col("cs0").fill_null(0.0)).alias("sum"),
            (pl.col("cc").fill_null(0) - pl.col("cc0").fill_null(0)).alias("count"),
        )
        .with_columns(pl.when(pl.col("count") > 0).then(pl.col("sum") / pl.col("count")).alias("mean"))
    )


def _write_inputs(root: str, size: int, n_users: int) -> None:
    """The log (``size`` rows over ``n_users`` users, one week) and a spine of ``size`` rows."""
    _, view = _repo()
    rng = np.random.default_rng(42)
    span = 7 * 86_400_000
    t = T0 + rng.integers(0, span, size)
    w = ParquetLogWriter(root, view.name, view.fingerprint_hex, view.join_keys, view.columns, "bench")
    w.append(
        {
            "user_id": np.char.add("u", rng.integers(0, n_users, size).astype(str)),
            "event_time": t,
            "partition": np.zeros(size, dtype=np.int32),
            "offset": np.arange(size, dtype=np.int64),
            "tile_start": t // G * G,
            "value__amount": np.round(rng.exponential(50.0, size), 2),
        }
    )
    w.publish()
    spine = pl.DataFrame(
        {
            "user_id": np.char.add("u", rng.integers(0, n_users, size).astype(str)),
            "event_timestamp": T0 + rng.integers(-W, span + W, size),
        }
    )
    spine.write_parquet(Path(root) / "spine.parquet")


def _child(side: str, root: str) -> dict[str, Any]:
    """One side, timed, in this (child) process; writes its values, reports its peak RSS."""
    repo, view = _repo()
    spine = pl.read_parquet(Path(root) / "spine.parquet")
    start = time.perf_counter()
    if side == "ours":
        out = get_training_set(repo, "bench", spine, root).select(
            pl.col("amount_sum_1h").alias("sum"), pl.col("amount_count_1h").alias("count")
        )
        seconds, read_s = time.perf_counter() - start, 0.0
    else:
        log = read_log(root, view.name, view.fingerprint_hex)
        read_s = time.perf_counter() - start
        out = _baseline(log, spine).select("sum", "count")
        seconds = time.perf_counter() - start
    out.write_parquet(Path(root) / f"{side}.parquet")
    return {"seconds": seconds, "read_seconds": read_s, "peak_rss_mb": round(own_peak_rss_kb() / 1024)}


def run(size: int = 1_000_000, entities: int | None = None) -> dict[str, Any]:
    """Measure with ``size`` log rows and ``size`` spine rows over ``entities`` users
    (default ``size // 100``); each side runs in a child process of its own."""
    n_users = entities or max(size // 100, 1)
    with tempfile.TemporaryDirectory() as root:
        _write_inputs(root, size, n_users)
        ours = run_child([PY, "-m", "benchmarks.bench_training", "--child", "ours", root], timeout=3600)
        base = run_child([PY, "-m", "benchmarks.bench_training", "--child", "polars", root], timeout=3600)
        mine = pl.read_parquet(Path(root) / "ours.parquet")
        theirs = pl.read_parquet(Path(root) / "polars.parquet")
    counts_equal = mine["count"].to_list() == theirs["count"].to_list()
    sums_close = bool(np.allclose(mine["sum"].to_numpy(), theirs["sum"].to_numpy(), rtol=1e-9, atol=1e-6))
    base_s, read_s = base["seconds"] - base["read_seconds"], base["read_seconds"]
    return {
        "log_rows": size,
        "spine_rows": size,
        "entities": n_users,
        "streamfeat_s_incl_log_read": round(ours["seconds"], 3),
        "streamfeat_rows_per_s": round(size / ours["seconds"]),
        "streamfeat_peak_rss_mb": ours["peak_rss_mb"],
        "log_read_s": round(read_s, 3),
        "polars_asof_baseline_s_excl_log_read": round(base_s, 3),
        "polars_asof_rows_per_s_incl_log_read": round(size / (base_s + read_s)),
        "polars_peak_rss_mb": base["peak_rss_mb"],
        "baseline_counts_equal": counts_equal,
        "baseline_sums_close": sums_close,
    }


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        emit(_child(sys.argv[2], sys.argv[3]))
    else:
        n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
        users = int(sys.argv[2]) if len(sys.argv) > 2 else None
        for key, value in run(n, users).items():
            print(f"{key}: {value}")
