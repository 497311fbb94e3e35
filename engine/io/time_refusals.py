"""The decoder's event-time refusals (docs/semantics.md section 5): events too far in the
future of the wall clock, and late events below their partition's watermark.

Both mark refused rows in ``refused`` (row -> (reason, detail); the first reason wins)
and clear them in ``keep``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from engine.io.batches import DeadLetterReason
from engine.io.timestamps import MIN_EVENT_TS_MS
from engine.io.watermarks import PartitionWatermarks, ordinal, rank_th_before
from engine.timefmt import NO_EVENT_TS, duration_text, time_text

_R = DeadLetterReason


def refuse_future(
    event_ts: npt.NDArray[np.int64],
    keep: npt.NDArray[np.bool_],
    refused: dict[int, tuple[str, str]],
    now: int,
    max_future_skew_ms: int,
    timestamp_field: str,
    timestamp_format: str = "",
) -> None:
    """Refuse the kept events more than ``max_future_skew_ms`` after the wall clock ``now``."""
    bound = now + max_future_skew_ms
    future = keep & (event_ts > bound)
    if future.any():
        for i in np.flatnonzero(future).tolist():
            ts = int(event_ts[i])
            refused[i] = (
                _R.TIMESTAMP_IN_FUTURE,
                f"timestamp field '{timestamp_field}': event time {time_text(ts)} "
                f"is more than max_future_skew {duration_text(max_future_skew_ms)} after the wall "
                f"clock {time_text(now)}{_unit_hint(timestamp_format, ts, bound)}",
            )
        keep &= ~future


def _unit_hint(timestamp_format: str, ts: int, bound: int) -> str:
    """The likeliest mistake behind a far-future epoch_seconds time: epoch milliseconds
    (the value read as milliseconds is a time before the bound)."""
    if timestamp_format == "epoch_seconds" and MIN_EVENT_TS_MS <= ts // 1000 <= bound:
        return f"; it reads as epoch milliseconds, and this source takes epoch seconds ({ts // 1_000_000})"
    return ""


def refuse_late(
    partition: int,
    event_ts: npt.NDArray[np.int64],
    keep: npt.NDArray[np.bool_],
    refused: dict[int, tuple[str, str]],
    watermarks: PartitionWatermarks,
    lateness: int,
    rank: int,
) -> tuple[int, ...]:
    """Refuse the kept events below the partition's watermark, advance it, and return the
    partition's rank largest event times after the batch."""
    carried = watermarks.top_ts(partition)
    valid = np.flatnonzero(keep)
    if len(valid) == 0:
        return carried
    ts_valid = event_ts[valid]
    # The largest earlier time bounds the rank-th largest from above: only events below
    # it can be late, and usually there are none, so the exact rank-th is rarely needed.
    running = np.maximum.accumulate(ts_valid)
    before = np.empty_like(ts_valid)
    before[0] = carried[0] if carried else NO_EVENT_TS
    np.maximum(running[:-1], before[0], out=before[1:])
    # e < before - lateness, written without subtracting from the int64 minimum.
    late = ts_valid + lateness < before
    if late.any() and rank > 1:
        before, late = rank_th_before(carried, ts_valid, rank, lateness)
    if late.any():
        for j in np.flatnonzero(late).tolist():
            i = int(valid[j])
            refused[i] = (
                _R.LATE_EVENT,
                f"event time {time_text(int(ts_valid[j]))} is below the partition watermark "
                f"{time_text(int(before[j]) - lateness)} (the {ordinal(rank)} largest earlier event "
                f"time {time_text(int(before[j]))} minus allowed_lateness {duration_text(lateness)})",
            )
        keep[valid[late]] = False
    # Late events lie below the rank-th largest time, so adding them changes nothing.
    if len(ts_valid) > rank:
        ts_valid = np.partition(ts_valid, len(ts_valid) - rank)[-rank:]
    return watermarks.advance(partition, ts_valid.tolist(), rank)
