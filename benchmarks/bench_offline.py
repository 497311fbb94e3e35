"""Backfill and training-set benchmarks repeated for medians: wraps bench_backfill.run and
bench_training.run (each already measures a plain polars baseline in the same run)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from benchmarks import bench_backfill, bench_training
from benchmarks.common import check_size, summarize

# (rows, runs). Backfill "full" is issue #5's 10,000,000 events over 100,000 users
# (bench_backfill uses rows // 100 users); training "full" is 1,000,000 spine rows.
BACKFILL_SIZES: dict[str, tuple[int, int]] = {
    "smoke": (20_000, 3),
    "small": (200_000, 3),
    "full": (10_000_000, 3),
}
SIZES: dict[str, tuple[int, int]] = {"smoke": (20_000, 3), "small": (200_000, 3), "full": (1_000_000, 3)}


def _size(size: str, sizes: dict[str, tuple[int, int]] = SIZES) -> tuple[int, int]:
    check_size("bench_offline", sizes, size)
    return sizes[size]


def run_backfill(size: str) -> dict[str, Any]:
    rows, runs = _size(size, BACKFILL_SIZES)
    # The history is generated once (10M events take about a minute) and replayed by every run.
    work = Path(tempfile.mkdtemp(prefix="bench_offline_"))
    try:
        history = bench_backfill.generate_history(rows, work / "history")
        out = [bench_backfill.run(rows, history=history) for _ in range(runs)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ours = summarize([r["backfill_events_per_s"] for r in out])
    polars = summarize([r["polars_events_per_s"] for r in out])
    return {
        "benchmark": "backfill",
        "size": size,
        "rows": rows,
        "ours": ours,
        "polars": polars,
        "ratio_ours_over_polars": round(float(ours["median"]) / float(polars["median"]), 3),
        "peak_rss_mb": {
            "ours": summarize([r["backfill_peak_rss_mb"] for r in out]),
            "polars": summarize([r["polars_peak_rss_mb"] for r in out]),
        },
        "note": "The polars figure writes no tiles, offsets or log: a floor, not an equivalent workload.",
        "runs": out,
    }


def run_training(size: str) -> dict[str, Any]:
    rows, runs = _size(size)
    out = [bench_training.run(rows) for _ in range(runs)]
    if not all(r["baseline_counts_equal"] and r["baseline_sums_close"] for r in out):
        raise RuntimeError("bench_training: streamfeat and the polars baseline disagree; numbers not comparable")
    ours = summarize([r["streamfeat_rows_per_s"] for r in out])
    polars = summarize([r["polars_asof_rows_per_s_incl_log_read"] for r in out])
    return {
        "benchmark": "training",
        "size": size,
        "rows": rows,
        "ours": ours,
        "polars": polars,
        "ratio_ours_over_polars": round(float(ours["median"]) / float(polars["median"]), 3),
        "peak_rss_mb": {
            "ours": summarize([r["streamfeat_peak_rss_mb"] for r in out]),
            "polars": summarize([r["polars_peak_rss_mb"] for r in out]),
        },
        "note": "Both outputs are compared in every run (counts equal, sums close).",
        "runs": out,
    }
