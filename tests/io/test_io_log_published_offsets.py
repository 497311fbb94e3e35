"""A publish reports, per source partition, the highest offset it made visible
(engine/io/parquet_log.py): checked against a plain max over the appended rows, for rows
in any order and partitions with gaps."""

from __future__ import annotations

import tempfile

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.io.log_format import value_column
from engine.io.parquet_log import ParquetLogWriter

START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
DAY_MS = 86_400_000
FP_HEX = "ef" * 8


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.integers(0, 40), st.integers(0, 2**40), st.integers(0, 3 * DAY_MS)), min_size=1, max_size=60
    )
)
def test_max_offsets_are_the_highest_offset_of_each_partition(rows: list[tuple[int, int, int]]) -> None:
    partitions = np.array([p for p, _, _ in rows], dtype=np.int32)
    offsets = np.array([o for _, o, _ in rows], dtype=np.int64)
    event_time = START_MS + np.array([t for _, _, t in rows], dtype=np.int64)
    expected: dict[int, int] = {}
    for p, o, _ in rows:
        expected[p] = max(expected.get(p, -1), o)
    with tempfile.TemporaryDirectory() as root:
        writer = ParquetLogWriter(root, "v", FP_HEX, ("user_id",), ("amount",), "s000")
        writer.append(
            {
                "user_id": np.array([f"u{p}" for p, _, _ in rows], dtype=object),
                "event_time": event_time,
                "partition": partitions,
                "offset": offsets,
                "tile_start": event_time,
                value_column("amount"): np.ones(len(rows)),
            }
        )
        published = writer.publish()
    assert published is not None
    assert dict(published.max_offsets) == expected
