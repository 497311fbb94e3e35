"""Int fields read as doubles never come back rounded (docs/semantics.md section 5).

sum, mean, min, max, last and stddev keep float64 partials: an int beyond +-2**53 there
would be served rounded with the status PRESENT. Such a value is refused as
``value_out_of_range`` by the stream and push decoder (``keyed_decoder``) and refused with
the row named by a history backfill; the same value in a field only counted, hashed or
listed (an id) is kept whole.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.definitions import Aggregation, Entity, EventSource, StreamFeatureView
from engine.entity_codes import keyed_decoder
from engine.exact_doubles import MAX_EXACT_INTEGER
from engine.io.watermarks import PartitionWatermarks
from engine.offline.exceptions import HistoryFileError
from engine.offline.history_slices import index_history
from tests.exact_int_repo import aggregations_read, schema_kinds
from tests.int_strategies import int64s
from tests.io.io_support import BASE_TS, NOW_MS, dumps, raw_batch
from tests.reference import inexact_int_fields

SOURCE = EventSource(
    name="payments",
    topic="payments",
    timestamp_field="ts",
    timestamp_format="epoch_millis",
    schema={"user_id": "string", "cents": "int", "card_number": "int"},
)
VIEW = StreamFeatureView(
    name="user_payments",
    source=SOURCE,
    entities=[Entity(name="user", join_keys=["user_id"])],
    aggregations=[
        Aggregation(column="cents", function="sum", window=timedelta(hours=1)),
        Aggregation(column="cents", function="max", window=timedelta(hours=1)),
        Aggregation(column="card_number", function="count_distinct_approx", window=timedelta(hours=1)),
        Aggregation(column="card_number", function="last_n", n=3, window=timedelta(hours=1)),
        Aggregation(column="card_number", function="count", window=timedelta(hours=1)),
    ],
)
LIMIT = MAX_EXACT_INTEGER


def _record(i: int, cents: int, card: int = 4_000_000_000_000_000) -> bytes:
    return dumps({"user_id": f"u{i}", "cents": cents, "card_number": card, "ts": BASE_TS + i})


@pytest.mark.parametrize("typed_path", [True, False])
def test_an_int_beyond_2_53_read_as_a_double_is_refused_and_an_id_is_kept(typed_path: bool) -> None:
    decoder = keyed_decoder(SOURCE, [VIEW], now_ms=lambda: NOW_MS, typed_path=typed_path)
    cents = [LIMIT, -LIMIT, LIMIT + 1, -(LIMIT + 1), 2**63 - 1, -(2**63), 1999]
    big_card = 2**62 + 1  # a 19-digit id: only counted, hashed and listed
    raw = raw_batch([_record(i, c, big_card) for i, c in enumerate(cents)])
    out = decoder.decode(raw, PartitionWatermarks())
    assert out.offsets.tolist() == [0, 1, 6]
    assert out.columns["cents"].tolist() == [LIMIT, -LIMIT, 1999]
    assert out.columns["card_number"].tolist() == [big_card] * 3, "ids beyond 2**53 are kept exactly"
    assert [(d.offset, d.reason) for d in out.dead_letters] == [(i, "value_out_of_range") for i in (2, 3, 4, 5)]
    for letter in out.dead_letters:
        assert "field 'cents'" in letter.detail and "2**53" in letter.detail and "string" in letter.detail, letter


@settings(max_examples=100, deadline=None)
@given(rows=st.lists(st.tuples(int64s(), int64s()), min_size=1, max_size=30), typed_path=st.booleans())
def test_the_decoder_refuses_exactly_the_records_the_reference_refuses(
    rows: list[tuple[int, int]], typed_path: bool
) -> None:
    decoder = keyed_decoder(SOURCE, [VIEW], now_ms=lambda: NOW_MS, typed_path=typed_path)
    out = decoder.decode(raw_batch([_record(i, c, card) for i, (c, card) in enumerate(rows)]), PartitionWatermarks())
    kinds, read = schema_kinds(SOURCE), aggregations_read([VIEW])
    refused = [
        i for i, (c, card) in enumerate(rows) if inexact_int_fields({"cents": c, "card_number": card}, kinds, read)
    ]
    assert [(d.offset, d.reason) for d in out.dead_letters] == [(i, "value_out_of_range") for i in refused]
    kept = [row for i, row in enumerate(rows) if i not in refused]
    assert out.columns["cents"].tolist() == [c for c, _ in kept]
    assert out.columns["card_number"].tolist() == [card for _, card in kept], "card numbers are kept whole"


def test_without_a_double_reading_aggregation_every_int64_is_kept() -> None:
    only_counted = StreamFeatureView(
        name="user_cards",
        source=SOURCE,
        entities=[Entity(name="user", join_keys=["user_id"])],
        aggregations=[
            Aggregation(column="cents", function="count_distinct", max_distinct=10, window=timedelta(hours=1))
        ],
    )
    decoder = keyed_decoder(SOURCE, [only_counted], now_ms=lambda: NOW_MS)
    out = decoder.decode(raw_batch([_record(0, 2**63 - 1)]), PartitionWatermarks())
    assert out.dead_letters == () and out.columns["cents"].tolist() == [2**63 - 1]


def test_a_history_file_with_such_a_value_is_refused_naming_the_row(tmp_path: Path) -> None:
    path = tmp_path / "history.parquet"
    pl.DataFrame(
        {
            "user_id": ["u0", "u1", "u2"],
            "cents": [5, LIMIT, LIMIT + 1],
            "card_number": [2**62 + 1] * 3,
            "ts": [BASE_TS, BASE_TS + 1, BASE_TS + 2],
        }
    ).write_parquet(path)
    with pytest.raises(HistoryFileError, match=r"column 'cents': row 2: 9007199254740993 is beyond \+-2\*\*53"):
        index_history([str(path)], SOURCE, [VIEW], BASE_TS, BASE_TS + 10, 1_000)


def test_a_history_file_with_big_ids_only_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "history.parquet"
    pl.DataFrame({"user_id": ["u0"], "cents": [LIMIT], "card_number": [2**63 - 1], "ts": [BASE_TS]}).write_parquet(path)
    index = index_history([str(path)], SOURCE, [VIEW], BASE_TS, BASE_TS + 10, 1_000)
    assert index.rows == 1
