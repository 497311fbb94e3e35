"""Data quality over a real Parquet log: statistics equal numpy's, drift fires on a shift."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from engine.io.parquet_log import ParquetLogWriter
from engine.quality import (
    MIN_BASELINE_POINTS,
    QualityConfig,
    QualityError,
    compute_quality,
    read_quality,
    run_quality,
)

HOUR = 3_600_000
T0 = 1_780_000_000_000 // HOUR * HOUR
ROWS_PER_HOUR = 400
HOURS = 12
SHIFTED_HOUR = 11


def _write_log(root: Path, seed: int) -> dict[int, np.ndarray]:
    """Hourly amounts ~ N(50, 5), the last hour shifted to N(80, 5); published twice in part
    (replays), which the reader must deduplicate."""
    rng = np.random.default_rng(seed)
    by_hour: dict[int, np.ndarray] = {}
    writer = ParquetLogWriter(str(root), "user_spend", "00ff", ["user_id"], ["amount"], "s000")
    offset = 0
    for h in range(HOURS):
        mean = 80.0 if h == SHIFTED_HOUR else 50.0
        values = rng.normal(mean, 5.0, ROWS_PER_HOUR)
        ts = T0 + h * HOUR + rng.integers(0, HOUR, ROWS_PER_HOUR)
        offsets = np.arange(offset, offset + ROWS_PER_HOUR, dtype=np.int64)
        offset += ROWS_PER_HOUR
        rows = {
            "user_id": np.array([f"u{i % 17}" for i in range(ROWS_PER_HOUR)], dtype=object),
            "event_time": ts.astype(np.int64),
            "partition": np.zeros(ROWS_PER_HOUR, dtype=np.int32),
            "offset": offsets,
            "tile_start": (ts // 60_000 * 60_000).astype(np.int64),
            "value__amount": values,
        }
        writer.append(rows)
        if h == 3:  # the same rows again, as after a crash between publish and offset commit
            writer.append(rows)
        by_hour[T0 + h * HOUR] = values
        writer.publish()
    return by_hour


def test_statistics_equal_numpy_and_drift_fires_on_the_shift(tmp_path: Path) -> None:
    expected = _write_log(tmp_path / "log", seed=7)
    table = compute_quality(str(tmp_path / "log"), "user_spend")
    assert table.height == HOURS
    for row in table.iter_rows(named=True):
        values = expected[row["interval_start"]]
        assert row["feature"] == "amount"
        assert row["count"] == len(values)  # replayed rows counted once
        assert row["null_rate"] == 0.0
        np.testing.assert_allclose(row["mean"], values.mean(), rtol=1e-12)
        np.testing.assert_allclose(row["std"], values.std(), rtol=1e-9)
        assert row["min"] == values.min() and row["max"] == values.max()
        for name, q in (("p1", 1), ("p50", 50), ("p99", 99)):
            np.testing.assert_allclose(row[name], np.percentile(values, q), rtol=1e-12)
    alerts = {r["interval_start"]: r for r in table.iter_rows(named=True)}
    shifted = alerts[T0 + SHIFTED_HOUR * HOUR]
    assert shifted["alert"] is True
    assert {"mean", "p50", "p1", "p99", "min"} <= set(shifted["drifted"].split(","))
    # Hours before the shift never see a mean outside 3 sigma of their baseline.
    for h in range(SHIFTED_HOUR):
        assert "mean" not in alerts[T0 + h * HOUR]["drifted"].split(","), h
    # Too little baseline (fewer than MIN_BASELINE_POINTS hours): no alert at all.
    for h in range(MIN_BASELINE_POINTS):
        assert alerts[T0 + h * HOUR]["alert"] is False


def test_side_table_round_trip_and_a_shorter_baseline(tmp_path: Path) -> None:
    root = str(tmp_path / "log")
    _write_log(tmp_path / "log", seed=3)
    assert read_quality(root, "user_spend").is_empty()
    short = QualityConfig(baseline=timedelta(hours=4), min_baseline_points=3)
    written = run_quality(root, ["user_spend"], short)
    path = tmp_path / "log" / "_quality" / "view=user_spend" / "quality.parquet"
    assert path.is_file()
    back = read_quality(root, "user_spend")
    assert back.equals(written["user_spend"])
    shifted = back["interval_start"] == T0 + SHIFTED_HOUR * HOUR
    assert bool(back.filter(shifted)["alert"][0])
    # Four hours hold fewer baseline points than the default minimum: no verdict at all.
    strict = compute_quality(root, "user_spend", QualityConfig(baseline=timedelta(hours=4)))
    assert not strict["alert"].any()


def test_config_is_validated() -> None:
    with pytest.raises(QualityError, match="field 'baseline'"):
        QualityConfig(interval=timedelta(hours=2), baseline=timedelta(hours=1))
    with pytest.raises(QualityError, match="field 'interval'"):
        QualityConfig(interval=timedelta(milliseconds=10))
