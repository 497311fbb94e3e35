"""The decoder's typed fast path changes nothing but speed.

Reference: the same decoder with ``typed_path=False`` (every record parsed with orjson and
checked field by field). Every decoded batch must be identical: rows, columns (values and
dtypes), event times, watermark, and each dead letter's reason and detail.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.definitions import Constraint
from engine.io.batches import DecodedBatch
from engine.io.decoder import Decoder
from engine.io.typed_records import TypedRecordDecoder
from engine.io.watermarks import PartitionWatermarks
from tests.io.io_support import BASE_TS, NOW_MS, FakeSource, good_event, raw_batch
from tests.io.test_io_decoder_properties import _payload

CONSTRAINTS = {
    "amount": Constraint(min=0, max=1e9),
    "items": Constraint(min=1, max=1000),
    "user_id": Constraint(min_length=1, max_length=16, allowed_characters="A-Za-z0-9_-"),
}


def assert_same_batch(got: DecodedBatch, want: DecodedBatch) -> None:
    assert got.dead_letters == want.dead_letters
    assert np.array_equal(got.offsets, want.offsets)
    assert np.array_equal(got.event_ts, want.event_ts)
    assert got.top_ts_after == want.top_ts_after
    assert (got.first_offset, got.last_offset) == (want.first_offset, want.last_offset)
    assert list(got.columns) == list(want.columns)
    for name, column in want.columns.items():
        assert got.columns[name].dtype == column.dtype, name
        assert got.columns[name].tolist() == column.tolist(), name


def _decoders(source: FakeSource) -> tuple[Decoder, Decoder]:
    fast = Decoder(source, now_ms=lambda: NOW_MS, dlq_payload_cap=50)
    reference = Decoder(source, now_ms=lambda: NOW_MS, dlq_payload_cap=50, typed_path=False)
    return fast, reference


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batches=st.lists(st.lists(_payload(), min_size=1, max_size=20), min_size=1, max_size=3),
    fmt=st.sampled_from(["epoch_millis", "epoch_seconds", "iso8601"]),
    constrained=st.booleans(),
    lateness=st.sampled_from([0, 1000]),
)
def test_typed_path_decodes_exactly_like_orjson(
    batches: list[list[bytes | None]], fmt: str, constrained: bool, lateness: int
) -> None:
    source = FakeSource(
        timestamp_format=fmt,
        allowed_lateness_ms=lateness,
        max_payload_bytes=300,
        watermark_outliers=1,
        constraints=CONSTRAINTS if constrained else {},
    )
    fast, reference = _decoders(source)
    fast_marks, reference_marks = PartitionWatermarks(), PartitionWatermarks()
    offset = 0
    for payloads in batches:
        raw = raw_batch(payloads, first_offset=offset)
        offset += len(payloads)
        assert_same_batch(fast.decode(raw, fast_marks), reference.decode(raw, reference_marks))


_field_texts = st.one_of(
    st.integers(min_value=-(2**65), max_value=2**65).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(["1e400", "-1e400", "1E2", "-0", "-0.0", "0.1e-330", "NaN", "Infinity", "null"]),
    st.sampled_from(["true", "false", '"x"', '"\\ud800"', '"\\ud83d\\ude00"', '"a\\u0000b"', "[]", "{}"]),
    st.text(max_size=6).map(lambda t: json.dumps(t, ensure_ascii=False)),
)
_KINDS = {"s": "string", "i": "int", "f": "float", "b": "bool"}


@settings(max_examples=400, deadline=None)
@given(
    fields=st.lists(st.tuples(st.sampled_from([*_KINDS, "extra"]), _field_texts), min_size=0, max_size=6),
)
def test_accepted_records_hold_the_values_orjson_reads(fields: list[tuple[str, str]]) -> None:
    """Field by field, duplicates and undeclared fields included: whatever the typed decoder
    accepts, orjson parses to the same values of the same Python types."""
    doc = ("{" + ",".join(f'"{name}":{text}' for name, text in fields) + "}").encode("utf-8", "surrogatepass")
    decoder = TypedRecordDecoder(_KINDS)

    rows = decoder.decode_rows([doc])

    if rows.not_decoded == [0]:
        return
    want = orjson.loads(doc)
    for name in _KINDS:
        got = rows.columns[name][0]
        assert type(got) is type(want[name]), (doc, name)
        assert got == want[name], (doc, name)


def test_rows_not_decoded_are_named_wherever_they_are() -> None:
    good = orjson.dumps(good_event(1))
    extra = orjson.dumps({**good_event(2), "note": "undeclared"})
    values: list[bytes | None] = [None, good, extra, extra, good, b"{", good, None]
    kinds = {"user_id": "string", "amount": "float", "items": "int", "card_present": "bool", "currency": "string"}
    decoder = TypedRecordDecoder({**kinds, "ts": "int"})

    rows = decoder.decode_rows(values)

    assert rows.not_decoded == [0, 2, 3, 5, 7]
    assert rows.columns["user_id"][1] == good_event(1)["user_id"]
    assert rows.columns["ts"][6] == good_event(1)["ts"]
    assert [rows.columns["amount"][i] for i in (1, 4, 6)] == [good_event(1)["amount"]] * 3


def test_sources_with_undeclared_fields_decode_the_same_before_and_after_the_pause() -> None:
    """Batches that mostly fall back (undeclared fields) pause the typed path; the output
    never depends on which path ran."""
    source = FakeSource()
    fast, reference = _decoders(source)
    fast_marks, reference_marks = PartitionWatermarks(), PartitionWatermarks()
    batches: list[list[dict[str, Any]]] = [
        [{**good_event(i), "note": "x"} for i in range(10)],
        [good_event(i) for i in range(10, 20)],
        [good_event(i, ts=BASE_TS - 10**6) for i in range(5)],  # late events
    ]
    offset = 0
    for batch in batches * 20:
        raw = raw_batch([orjson.dumps(e) for e in batch], first_offset=offset)
        offset += len(batch)
        assert_same_batch(fast.decode(raw, fast_marks), reference.decode(raw, reference_marks))


def test_timestamp_field_declared_in_the_schema_takes_the_orjson_path() -> None:
    source = FakeSource(schema={"user_id": "string", "ts": "int"})
    fast, reference = _decoders(source)
    raw = raw_batch([orjson.dumps({"user_id": "u", "ts": BASE_TS}), orjson.dumps({"user_id": "u", "ts": "x"})])

    got = fast.decode(raw, PartitionWatermarks())

    assert_same_batch(got, reference.decode(raw, PartitionWatermarks()))
    assert [d.reason for d in got.dead_letters] == ["wrong_type"]
