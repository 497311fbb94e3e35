"""Decoder: every refusal reason, columns, timestamps, watermarks (docs/semantics.md 1 and 5)."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from enum import Enum
from typing import Any

import numpy as np
import pytest

from engine.io.batches import DeadLetterReason, DecodedBatch, RawBatch
from engine.io.decoder import Decoder
from engine.io.exceptions import IoValueError
from engine.io.watermarks import PartitionWatermarks
from tests.io.io_support import (
    BASE_TS,
    NOW_MS,
    FakeSource,
    brute_force_late,
    dumps,
    good_event,
    raw_batch,
)


def _decoder(**overrides: Any) -> Decoder:
    cap = overrides.pop("dlq_payload_cap", 64 * 1024)
    return Decoder(FakeSource(**overrides), now_ms=lambda: NOW_MS, dlq_payload_cap=cap)


def _decode(values: Sequence[bytes | None], **overrides: Any) -> DecodedBatch:
    raw = raw_batch(values)
    out = _decoder(**overrides).decode(raw, PartitionWatermarks())
    assert len(out) + len(out.dead_letters) == len(raw)
    return out


def _with(i: int, **changes: Any) -> bytes:
    event = good_event(i)
    for key, value in changes.items():
        if value is _ABSENT:
            del event[key]
        else:
            event[key] = value
    return dumps(event)


_ABSENT = object()

# One builder per kind of malformed record, with the reason the contract gives it.
_BAD_KINDS: list[tuple[str, Callable[[int], bytes | None]]] = [
    ("payload_too_large", lambda i: _with(i, user_id="x" * 70_000)),
    ("invalid_json", lambda i: b'{"user_id": "u1", "amount": ' + str(i).encode()),
    ("invalid_json", lambda i: b'{"user_id": "\xff\xfe", "amount": 1.0}'),
    ("invalid_json", lambda i: None),
    ("invalid_json", lambda i: b""),
    ("not_an_object", lambda i: dumps([good_event(i)])),
    ("not_an_object", lambda i: b"42"),
    ("missing_field", lambda i: _with(i, amount=_ABSENT)),
    ("missing_field", lambda i: _with(i, currency=None)),
    ("missing_field", lambda i: _with(i, ts=_ABSENT)),
    ("wrong_type", lambda i: _with(i, amount="abc")),
    ("wrong_type", lambda i: _with(i, amount=True)),
    ("wrong_type", lambda i: _with(i, items=False)),
    ("wrong_type", lambda i: _with(i, items=2.5)),
    ("wrong_type", lambda i: _with(i, items=2**63)),
    ("wrong_type", lambda i: _with(i, card_present=1)),
    ("wrong_type", lambda i: _with(i, user_id=17)),
    ("wrong_type", lambda i: _with(i, amount=1.0).replace(b'"amount":1.0', b'"amount":NaN')),
    ("wrong_type", lambda i: _with(i, amount=1.0).replace(b'"amount":1.0', b'"amount":-1e400')),
    ("invalid_timestamp", lambda i: _with(i, ts=str(BASE_TS))),
    ("invalid_timestamp", lambda i: _with(i, ts=float(BASE_TS))),
    ("invalid_timestamp", lambda i: _with(i, ts=True)),
    ("timestamp_out_of_range", lambda i: _with(i, ts=915_148_800_000)),  # 1999-01-01
    ("timestamp_out_of_range", lambda i: _with(i, ts=-5)),
    ("timestamp_out_of_range", lambda i: _with(i, ts=2**53 + 1)),
    ("timestamp_out_of_range", lambda i: _with(i, ts=2**64 - 1)),
    ("timestamp_in_future", lambda i: _with(i, ts=NOW_MS + 86_400_001)),
    ("late_event", lambda i: _with(i, ts=BASE_TS - 1)),
]


def test_mixed_batch_counts_every_reason_exactly() -> None:
    n = 10_000
    rng = random.Random(7)
    rows = list(range(n))
    rng.shuffle(rows)
    # 1% of the batch per malformed kind, at random positions (never the first row, so the
    # late events always have an earlier valid event to be late against).
    per_kind = n // 100 // len(_BAD_KINDS) + 1
    candidates = [r for r in rows if r != 0]
    kind_of_row: dict[int, int] = {}
    for kind_index in range(len(_BAD_KINDS)):
        for r in candidates[kind_index * per_kind : (kind_index + 1) * per_kind]:
            kind_of_row[r] = kind_index
    planted = {r: _BAD_KINDS[k][0] for r, k in kind_of_row.items()}
    values = [_BAD_KINDS[kind_of_row[i]][1](i) if i in kind_of_row else dumps(good_event(i)) for i in range(n)]

    out = _decode(values)

    expected = Counter(planted.values())
    assert Counter(dl.reason for dl in out.dead_letters) == expected
    assert {dl.offset: dl.reason for dl in out.dead_letters} == planted
    assert len(out) == n - len(planted)
    good_rows = [i for i in range(n) if i not in planted]
    assert out.offsets.tolist() == good_rows
    assert out.event_ts.tolist() == [good_event(i)["ts"] for i in good_rows]
    assert out.columns["amount"].tolist() == [good_event(i)["amount"] for i in good_rows]
    assert out.columns["user_id"].tolist() == [good_event(i)["user_id"] for i in good_rows]
    assert out.columns["items"].tolist() == [good_event(i)["items"] for i in good_rows]
    assert out.columns["card_present"].tolist() == [good_event(i)["card_present"] for i in good_rows]
    # Dead letters carry the original key and bytes and come in offset order.
    for dl in out.dead_letters:
        assert dl.key == f"k{dl.offset}".encode()
        if dl.reason != "payload_too_large":
            assert dl.value == values[dl.offset]
    assert [dl.offset for dl in out.dead_letters] == sorted(planted)
    assert out.top_ts_after == (max(good_event(i)["ts"] for i in good_rows),)


def test_all_good_batch_builds_typed_columns() -> None:
    values = [dumps(good_event(i)) for i in range(5)]
    values[2] = _with(2, amount=7)  # an int is accepted for a float field
    out = _decode(values)
    assert out.dead_letters == ()
    assert (out.first_offset, out.last_offset) == (0, 4)
    assert out.columns["user_id"].dtype == object
    assert out.columns["amount"].dtype == np.float64
    assert out.columns["items"].dtype == np.int64
    assert out.columns["card_present"].dtype == np.bool_
    assert out.event_ts.dtype == np.int64
    assert out.columns["amount"][2] == 7.0
    assert set(out.columns) == {"user_id", "amount", "items", "card_present", "currency"}


@pytest.mark.parametrize(
    ("value", "reason", "detail"),
    [
        (_with(1, amount="abc"), "wrong_type", "field 'amount': expected float, got str 'abc'"),
        (_with(1, items=True), "wrong_type", "field 'items': expected int, got bool True"),
        (
            _with(1, items=2**63),
            "wrong_type",
            "field 'items': expected int, got int 9223372036854775808 beyond int64",
        ),
        (_with(1, amount=_ABSENT), "missing_field", "field 'amount' is absent"),
        (_with(1, amount=None), "missing_field", "field 'amount' is null"),
        (b"[1]", "not_an_object", "expected a JSON object, got list [1]"),
        (None, "invalid_json", "tombstone"),
        (b"\xff", "invalid_json", "byte 0xff at offset 0 is not UTF-8"),
        (b'{"user_id": "caf\xe9"}', "invalid_json", "byte 0xe9 at offset 16 is not UTF-8 (JSON text is UTF-8)"),
        (_with(1, ts="soon"), "invalid_timestamp", "timestamp field 'ts'"),
        (_with(1, ts=915_148_800_000), "timestamp_out_of_range", "2000-01-01"),
        (_with(1, ts=NOW_MS + 86_400_001), "timestamp_in_future", "max_future_skew"),
    ],
)
def test_detail_names_field_and_problem(value: bytes | None, reason: str, detail: str) -> None:
    out = _decode([value])
    assert len(out) == 0
    (letter,) = out.dead_letters
    assert letter.reason == reason
    assert detail in letter.detail


@pytest.mark.parametrize("typed_path", [True, False])
def test_a_missing_field_detail_names_every_missing_field(typed_path: bool) -> None:
    """Not only the first: the sender fixes every missing field from one dead letter."""
    decoder = Decoder(FakeSource(), now_ms=lambda: NOW_MS, typed_path=typed_path)
    values = [
        _with(1, user_id=_ABSENT, items=_ABSENT, ts=_ABSENT),
        _with(2, user_id=_ABSENT, amount=None, currency=None, ts=_ABSENT),
        _with(3, amount=_ABSENT),
    ]
    out = decoder.decode(raw_batch(values), PartitionWatermarks())
    assert [(d.reason, d.detail) for d in out.dead_letters] == [
        ("missing_field", "fields 'user_id', 'items' and 'ts' are absent"),
        ("missing_field", "fields 'user_id' and 'ts' are absent; fields 'amount' and 'currency' are null"),
        ("missing_field", "field 'amount' is absent"),
    ]


def test_first_failing_check_wins() -> None:
    # Missing amount comes before the wrong timestamp in check order.
    out = _decode([_with(1, amount=_ABSENT, ts="x")])
    assert out.dead_letters[0].reason == DeadLetterReason.MISSING_FIELD


def test_non_finite_in_ignored_field_is_fine() -> None:
    value = _with(1, extra=1.0).replace(b'"extra":1.0', b'"extra":Infinity')
    out = _decode([value])
    assert len(out) == 1


def test_payload_cap_truncates_dead_letter_copy() -> None:
    big = _with(3, user_id="y" * 500)
    out = _decode([big], max_payload_bytes=200, dlq_payload_cap=100)
    (letter,) = out.dead_letters
    assert letter.reason == "payload_too_large"
    assert letter.value == big[:100]
    assert f"value truncated to 100 of {len(big)} bytes" in letter.detail
    assert f"payload is {len(big)} bytes, max_payload_bytes is 200" in letter.detail


def test_payload_exactly_at_limit_is_accepted() -> None:
    value = dumps(good_event(1))
    out = _decode([value], max_payload_bytes=len(value))
    assert len(out) == 1


@pytest.mark.parametrize(
    ("fmt", "value", "expected_ms"),
    [
        ("epoch_millis", 1_700_000_000_123, 1_700_000_000_123),
        ("epoch_seconds", 1_700_000_000, 1_700_000_000_000),
        ("epoch_seconds", 1_700_000_000.5, 1_700_000_000_500),
        ("epoch_seconds", 1_700_000_000.0009, 1_700_000_000_000),
        ("iso8601", "2023-11-14T22:13:20.123Z", 1_700_000_000_123),
        ("iso8601", "2023-11-15T00:13:20.1239+02:00", 1_700_000_000_123),
    ],
)
def test_timestamp_formats(fmt: str, value: object, expected_ms: int) -> None:
    out = _decode([_with(0, ts=value)], timestamp_format=fmt)
    assert out.dead_letters == ()
    assert out.event_ts.tolist() == [expected_ms]


@pytest.mark.parametrize(
    ("fmt", "value", "reason"),
    [
        ("iso8601", "2023-11-14T22:13:20", "invalid_timestamp"),  # naive: zone never guessed
        ("iso8601", "14/11/2023", "invalid_timestamp"),
        ("iso8601", 1_700_000_000_000, "invalid_timestamp"),
        ("iso8601", "1999-12-31T23:59:59Z", "timestamp_out_of_range"),
        ("epoch_seconds", "1700000000", "invalid_timestamp"),
        ("epoch_seconds", 946_684_799.9995, "timestamp_out_of_range"),
        ("epoch_seconds", 1e300, "timestamp_out_of_range"),
        ("epoch_millis", 1.7e12, "invalid_timestamp"),
    ],
)
def test_timestamp_refusals(fmt: str, value: object, reason: str) -> None:
    out = _decode([_with(0, ts=value)], timestamp_format=fmt)
    assert [dl.reason for dl in out.dead_letters] == [reason]


def test_milliseconds_sent_to_an_epoch_seconds_source_are_named_as_such() -> None:
    out = _decode([_with(0, ts=BASE_TS)], timestamp_format="epoch_seconds")
    (letter,) = out.dead_letters
    assert letter.reason == "timestamp_in_future", letter
    assert f"it reads as epoch milliseconds, and this source takes epoch seconds ({BASE_TS // 1000})" in letter.detail
    far = _decode([_with(0, ts=NOW_MS // 1000 + 10**9)], timestamp_format="epoch_seconds")  # 30 years ahead
    assert "reads as epoch milliseconds" not in far.dead_letters[0].detail


def test_non_finite_epoch_seconds_is_invalid_timestamp() -> None:
    value = _with(0, ts=1.0).replace(b'"ts":1.0', b'"ts":NaN')
    out = _decode([value], timestamp_format="epoch_seconds")
    assert [dl.reason for dl in out.dead_letters] == ["invalid_timestamp"]


def test_timestamp_at_boundaries() -> None:
    values = [
        _with(0, ts=946_684_800_000),  # exactly 2000-01-01: accepted
        _with(1, ts=NOW_MS + 86_400_000),  # exactly now + skew: accepted
    ]
    out = _decode(values, allowed_lateness_ms=10**15)
    assert out.dead_letters == ()


def test_future_events_do_not_advance_watermark() -> None:
    values = [_with(0, ts=NOW_MS + 10**10), _with(1, ts=BASE_TS)]
    out = _decode(values)
    assert [dl.reason for dl in out.dead_letters] == ["timestamp_in_future"]
    assert out.event_ts.tolist() == [BASE_TS]
    assert out.top_ts_after == (BASE_TS,)


def test_late_event_respects_allowed_lateness_within_batch() -> None:
    ts = [BASE_TS, BASE_TS - 500, BASE_TS - 501, BASE_TS + 1000, BASE_TS + 499]
    out = _decode([_with(i, ts=t) for i, t in enumerate(ts)], allowed_lateness_ms=500)
    assert [(dl.offset, dl.reason) for dl in out.dead_letters] == [
        (2, "late_event"),
        (4, "late_event"),
    ]
    assert "below the partition watermark" in out.dead_letters[0].detail
    assert out.top_ts_after == (BASE_TS + 1000,)


def test_batch_without_valid_events_keeps_carried_max() -> None:
    marks = PartitionWatermarks.restore({0: [BASE_TS]})
    out = _decoder().decode(raw_batch([b"nope"]), marks)
    assert out.top_ts_after == (BASE_TS,)
    empty = _decoder().decode(raw_batch([b"nope"], partition=1), marks)
    assert empty.top_ts_after == ()


@pytest.mark.parametrize("outliers", [0, 1, 3])
@pytest.mark.parametrize("seed", range(6))
def test_late_logic_matches_brute_force_across_batches_and_restore(seed: int, outliers: int) -> None:
    rng = random.Random(seed)
    lateness = rng.choice([0, 50, 1000])
    n = 600
    event_times: list[int | None] = []
    values: list[bytes | None] = []
    t = BASE_TS
    for i in range(n):
        t += rng.randint(-100, 120)
        jitter = t - rng.randint(0, 3000) if rng.random() < 0.2 else t
        if rng.random() < 0.05:  # invalid for another reason: must not move the watermark
            values.append(_with(i, ts=NOW_MS + 10**12))
            event_times.append(None)
        elif rng.random() < 0.02:  # a valid outlier far ahead of the rest
            values.append(_with(i, ts=t + 500_000))
            event_times.append(t + 500_000)
        else:
            values.append(_with(i, ts=jitter))
            event_times.append(jitter)
    expected_late = brute_force_late(event_times, lateness, outliers)

    decoder = _decoder(allowed_lateness_ms=lateness, watermark_outliers=outliers)
    marks = PartitionWatermarks()
    got_late: list[int] = []
    start = 0
    while start < n:
        size = rng.randint(1, 80)
        chunk = values[start : start + size]
        out = decoder.decode(raw_batch(chunk, partition=2, first_offset=start), marks)
        got_late += [dl.offset for dl in out.dead_letters if dl.reason == "late_event"]
        valid_so_far = [e for e in event_times[: start + len(chunk)] if e is not None]
        assert out.top_ts_after == tuple(sorted(valid_so_far, reverse=True)[: outliers + 1])
        if rng.random() < 0.3:  # restart: restore from the stored times, as after a crash
            marks = PartitionWatermarks.restore({2: out.top_ts_after})
        start += len(chunk)
    assert got_late == [i for i, flag in enumerate(expected_late) if flag]


def test_watermarks_are_per_partition() -> None:
    decoder = _decoder()
    marks = PartitionWatermarks()
    decoder.decode(raw_batch([_with(0, ts=BASE_TS + 10_000)], partition=0), marks)
    out = decoder.decode(raw_batch([_with(1, ts=BASE_TS)], partition=1), marks)
    assert out.dead_letters == ()
    assert marks.snapshot() == {0: (BASE_TS + 10_000,), 1: (BASE_TS,)}


def test_restore_rejects_bad_entries() -> None:
    with pytest.raises(IoValueError, match="partition int >= 0"):
        PartitionWatermarks.restore({-1: [5]})
    with pytest.raises(IoValueError, match="sequence of int"):
        PartitionWatermarks.restore({0: 5})  # type: ignore[dict-item]


class _PlainStrEnum(str, Enum):  # noqa: UP042 - deliberately not a StrEnum
    # str() of this enum is "_PlainStrEnum.FLOAT", not "float": the decoder must use .value.
    FLOAT = "float"
    STRING = "string"


def test_schema_types_as_enum_plain_str_and_python_type() -> None:
    schema = {"amount": _PlainStrEnum.FLOAT, "user_id": str, "currency": _PlainStrEnum.STRING}
    out = _decode([dumps(good_event(1))], schema=schema)
    assert out.columns["amount"].dtype == np.float64
    assert out.columns["user_id"].tolist() == ["u1"]


def test_real_event_source_is_accepted() -> None:
    from engine.definitions.source import EventSource

    source = EventSource(
        name="tx",
        topic="transactions",
        timestamp_field="ts",
        schema={"user_id": "string", "amount": float, "items": "int", "card_present": "bool"},
    )
    decoder = Decoder(source, now_ms=lambda: NOW_MS)
    out = decoder.decode(raw_batch([dumps(good_event(4)), b"{}"]), PartitionWatermarks())
    assert len(out) == 1
    assert out.dead_letters[0].reason == "missing_field"
    assert out.columns["items"].tolist() == [good_event(4)["items"]]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"schema": {"a": "decimal"}}, "field 'a': expected a type in"),
        ({"timestamp_format": "unix"}, "field 'timestamp_format'"),
    ],
)
def test_bad_source_configuration_is_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(IoValueError, match=message):
        _decoder(**overrides)


def test_raw_batch_validation() -> None:
    with pytest.raises(IoValueError, match="strictly increasing"):
        RawBatch("t", 0, np.array([3, 2], dtype=np.int64), [None, None], [b"", b""])
    with pytest.raises(IoValueError, match="field 'values'"):
        RawBatch("t", 0, np.array([1, 2], dtype=np.int64), [None, None], [b""])
    with pytest.raises(TypeError, match="numpy int64"):
        RawBatch("t", 0, np.array([1, 2], dtype=np.int32), [None, None], [b"", b""])
