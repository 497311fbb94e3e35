"""Stream and backfill parse event times with one function (engine/io/timestamps.py):
the same values give the same milliseconds, and the same refusals."""

from __future__ import annotations

import polars as pl
import pytest

from engine.io.decoder import Decoder
from engine.io.watermarks import PartitionWatermarks
from engine.offline.exceptions import HistoryFileError
from engine.offline.history_files import _event_times
from tests.io.io_support import dumps, good_event, raw_batch
from tests.io.test_io_decoder import _decoder

# Ascending and in the past, so the stream's lateness and future checks pass them all.
CASES: dict[str, list[object]] = {
    "epoch_millis": [946_684_800_000, 1_700_000_000_123, 1_700_000_000_124],
    "epoch_seconds": [946_684_800.0, 1_700_000_000.0009, 1_700_000_000.5],
    "iso8601": ["2000-01-01T00:00:00+00:00", "2023-11-14T22:13:20.123Z", "2023-11-15T00:13:20.1239+02:00"],
}


def _stream(fmt: str, values: list[object]) -> list[int]:
    events = [dumps({**good_event(i), "ts": v}) for i, v in enumerate(values)]
    decoder: Decoder = _decoder(timestamp_format=fmt)
    out = decoder.decode(raw_batch(events), PartitionWatermarks())
    assert out.dead_letters == ()
    return list(out.event_ts.tolist())


@pytest.mark.parametrize("fmt", sorted(CASES))
def test_backfill_and_stream_read_the_same_times(fmt: str) -> None:
    values = CASES[fmt]
    column = pl.DataFrame({"ts": values})
    assert _event_times(column, "ts", fmt, "h.parquet").to_list() == _stream(fmt, values)


@pytest.mark.parametrize(
    ("fmt", "values", "detail"),
    [
        (
            "iso8601",
            ["2023-11-14T22:13:20Z", "2023-11-14T22:13:20"],
            "row 1: timestamp field 'ts': .* has no UTC offset",
        ),
        ("epoch_millis", [1_700_000_000_000, 5], "row 1: timestamp field 'ts': value int 5 is outside"),
        ("epoch_seconds", [float("nan"), 1.0], r"row 0: timestamp field 'ts': expected a number .*\(2 row"),
    ],
)
def test_backfill_refuses_what_the_stream_dead_letters(fmt: str, values: list[object], detail: str) -> None:
    with pytest.raises(HistoryFileError, match=detail):
        _event_times(pl.DataFrame({"ts": values}), "ts", fmt, "h.parquet")
