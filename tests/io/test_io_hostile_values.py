"""Hostile values at decode: declared constraints and watermark outliers (issue 14, items 1-2).

Each test here fails on the decoder before constraints and the ranked watermark: a constraint
was not a field of the source, and one far-ahead event moved its partition's watermark.
"""

from __future__ import annotations

from typing import Any

import pytest

from engine.definitions import Constraint
from engine.io.decoder import Decoder
from engine.io.watermarks import PartitionWatermarks
from tests.io.io_support import BASE_TS, NOW_MS, FakeSource, dumps, good_event, raw_batch


def _decoder(**overrides: Any) -> Decoder:
    return Decoder(FakeSource(**overrides), now_ms=lambda: NOW_MS)


def _with(i: int, **changes: Any) -> bytes:
    return dumps({**good_event(i), **changes})


CONSTRAINTS = {
    "amount": Constraint(min=0, max=1e9),
    "items": Constraint(min=1, max=1000),
    "user_id": Constraint(min_length=1, max_length=16, allowed_characters="A-Za-z0-9_-"),
}


@pytest.mark.parametrize(
    ("value", "reason", "detail"),
    [
        (_with(1, amount=1e308), "value_out_of_range", "field 'amount': value 1e+308 is outside"),
        (_with(1, amount=-0.01), "value_out_of_range", "[0, 1000000000.0]"),
        (_with(1, items=0), "value_out_of_range", "field 'items': value 0"),
        (_with(1, user_id=""), "invalid_string", "field 'user_id': length 0"),
        (_with(1, user_id="u" * 17), "invalid_string", "length 17 is outside the declared [1, 16]"),
        (_with(1, user_id="u 1"), "invalid_string", "characters outside the declared [A-Za-z0-9_-]"),
        (_with(1, user_id="u\x001"), "invalid_string", "characters outside"),
        # Type checks still come first: a non-finite amount is wrong_type, not out of range.
        (
            b'{"user_id": "u1", "amount": Infinity, "items": 1, "card_present": true, '
            b'"currency": "EUR", "ts": 1764000000000}',
            "wrong_type",
            "non-finite",
        ),
    ],
)
def test_constraint_violations_go_to_the_dlq_with_a_reason(value: bytes, reason: str, detail: str) -> None:
    raw = raw_batch([value, _with(2)])
    out = _decoder(constraints=CONSTRAINTS).decode(raw, PartitionWatermarks())
    assert out.offsets.tolist() == [1]
    (letter,) = out.dead_letters
    assert (letter.offset, letter.reason) == (0, reason)
    assert detail in letter.detail, letter.detail


@pytest.mark.parametrize("extra", [b"NaN", b"1e999", b"-Infinity"])
@pytest.mark.parametrize(
    "strings",
    [
        b'"user_id": "u\\ud800", "currency": "EUR"',  # a lone high surrogate in a join key
        b'"user_id": "u1", "currency": "\\udc00"',  # a lone low surrogate in a string field
        b'"user_id": "u1", "currency": "EUR", "n\\ud800": 1',  # in the key of an unused field
    ],
)
def test_a_lone_surrogate_beside_a_non_finite_number_is_refused_not_decoded(strings: bytes, extra: bytes) -> None:
    # orjson refuses both; the lenient parser (which finds the non-finite field) accepts
    # "\ud800", a string that cannot be hashed (count_distinct) nor written as UTF-8.
    doc = b'{%s, "amount": 1.0, "items": 1, "card_present": true, "ts": %d, "x": %s}' % (
        strings,
        BASE_TS,
        extra,
    )
    out = _decoder().decode(raw_batch([doc, _with(2)]), PartitionWatermarks())
    assert out.offsets.tolist() == [1], doc
    (letter,) = out.dead_letters
    assert letter.reason == "invalid_json", doc
    assert "lone UTF-16 surrogate" in letter.detail and "send UTF-8" in letter.detail, letter.detail


def test_values_at_the_declared_bounds_are_accepted() -> None:
    values = [_with(0, amount=0.0, items=1, user_id="a"), _with(1, amount=1e9, items=1000, user_id="Z" * 16)]
    out = _decoder(constraints=CONSTRAINTS).decode(raw_batch(values), PartitionWatermarks())
    assert out.dead_letters == ()
    assert out.columns["amount"].tolist() == [0.0, 1e9]


def test_one_far_ahead_event_does_not_make_the_partition_late() -> None:
    # Real traffic at BASE_TS.., one event 4 minutes ahead (inside the skew): with the plain
    # maximum every later real event is late; with one outlier ignored none is.
    real = [_with(i, ts=BASE_TS + i * 10) for i in range(50)]
    outlier = _with(99, ts=BASE_TS + 240_000)
    values = [*real[:10], outlier, *real[10:]]
    plain = _decoder(watermark_outliers=0).decode(raw_batch(values), PartitionWatermarks())
    assert len(plain.dead_letters) == 40
    ranked = _decoder(watermark_outliers=1).decode(raw_batch(values), PartitionWatermarks())
    assert ranked.dead_letters == ()
    assert ranked.top_ts_after == (BASE_TS + 240_000, BASE_TS + 490)


def test_ranked_watermark_survives_batch_boundaries_and_restore() -> None:
    decoder = _decoder(watermark_outliers=1, allowed_lateness_ms=100)
    first = decoder.decode(raw_batch([_with(0, ts=BASE_TS), _with(1, ts=BASE_TS + 10**6)]), PartitionWatermarks())
    marks = PartitionWatermarks.restore({0: first.top_ts_after})  # as after a restart
    second = decoder.decode(raw_batch([_with(2, ts=BASE_TS - 100), _with(3, ts=BASE_TS - 101)], first_offset=2), marks)
    assert [(d.offset, d.reason) for d in second.dead_letters] == [(3, "late_event")]
    assert "the 2nd largest earlier event time" in second.dead_letters[0].detail
