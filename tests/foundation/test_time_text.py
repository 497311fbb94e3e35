"""One ISO 8601 reader (engine.timefmt.iso_epoch_ms): the stream decoder, the feature
server's ``as_of`` and the command line's time flags give the same milliseconds for
the same text and refuse the same texts, each naming its own field."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.exceptions import ConfigError, NaiveTimeError, NotIsoTimeError
from engine.io.batches import DeadLetterReason
from engine.io.timestamps import parse_event_times
from engine.timefmt import iso_epoch_ms, parse_cli_time
from serving.exceptions import InvalidRequest
from serving.request import parse_as_of
from tests.reference import epoch_ms_of

moments = st.datetimes(min_value=datetime(2000, 1, 2), max_value=datetime(2200, 1, 1))
offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(lambda m: timezone(timedelta(minutes=m)))


@given(moments, offsets, st.sampled_from(["auto", "milliseconds", "microseconds", "seconds"]))
def test_every_reader_gives_the_reference_milliseconds(naive: datetime, zone: timezone, spec: str) -> None:
    moment = naive.replace(tzinfo=zone)
    text = moment.isoformat(timespec=spec)
    if zone.utcoffset(None) == timedelta(0) and spec != "auto":
        text = text.replace("+00:00", "Z")
    want = epoch_ms_of(datetime.fromisoformat(text))
    assert iso_epoch_ms(text) == want
    assert parse_as_of(text) == want
    assert parse_cli_time(text, "--end") == want
    parsed = parse_event_times([text], "iso8601", "ts")
    assert parsed.problems == {} and parsed.ts_ms.tolist() == [want]


@pytest.mark.parametrize("text", ["2026-01-01T00:00:00", "2026-01-01 12:30", "2026-01-01"])
def test_a_naive_time_is_refused_by_every_reader_naming_its_field(text: str) -> None:
    with pytest.raises(NaiveTimeError, match="no UTC offset"):
        iso_epoch_ms(text)
    with pytest.raises(InvalidRequest, match=r"field 'as_of'.*no offset") as served:
        parse_as_of(text)
    assert served.value.hint is not None and "never guessed" in served.value.hint
    with pytest.raises(ConfigError, match=r"--start: .* has no time zone offset") as flag:
        parse_cli_time(text, "--start")
    assert flag.value.hint is not None and f"{text}Z" in flag.value.hint
    problems = parse_event_times([text], "iso8601", "ts").problems
    assert problems[0][0] == DeadLetterReason.INVALID_TIMESTAMP
    assert "timestamp field 'ts'" in problems[0][1] and "no UTC offset" in problems[0][1]


@pytest.mark.parametrize("text", ["yesterday", "2026-13-01T00:00:00Z", "1767225600000", ""])
def test_text_that_is_not_iso_8601_is_refused_by_every_reader(text: str) -> None:
    with pytest.raises(NotIsoTimeError):
        iso_epoch_ms(text)
    with pytest.raises(InvalidRequest, match="field 'as_of': expected epoch milliseconds or an ISO-8601 time"):
        parse_as_of(text)
    with pytest.raises(ConfigError, match="--end: expected an ISO 8601 time"):
        parse_cli_time(text, "--end")
    problems = parse_event_times([text], "iso8601", "ts").problems
    assert problems[0][0] == DeadLetterReason.INVALID_TIMESTAMP and "is not ISO 8601" in problems[0][1]
