"""Odd but valid ISO 8601 times give their exact instant; impossible ones are dead letters
(docs/semantics.md sections 1 and 5). Expected instants were computed with GNU date."""

from __future__ import annotations

import pytest

from engine.io.decoder import Decoder
from engine.io.watermarks import PartitionWatermarks
from tests.io.io_support import dumps, good_event, raw_batch
from tests.io.test_io_decoder import _decoder

LEAP_NOON_MS = 1_709_208_000_000  # 2024-02-29T12:00:00Z


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("2024-02-29T12:00:00Z", LEAP_NOON_MS),
        ("2024-02-29T12:00:00+00:00", LEAP_NOON_MS),
        ("2024-02-29T12:00:00-00:00", LEAP_NOON_MS),
        ("2024-02-29 12:00:00Z", LEAP_NOON_MS),  # a space instead of T
        ("20240229T120000Z", LEAP_NOON_MS),  # basic format
        ("2024-02-29T12:00:00+05:45", 1_709_187_300_000),
        ("2024-02-29T12:00:00+14:00", 1_709_157_600_000),
        ("2024-02-29T12:00:00-12:00", 1_709_251_200_000),
        ("2024-02-29T12:00:00+05:30:15", 1_709_188_185_000),  # an offset with seconds
        ("2024-02-29T12:00:00.9999999Z", LEAP_NOON_MS + 999),  # floored, never rounded up
        ("2024-02-29T12:00:00.0005+00:00", LEAP_NOON_MS),
    ],
)
def test_odd_iso_times_give_their_exact_instant(text: str, ms: int) -> None:
    decoder: Decoder = _decoder(timestamp_format="iso8601")
    out = decoder.decode(raw_batch([dumps({**good_event(0), "ts": text})]), PartitionWatermarks())
    assert out.dead_letters == ()
    assert out.event_ts.tolist() == [ms]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("2025-02-29T12:00:00Z", "not ISO 8601"),  # no leap day in 2025
        ("2024-02-29T24:00:00Z", "not ISO 8601"),
        ("2024-02-29T12:00:60Z", "not ISO 8601"),  # leap seconds are not representable
        ("2024-02-29T12:00:00+24:00", "not ISO 8601"),
        ("2024-02-29T12:00:00", "no UTC offset"),
        (" 2024-02-29T12:00:00Z", "not ISO 8601"),
        ("1709208000000", "not ISO 8601"),
        ("", "not ISO 8601"),
    ],
)
def test_impossible_iso_times_are_dead_letters(text: str, words: str) -> None:
    decoder: Decoder = _decoder(timestamp_format="iso8601")
    out = decoder.decode(raw_batch([dumps({**good_event(0), "ts": text})]), PartitionWatermarks())
    (letter,) = out.dead_letters
    assert letter.reason == "invalid_timestamp" and words in letter.detail, letter.detail


@pytest.mark.parametrize(
    ("seconds", "ms"),
    [
        (1_700_000_000.001, 1_700_000_000_001),
        (1_700_000_000.999, 1_700_000_000_999),
        (1_700_000_000, 1_700_000_000_000),
    ],
)
def test_epoch_seconds_floor_the_written_milliseconds(seconds: float, ms: int) -> None:
    decoder: Decoder = _decoder(timestamp_format="epoch_seconds")
    out = decoder.decode(raw_batch([dumps({**good_event(0), "ts": seconds})]), PartitionWatermarks())
    assert out.event_ts.tolist() == [ms]


@pytest.mark.parametrize(
    ("raw_ts", "reason"),
    [
        (b"0", "timestamp_out_of_range"),
        (b"-1", "timestamp_out_of_range"),
        (b"100000000000000000000", "invalid_timestamp"),
    ],
)
def test_epoch_times_at_zero_negative_and_beyond_64_bits_are_dead_letters(raw_ts: bytes, reason: str) -> None:
    doc = dumps({**good_event(0), "ts": "__ts__"}).replace(b'"__ts__"', raw_ts)
    (letter,) = _decoder().decode(raw_batch([doc]), PartitionWatermarks()).dead_letters
    assert letter.reason == reason, letter


@pytest.mark.parametrize("seconds", [LEAP_NOON_MS // 1000, 1_796_515_984])
def test_epoch_seconds_sent_for_milliseconds_are_named_with_the_milliseconds_meant(seconds: int) -> None:
    """A new user's `date +%s` where the example source reads `date +%s%3N`: the dead letter
    says the value reads as seconds and gives the milliseconds it stands for."""
    (letter,) = (
        _decoder().decode(raw_batch([dumps({**good_event(0), "ts": seconds})]), PartitionWatermarks()).dead_letters
    )
    assert letter.reason == "timestamp_out_of_range", letter
    assert letter.detail.endswith(
        f"; it reads as epoch seconds, and this source takes epoch milliseconds ({seconds * 1000})"
    ), letter.detail


@pytest.mark.parametrize("value", [5, 900_000_000_000])
def test_an_out_of_range_time_that_is_no_unit_mistake_gets_no_unit_hint(value: int) -> None:
    """900000000000 is 1998 in milliseconds; read as seconds it would be the year 30,490,
    so no hint calls it epoch seconds."""
    (letter,) = (
        _decoder().decode(raw_batch([dumps({**good_event(0), "ts": value})]), PartitionWatermarks()).dead_letters
    )
    assert letter.reason == "timestamp_out_of_range" and "epoch seconds" not in letter.detail, letter
