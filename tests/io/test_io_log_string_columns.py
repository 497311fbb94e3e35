"""String columns of the Parquet log (engine/io/parquet_log.py): whatever objects a join-key
column holds, the log stores each value's ``str`` text, the same through the direct
Arrow conversion of Python strings as through the ``str()`` route of other values."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.io.log_format import value_column
from engine.io.log_reader import read_log
from engine.io.parquet_log import ParquetLogWriter
from tests.int_strategies import int64s

START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
FP_HEX = "cd" * 8

_VALUES = st.one_of(
    st.text(max_size=12),
    int64s(),
    st.booleans(),
    st.floats(allow_nan=False),
    st.none(),
)


@settings(max_examples=60, deadline=None)
@given(
    users=st.lists(st.text(max_size=12), min_size=1, max_size=30),
    merchants=st.lists(_VALUES, min_size=1, max_size=30),
)
def test_join_key_columns_log_the_text_of_each_value(users: list[str], merchants: list[object]) -> None:
    n = min(len(users), len(merchants))
    users, merchants = users[:n], merchants[:n]
    with tempfile.TemporaryDirectory() as root:
        writer = ParquetLogWriter(root, "v", FP_HEX, ("user_id", "merchant_id"), ("amount",), "s000")
        offsets = np.arange(n, dtype=np.int64)
        writer.append(
            {
                "user_id": np.array(users, dtype=object),
                "merchant_id": np.array(merchants, dtype=object),
                "event_time": START_MS + offsets,
                "partition": np.zeros(n, dtype=np.int32),
                "offset": offsets,
                "tile_start": np.full(n, START_MS, dtype=np.int64),
                value_column("amount"): np.ones(n),
            }
        )
        writer.publish()
        logged = read_log(root, "v", FP_HEX).sort("offset")
    assert logged.get_column("user_id").to_list() == users
    assert logged.get_column("merchant_id").to_list() == [str(m) for m in merchants]


def test_a_column_of_strings_and_none_logs_none_as_text(tmp_path: Path) -> None:
    writer = ParquetLogWriter(str(tmp_path), "v", FP_HEX, ("user_id",), (), "s000")
    writer.append(
        {
            "user_id": np.array(["u1", None], dtype=object),
            "event_time": np.array([START_MS, START_MS + 1], dtype=np.int64),
            "partition": np.zeros(2, dtype=np.int32),
            "offset": np.array([0, 1], dtype=np.int64),
            "tile_start": np.full(2, START_MS, dtype=np.int64),
        }
    )
    writer.publish()
    assert read_log(str(tmp_path), "v", FP_HEX).sort("offset").get_column("user_id").to_list() == ["u1", "None"]


def test_trailing_nul_characters_survive_the_str_route(tmp_path: Path) -> None:
    # A None in the column sends it through the str() route; numpy's fixed-width unicode
    # would have dropped the trailing NUL of "m\x00" and "\x00".
    writer = ParquetLogWriter(str(tmp_path), "v", FP_HEX, ("merchant_id",), (), "s000")
    writer.append(
        {
            "merchant_id": np.array([None, "\x00", "m\x00", 7], dtype=object),
            "event_time": np.full(4, START_MS, dtype=np.int64),
            "partition": np.zeros(4, dtype=np.int32),
            "offset": np.arange(4, dtype=np.int64),
            "tile_start": np.full(4, START_MS, dtype=np.int64),
        }
    )
    writer.publish()
    logged = read_log(str(tmp_path), "v", FP_HEX).sort("offset").get_column("merchant_id").to_list()
    assert logged == ["None", "\x00", "m\x00", "7"]
