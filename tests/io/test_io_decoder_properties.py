"""Property tests: the decoder never raises and accounts for every record exactly once."""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from engine.io.batches import DeadLetterReason
from engine.io.decoder import Decoder
from engine.io.watermarks import PartitionWatermarks
from tests.int_strategies import json_ints
from tests.io.io_support import BASE_TS, NOW_MS, FakeSource, good_event, raw_batch
from tests.reference import EXACT_DOUBLE_LIMIT

_REASONS = {r.value for r in DeadLetterReason}
_FIELDS = ["user_id", "amount", "items", "card_present", "currency", "ts", "other"]

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    json_ints(),
    st.integers(min_value=BASE_TS - 10**6, max_value=BASE_TS + 10**6),
    st.sampled_from([946_684_799_999, 946_684_800_000, 2**53, 2**53 + 1, 2**63, -1]),
    st.floats(),  # NaN/Infinity too: json.dumps writes them as bare words
    st.text(max_size=8),
)
_json_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)


def _dumps(value: object) -> bytes:
    # stdlib json: writes ints beyond 64 bits and NaN/Infinity, which orjson refuses to write.
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


@st.composite
def _payload(draw: st.DrawFn) -> bytes | None:
    kind = draw(st.integers(0, 6))
    if kind == 0:
        return draw(st.none() | st.binary(max_size=40))
    if kind == 1:
        return _dumps(draw(_json_values))
    if kind == 2:  # a good event with some fields replaced or removed
        event: dict[str, Any] = good_event(draw(st.integers(0, 1000)))
        for field in draw(st.lists(st.sampled_from(_FIELDS), max_size=3)):
            if draw(st.booleans()):
                event.pop(field, None)
            else:
                event[field] = draw(_json_values)
        return _dumps(event)
    if kind == 5:  # timestamps near every boundary, in every representation
        event = good_event(draw(st.integers(0, 1000)))
        event["ts"] = draw(_timestamps)
        event["user_id"] = "x" * draw(st.integers(0, 250))  # sometimes beyond max_payload_bytes
        return _dumps(event)
    text = orjson.dumps(good_event(draw(st.integers(0, 1000)))).decode()
    if kind == 3:  # byte-level damage to a good document
        cut = draw(st.integers(0, len(text)))
        return (
            text[:cut] + draw(st.sampled_from(["NaN", "\x00", "}", "Infinity", "\\ud800", ""])) + text[cut:]
        ).encode("utf-8", "surrogatepass")
    return text.encode()


_timestamps = st.one_of(
    st.integers(min_value=-(2**64), max_value=2**64),
    st.integers(min_value=946_684_799_000, max_value=946_684_801_000),
    st.integers(min_value=NOW_MS - 10**9, max_value=NOW_MS + 2 * 10**8),
    st.integers(min_value=2**53 - 10, max_value=2**53 + 10),
    st.floats(min_value=946_684_799.0, max_value=(NOW_MS + 10**8) / 1000),
    st.floats(),
    st.datetimes().map(lambda d: d.isoformat()),
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.text(max_size=12),
)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    payloads=st.lists(_payload(), min_size=1, max_size=25),
    fmt=st.sampled_from(["epoch_millis", "epoch_seconds", "iso8601"]),
    lateness=st.sampled_from([0, 1000]),
    carried=st.none() | st.integers(BASE_TS - 10**6, BASE_TS + 10**6),
)
def test_decode_never_raises_and_partitions_every_record(
    payloads: list[bytes | None], fmt: str, lateness: int, carried: int | None
) -> None:
    source = FakeSource(timestamp_format=fmt, allowed_lateness_ms=lateness, max_payload_bytes=300)
    # ``items`` as an int field some view reads as a double: kept values are exact doubles.
    decoder = Decoder(source, now_ms=lambda: NOW_MS, dlq_payload_cap=50, exact_int_fields={"items"})
    marks = PartitionWatermarks.restore({} if carried is None else {0: [carried]})
    raw = raw_batch(payloads, first_offset=100)

    out = decoder.decode(raw, marks)

    assert len(out) + len(out.dead_letters) == len(raw)
    kept = set(out.offsets.tolist())
    refused = [dl.offset for dl in out.dead_letters]
    assert len(set(refused)) == len(refused)
    assert kept.isdisjoint(refused)
    assert kept | set(refused) == set(raw.offsets.tolist())
    for dl in out.dead_letters:
        assert dl.reason in _REASONS
        event(dl.reason)
        assert dl.value is None or len(dl.value) <= 50
    for column in out.columns.values():
        assert len(column) == len(out)
    assert all(abs(v) <= EXACT_DOUBLE_LIMIT for v in out.columns["items"].tolist())
    assert all(946_684_800_000 <= t <= NOW_MS + source.max_future_skew_ms for t in out.event_ts)
    assert out.top_ts_after == marks.top_ts(0)
