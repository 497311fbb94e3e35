"""Staged log rows (engine/log_staging.py): many small pieces reach the Parquet log
exactly once and in full, and a roll counts rows that are still staged."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from engine.io.log_format import value_column
from engine.io.log_reader import read_log
from engine.io.parquet_log import ParquetLogWriter
from engine.log_staging import MAX_STAGED_PIECES, MAX_STAGED_ROWS, StagedLogRows
from engine.routing import ViewRows

START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
INTERVAL_MS = 60_000
FP_HEX = "ab" * 8


def _writer(root: Path, join_keys: tuple[str, ...], max_rows: int = 1_000_000) -> ParquetLogWriter:
    return ParquetLogWriter(str(root), "v", FP_HEX, join_keys, ("amount",), "s000", max_rows=max_rows, max_age_s=3600.0)


def _piece(first_offset: int, users: list[str], rng: np.random.Generator) -> ViewRows:
    """Rows for ``users`` (one row each), keyed the way routing keys one join key."""
    keys = sorted(set(users))
    codes = np.array([keys.index(u) for u in users], dtype=np.int64)
    offsets = np.arange(first_offset, first_offset + len(users), dtype=np.int64)
    return ViewRows(
        keys=[k.encode() for k in keys],
        codes=codes,
        join_values={"user_id": np.array(users, dtype=object)},
        event_ts=START_MS + offsets * 7_919,
        offsets=offsets,
        values=rng.random((len(users), 1)),
    )


def test_many_small_pieces_reach_the_log_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    writer = _writer(tmp_path, ("user_id",))
    staged = StagedLogRows(writer, INTERVAL_MS)
    expected: list[tuple[str, int, int, int, int, float]] = []
    next_offset = {0: 0, 1: 0}
    for i in range(3 * MAX_STAGED_PIECES + 5):
        partition = i % 2
        users = [f"u{int(x)}" for x in rng.integers(0, 40, size=int(rng.integers(1, 9)))]
        piece = _piece(next_offset[partition], users, rng)
        next_offset[partition] += len(users)
        staged.add(piece, partition)
        for j, user in enumerate(users):
            ts = int(piece.event_ts[j])
            expected.append(
                (user, ts, partition, int(piece.offsets[j]), ts // INTERVAL_MS * INTERVAL_MS, float(piece.values[j, 0]))
            )
    # Full groups were handed over as they filled; the last few pieces wait.
    assert 0 < staged.rows < len(expected)
    assert writer.buffered_rows + staged.rows == len(expected)
    staged.flush()
    assert staged.rows == 0 and staged.since is None
    assert writer.publish() is not None
    log = read_log(str(tmp_path), "v").sort(["partition", "offset"])
    got = list(
        log.select("user_id", "event_time", "partition", "offset", "tile_start", value_column("amount")).iter_rows()
    )
    assert got == sorted(expected, key=lambda row: (row[2], row[3]))


def test_multi_key_views_log_their_join_values(tmp_path: Path) -> None:
    writer = _writer(tmp_path, ("user_id", "card_id"))
    staged = StagedLogRows(writer, INTERVAL_MS)
    for first in (0, 2):
        staged.add(
            ViewRows(
                keys=[b"u1\x1fc1", b"u2\x1fc2"],
                codes=np.array([0, 1]),
                join_values={
                    "user_id": np.array(["u1", "u2"], dtype=object),
                    "card_id": np.array(["c1", "c2"], dtype=object),
                },
                event_ts=np.array([START_MS, START_MS + 1], dtype=np.int64) + first,
                offsets=np.array([first, first + 1], dtype=np.int64),
                values=np.array([[1.0], [2.0]]),
            ),
            3,
        )
    staged.flush()
    writer.publish()
    log = read_log(str(tmp_path), "v").sort("offset")
    assert log.select("user_id", "card_id", "partition", "offset").rows() == [
        ("u1", "c1", 3, 0),
        ("u2", "c2", 3, 1),
        ("u1", "c1", 3, 2),
        ("u2", "c2", 3, 3),
    ]
    assert log[value_column("amount")].to_list() == [1.0, 2.0, 1.0, 2.0]


def test_a_roll_counts_the_staged_rows(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    writer = _writer(tmp_path, ("user_id",), max_rows=10)
    staged = StagedLogRows(writer, INTERVAL_MS)
    assert not staged.roll_due()
    staged.add(_piece(0, ["a", "b", "c", "d", "e", "f"], rng), 0)
    assert writer.buffered_rows == 0 and not staged.roll_due()
    staged.add(_piece(6, ["a", "b", "c", "d", "e", "f"], rng), 0)
    assert writer.buffered_rows == 0  # still staged, yet the roll is due by rows
    assert staged.roll_due()


def test_the_age_of_a_roll_starts_at_the_first_staged_row(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    writer = _writer(tmp_path, ("user_id",))
    staged = StagedLogRows(writer, INTERVAL_MS)
    staged.add(_piece(0, ["a"], rng), 0)
    assert not staged.roll_due()
    staged.since = time.monotonic() - writer.max_age_s  # staged an hour ago
    assert staged.roll_due()
    staged.flush()  # the writer's clock starts where staging started
    assert writer.should_roll()


def test_a_large_piece_is_appended_at_once(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    writer = _writer(tmp_path, ("user_id",))
    staged = StagedLogRows(writer, INTERVAL_MS)
    staged.add(_piece(0, [f"u{i % 50}" for i in range(MAX_STAGED_ROWS)], rng), 0)
    assert staged.rows == 0 and writer.buffered_rows == MAX_STAGED_ROWS
    writer.publish()
    assert sorted(read_log(str(tmp_path), "v")["offset"].to_list()) == list(range(MAX_STAGED_ROWS))
