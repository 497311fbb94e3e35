"""Parquet log: writer/reader round trip, replay dedup, atomic publish, rolling."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from engine.io.log_format import DAY_MS, ParquetLogInputError, ParquetLogReadError, ParquetLogWriteError
from engine.io.log_reader import list_log_files, read_log
from engine.io.parquet_log import ParquetLogWriter

FP = "0123456789abcdef"
DAY0 = 19_800 * DAY_MS  # 2024-03-18T00:00:00Z
G = 60_000


def batch(users: list[str], times: list[int], partitions: list[int], offsets: list[int]) -> dict[str, Any]:
    t = np.asarray(times, dtype=np.int64)
    return {
        "user_id": np.asarray(users),
        "event_time": t,
        "partition": np.asarray(partitions, dtype=np.int32),
        "offset": np.asarray(offsets, dtype=np.int64),
        "tile_start": (t // G) * G,
        "value__amount": np.asarray(offsets, dtype=np.float64) * 1.5,
    }


def writer(root: str, **kw: Any) -> ParquetLogWriter:
    args: dict[str, Any] = {"writer_id": "shard-000", "max_rows": 1000, "max_age_s": 30.0}
    args.update(kw)
    return ParquetLogWriter(root, "txn_stats", FP, ("user_id",), ("amount",), **args)


def published_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_round_trip_across_dates_and_partitions(tmp_path: Path) -> None:
    w = writer(str(tmp_path))
    w.append(
        batch(
            ["u2", "u1", "u1", "u2"],
            [DAY0 + 5, DAY0 + DAY_MS + 7, DAY0 + 3, DAY0 + 2 * DAY_MS],
            [0, 0, 1, 1],
            [10, 11, 20, 21],
        )
    )
    w.append(batch(["u1"], [DAY0 + 3], [0], [12]))  # same time as offset 20: position orders
    assert w.buffered_rows == 5
    pub = w.publish()
    assert pub is not None
    assert pub.rows == 5
    assert dict(pub.max_offsets) == {0: 12, 1: 21}
    assert len(pub.paths) == 3
    files = published_files(tmp_path)
    dates = sorted(f.split("/")[2] for f in files)
    assert dates == ["date=2024-03-18", "date=2024-03-19", "date=2024-03-20"]
    assert all(f.startswith(f"view=txn_stats/fp={FP}/") for f in files)
    assert all(Path(f).name.startswith("part-shard-000-") for f in files)
    assert not any(f.endswith(".tmp") for f in files)
    assert w.buffered_rows == 0
    assert w.publish() is None

    df = read_log(str(tmp_path), "txn_stats", FP)
    assert df.columns == [
        "user_id",
        "event_time",
        "partition",
        "offset",
        "tile_start",
        "value__amount",
    ]
    assert df.schema["partition"] == pl.Int32
    rows = df.select("user_id", "event_time", "partition", "offset").rows()
    assert rows == [
        ("u1", DAY0 + 3, 0, 12),
        ("u1", DAY0 + 3, 1, 20),
        ("u1", DAY0 + DAY_MS + 7, 0, 11),
        ("u2", DAY0 + 5, 0, 10),
        ("u2", DAY0 + 2 * DAY_MS, 1, 21),
    ]
    assert df["value__amount"].to_list() == [18.0, 30.0, 16.5, 15.0, 31.5]
    assert df["tile_start"].to_list() == [(e // G) * G for e in df["event_time"].to_list()]


def test_read_prunes_dates_and_filters_times(tmp_path: Path) -> None:
    w = writer(str(tmp_path))
    w.append(batch(["a", "a", "a"], [DAY0 + 1, DAY0 + DAY_MS + 1, DAY0 + 2 * DAY_MS], [0] * 3, [1, 2, 3]))
    w.publish()
    _, files = list_log_files(str(tmp_path), "txn_stats", FP, DAY0 + DAY_MS, DAY0 + DAY_MS + 5)
    assert len(files) == 1 and "date=2024-03-19" in files[0]
    df = read_log(str(tmp_path), "txn_stats", FP, start_ms=DAY0 + 2, end_ms=DAY0 + 2 * DAY_MS)
    assert df["offset"].to_list() == [2, 3]
    assert read_log(str(tmp_path), "no_such_view").height == 0


def test_replayed_offsets_are_deduplicated(tmp_path: Path) -> None:
    # A crash after publishing but before the offset commit replays the same records
    # into a second file; the reader must see each (partition, offset) once.
    b = batch(["u1", "u2", "u1"], [DAY0 + 1, DAY0 + 2, DAY0 + 3], [0, 0, 1], [5, 6, 5])
    w1 = writer(str(tmp_path), writer_id="w1")
    w1.append(b)
    w1.publish()
    w2 = writer(str(tmp_path), writer_id="w1")
    w2.append(b)
    w2.append(batch(["u2"], [DAY0 + 4], [0], [7]))
    w2.publish()
    assert len(published_files(tmp_path)) == 2
    df = read_log(str(tmp_path), "txn_stats", FP)
    assert df.height == 4
    assert sorted(df.select("partition", "offset").rows()) == [(0, 5), (0, 6), (0, 7), (1, 5)]


def test_tmp_files_are_invisible(tmp_path: Path) -> None:
    w = writer(str(tmp_path))
    w.append(batch(["u1"], [DAY0], [0], [1]))
    w.publish()
    day_dir = tmp_path / "view=txn_stats" / f"fp={FP}" / "date=2024-03-18"
    (day_dir / "part-x-9-deadbeef.parquet.tmp").write_bytes(b"half a file")
    assert read_log(str(tmp_path), "txn_stats", FP)["offset"].to_list() == [1]


def test_corrupt_file_is_named(tmp_path: Path) -> None:
    w = writer(str(tmp_path))
    w.append(batch(["u1"], [DAY0], [0], [1]))
    w.publish()
    bad = tmp_path / "view=txn_stats" / f"fp={FP}" / "date=2024-03-18" / "part-z-0-00000000.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(ParquetLogReadError, match=r"part-z-0-00000000\.parquet"):
        read_log(str(tmp_path), "txn_stats", FP)


def test_several_fingerprints_need_a_choice(tmp_path: Path) -> None:
    for fp in (FP, "ffffffffffffffff"):
        w = ParquetLogWriter(str(tmp_path), "txn_stats", fp, ("user_id",), ("amount",), "w")
        w.append(batch(["u1"], [DAY0], [0], [1]))
        w.publish()
    with pytest.raises(ParquetLogReadError, match="several fingerprints"):
        read_log(str(tmp_path), "txn_stats")
    assert read_log(str(tmp_path), "txn_stats", "ffffffffffffffff").height == 1


class FailingHandler(pafs.FileSystemHandler):  # type: ignore[misc]
    """Local filesystem whose output streams fail with ENOSPC after a few bytes."""

    def __init__(self) -> None:
        self.local = pafs.LocalFileSystem()
        self.fail = True

    def get_type_name(self) -> str:
        return "failing-local"

    def normalize_path(self, path: str) -> str:
        return path

    def get_file_info(self, paths: list[str]) -> Any:
        return self.local.get_file_info(paths)

    def get_file_info_selector(self, selector: Any) -> Any:
        return self.local.get_file_info(selector)

    def create_dir(self, path: str, recursive: bool) -> None:
        self.local.create_dir(path, recursive=recursive)

    def delete_dir(self, path: str) -> None:
        self.local.delete_dir(path)

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        self.local.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self) -> None:
        raise OSError("refused")

    def delete_file(self, path: str) -> None:
        self.local.delete_file(path)

    def move(self, src: str, dest: str) -> None:
        self.local.move(src, dest)

    def copy_file(self, src: str, dest: str) -> None:
        self.local.copy_file(src, dest)

    def open_input_stream(self, path: str) -> Any:
        return self.local.open_input_stream(path)

    def open_input_file(self, path: str) -> Any:
        return self.local.open_input_file(path)

    def open_append_stream(self, path: str, metadata: Any) -> Any:
        return self.local.open_append_stream(path)

    def open_output_stream(self, path: str, metadata: Any) -> Any:
        raw = open(path, "wb")  # noqa: SIM115 - handed to pyarrow, closed by it
        fail = self.fail

        class DiskFull:
            written = 0
            closed = False

            def write(self, data: Any) -> int:
                if fail and self.written > 16:
                    raise OSError(errno.ENOSPC, "No space left on device")
                self.written += raw.write(data)
                return len(data)

            def flush(self) -> None:
                raw.flush()

            def close(self) -> None:
                raw.close()
                self.closed = True

        return pa.PythonFile(DiskFull(), mode="w")


def test_failed_publish_leaves_nothing_visible_and_retries(tmp_path: Path) -> None:
    handler = FailingHandler()
    fs = pafs.PyFileSystem(handler)
    root = str(tmp_path)
    w = writer(root, filesystem=fs)
    w.append(batch(["u1", "u2"], [DAY0 + 1, DAY0 + DAY_MS + 1], [0, 0], [1, 2]))
    with pytest.raises(ParquetLogWriteError, match=r"view=txn_stats/fp=.*\.parquet\.tmp"):
        w.publish()
    assert published_files(tmp_path) == []  # neither a partial .parquet nor a .tmp
    assert read_log(root, "txn_stats", FP).height == 0
    assert w.buffered_rows == 2  # kept for the retry
    handler.fail = False
    pub = w.publish()
    assert pub is not None and pub.rows == 2 and dict(pub.max_offsets) == {0: 2}
    assert read_log(root, "txn_stats", FP)["offset"].to_list() == [1, 2]


def test_rolling_thresholds(tmp_path: Path) -> None:
    w = writer(str(tmp_path), max_rows=3, max_age_s=10.0)
    assert not w.should_roll(now=1e9)  # empty buffer never rolls
    w.append(batch(["u1"], [DAY0], [0], [1]), now=100.0)
    assert not w.should_roll(now=109.9)
    assert w.should_roll(now=110.0)
    w.append(batch(["u1", "u1"], [DAY0, DAY0], [0, 0], [2, 3]), now=105.0)
    assert w.should_roll(now=100.0)  # 3 rows reach max_rows whatever the age
    w.publish()
    w.append(batch(["u1"], [DAY0], [0], [4]), now=200.0)  # the age clock restarts
    assert not w.should_roll(now=205.0)


def test_append_validation(tmp_path: Path) -> None:
    w = writer(str(tmp_path))
    b = batch(["u1"], [DAY0], [0], [1])
    del b["tile_start"]
    with pytest.raises(ParquetLogInputError, match="missing \\['tile_start'\\]"):
        w.append(b)
    b = batch(["u1"], [DAY0], [0], [1])
    b["offset"] = np.asarray([1.5])
    with pytest.raises(ParquetLogInputError, match="column 'offset'"):
        w.append(b)
    b = batch(["u1"], [DAY0], [0], [1])
    b["user_id"] = np.asarray(["u1", "u2"])
    with pytest.raises(ParquetLogInputError, match="different lengths"):
        w.append(b)
    with pytest.raises(ParquetLogInputError, match="writer id"):
        writer(str(tmp_path), writer_id="a/b")
    with pytest.raises(ParquetLogInputError, match="max_rows"):
        writer(str(tmp_path), max_rows=0)


def test_file_uri_root(tmp_path: Path) -> None:
    root = "file://" + os.path.abspath(tmp_path)
    w = writer(root)
    w.append(batch(["u1"], [DAY0], [0], [1]))
    w.publish()
    assert read_log(root, "txn_stats", FP)["offset"].to_list() == [1]


def test_log_encoding_is_lossless_and_as_documented(tmp_path: Path) -> None:
    """LZ4 + delta-encoded integers (docs/parquet-log.md "Encoding") read back bit for bit,
    including floats that need all 64 bits and offsets that jump backwards."""
    import pyarrow.parquet as pq

    rng = np.random.default_rng(7)
    n = 5_000
    times = np.sort(DAY0 + rng.integers(0, DAY_MS // 2, n))
    offsets = rng.permutation(n).astype(np.int64) * 977 + 2**39
    values = rng.standard_normal(n) * 1e12 + rng.random(n)
    users = np.char.add("u", rng.integers(0, 300, n).astype(str))
    w = writer(str(tmp_path), max_rows=n)
    w.append(
        {
            "user_id": users,
            "event_time": times,
            "partition": np.full(n, 8191, dtype=np.int32),
            "offset": offsets,
            "tile_start": (times // G) * G,
            "value__amount": values,
        }
    )
    pub = w.publish()
    assert pub is not None and len(pub.paths) == 1
    meta = pq.ParquetFile(pub.paths[0]).metadata.row_group(0)
    names = [meta.column(i).path_in_schema for i in range(meta.num_columns)]
    assert {meta.column(i).compression for i in range(meta.num_columns)} == {"LZ4"}
    assert "DELTA_BINARY_PACKED" in meta.column(names.index("offset")).encodings
    assert "RLE_DICTIONARY" in meta.column(names.index("user_id")).encodings
    table = pq.read_table(pub.paths[0])
    assert table.column("user_id").to_pylist() == users.tolist()
    assert np.array_equal(table.column("offset").to_numpy(), offsets)
    assert np.array_equal(table.column("event_time").to_numpy(), times)
    assert table.column("value__amount").to_numpy().tobytes() == values.tobytes()
    df = read_log(str(tmp_path), "txn_stats", FP)
    expected = pl.DataFrame({"user_id": users, "event_time": times, "offset": offsets, "value__amount": values}).sort(
        "user_id", "event_time", "offset"
    )
    assert df.select(expected.columns).equals(expected)


@pytest.mark.parametrize(
    ("keys", "cardinality", "time_range"),
    [
        (["user_id"], 5_000, 10**12),  # ranks and time packed into one int64
        (["user_id", "card_id"], 300, 10**6),  # two keys packed
        (["user_id", "card_id"], 100_000, 10**12),  # too wide to pack: sort by columns
    ],
)
def test_log_order_equals_sorting_by_keys_time_position(keys: list[str], cardinality: int, time_range: int) -> None:
    """read_log's rank-based order is exactly polars' sort by (keys, time, partition, offset)."""
    from engine.io.log_reader import _log_order

    rng = np.random.default_rng(cardinality)
    n = 50_000
    prefixes = rng.choice(["x", "é", "Z", "ab", ""], n)
    frame = pl.DataFrame(
        {
            **{k: np.char.add(prefixes, rng.integers(0, cardinality, n).astype(str)) for k in keys},
            "event_time": rng.integers(-time_range, time_range, n),
            "partition": rng.integers(0, 4, n).astype(np.int32),
            "offset": rng.permutation(n),
        }
    )
    expected = frame.sort([*keys, "event_time", "partition", "offset"])
    assert frame[_log_order(frame, keys)].equals(expected)


def test_log_order_of_non_string_keys_falls_back_to_a_plain_sort() -> None:
    from engine.io.log_reader import _log_order

    frame = pl.DataFrame(
        {"k": [2, 1, 1, 1], "event_time": [1, 5, 2, 2], "partition": [0, 0, 1, 0], "offset": [1, 2, 3, 4]}
    )
    assert frame[_log_order(frame, ["k"])].rows() == [(1, 2, 0, 4), (1, 2, 1, 3), (1, 5, 0, 2), (2, 1, 0, 1)]
