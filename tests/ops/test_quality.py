"""Data quality over a real Parquet log: statistics equal numpy's, drift fires on a shift."""

from __future__ import annotations

from collections.abc import Sized
from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from cli import main as cli_main
from engine.definitions import FieldType, load_repo
from engine.io.parquet_log import ParquetLogWriter
from engine.kernel.window import tile_start_ms
from engine.quality import (
    MIN_BASELINE_POINTS,
    NUMERIC,
    STRING,
    QualityConfig,
    QualityError,
    compute_quality,
    read_quality,
    run_quality,
)
from serving.routes_ops import quality_rows, quality_series
from tests.engine.streaming_support import REPO

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
            "tile_start": tile_start_ms(ts, 60_000).astype(np.int64),
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


NUMERIC_STATISTICS = ("mean", "std", "min", "max", "p1", "p50", "p99")


def _write_string_log(
    root: Path, view: str, columns: list[str], raw: list[str], fingerprint_hex: str = "00ff"
) -> dict[int, list[str]]:
    """Two hours of a view aggregating ``amount`` and string columns: the log's values of a
    string column are 0.0 placeholders, the decoded strings (with some empty ones) are kept
    only for the ``raw`` columns, as for the columns a sketch aggregation reads."""
    rng = np.random.default_rng(5)
    writer = ParquetLogWriter(
        str(root), view, fingerprint_hex, ["user_id"], columns, "s000", raw_columns=dict.fromkeys(raw, "string")
    )
    strings: dict[int, list[str]] = {}
    for h in range(2):
        ts = T0 + h * HOUR + rng.integers(0, HOUR, ROWS_PER_HOUR)
        texts = [("" if i % 10 == 0 else f"m{(i * (h + 3)) % (7 + h)}") for i in range(ROWS_PER_HOUR)]
        rows: dict[str, Sized] = {
            "user_id": np.array([f"u{i % 17}" for i in range(ROWS_PER_HOUR)], dtype=object),
            "event_time": ts.astype(np.int64),
            "partition": np.zeros(ROWS_PER_HOUR, dtype=np.int32),
            "offset": np.arange(h * ROWS_PER_HOUR, (h + 1) * ROWS_PER_HOUR, dtype=np.int64),
            "tile_start": tile_start_ms(ts, 60_000).astype(np.int64),
        }
        for column in columns:
            rows[f"value__{column}"] = (
                rng.normal(50.0, 5.0, ROWS_PER_HOUR) if column == "amount" else np.zeros(ROWS_PER_HOUR)
            )
        for column in raw:
            rows[f"raw__{column}"] = np.array(texts, dtype=object)
        writer.append(rows)
        writer.publish()
        strings[T0 + h * HOUR] = texts
    return strings


def test_string_columns_get_empty_rate_and_distinct_count_not_zeros(tmp_path: Path) -> None:
    root = tmp_path / "log"
    strings = _write_string_log(root, "user_spend", ["amount", "card_id", "merchant_id"], ["merchant_id"])
    table = compute_quality(str(root), "user_spend", text_columns=["card_id", "merchant_id"])
    assert table.height == 3 * 2
    for row in table.iter_rows(named=True):
        texts = strings[row["interval_start"]]
        assert row["count"] == len(texts)
        if row["feature"] == "merchant_id":  # decoded strings kept: empty rate and distinct count
            assert row["null_rate"] == sum(t == "" for t in texts) / len(texts)
            assert row["distinct"] == len({t for t in texts if t})
        elif row["feature"] == "card_id":  # a counted-only string column: nothing but the count
            assert row["null_rate"] is None and row["distinct"] is None
        else:  # the numeric column keeps its statistics and has no distinct count
            assert row["null_rate"] == 0.0 and row["mean"] is not None and row["distinct"] is None
        if row["feature"] != "amount":
            assert row["kind"] == STRING and all(row[s] is None for s in NUMERIC_STATISTICS), row
        else:
            assert row["kind"] == NUMERIC
    # A column whose strings the log keeps is known as a string without being named.
    unnamed = compute_quality(str(root), "user_spend").filter(feature="merchant_id")
    assert unnamed.equals(table.filter(feature="merchant_id"))


def test_quality_cli_takes_string_columns_from_the_repo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    view = load_repo(REPO).view("user_spend")
    types = view.column_types
    text = sorted(c for c, kind in types.items() if kind == FieldType.STRING)
    assert text and any(kind != FieldType.STRING for kind in types.values())
    # Decoded strings of the first only: the others are recognized by their schema type.
    # Under the view's fingerprint: the command reads the log of the repo's definition.
    _write_string_log(tmp_path / "data" / "log", "user_spend", list(view.columns), text[:1], view.fingerprint_hex)
    code = cli_main(["quality", "--repo", str(REPO), "--data-dir", str(tmp_path / "data"), "--view", "user_spend"])
    assert code == 0 and "user_spend:" in capsys.readouterr().out
    table = read_quality(str(tmp_path / "data" / "log"), "user_spend")
    assert sorted(set(table["feature"])) == sorted(view.columns)
    assert set(table.filter(kind=STRING)["feature"]) == set(text)
    # The dashboard charts mean/p50/p99 of the numeric columns only.
    assert set(quality_series(quality_rows(str(tmp_path / "data" / "log"), "user_spend"))) == set(view.columns) - set(
        text
    )
    for row in table.filter(pl.col("feature").is_in(text)).iter_rows(named=True):
        assert all(row[s] is None for s in NUMERIC_STATISTICS), row
        assert (row["distinct"] is not None) == (row["feature"] == text[0]), row
