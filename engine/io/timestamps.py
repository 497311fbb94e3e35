"""Event-time parsing (docs/semantics.md sections 1 and 5): the one definition used by
the stream decoder and by the Parquet-history backfill.

``epoch_millis`` integers are taken as they are; ``epoch_seconds`` numbers are floored to
milliseconds; ``iso8601`` strings must carry an offset or ``Z`` (a time zone is never
guessed) and are floored to milliseconds. Times outside
``[MIN_EVENT_TS_MS, MAX_EVENT_TS_MS]`` are refused.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from engine.array_types import AnyArray
from engine.exact_doubles import MAX_EXACT_INTEGER
from engine.exceptions import NaiveTimeError, NotIsoTimeError
from engine.io.batches import DeadLetterReason
from engine.io.exceptions import IoValueError
from engine.timefmt import iso_epoch_ms
from engine.wording import shortened

#: 2000-01-01T00:00:00Z in milliseconds: earlier event times are refused.
MIN_EVENT_TS_MS = 946_684_800_000
#: Event times beyond 2**53 ms are refused (they stop being exact as float64 positions).
MAX_EVENT_TS_MS = MAX_EXACT_INTEGER
TIMESTAMP_FORMATS = ("epoch_millis", "epoch_seconds", "iso8601")
# 2100-01-01T00:00:00Z: below it, an out-of-range millisecond value that reads as a time
# once multiplied by 1000 is likely epoch seconds (900000000000 is not: it is 1998 in ms).
_YEAR_2100_MS = 4_102_444_800_000

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1

_ACCEPTED: dict[str, frozenset[type]] = {
    "epoch_millis": frozenset({int}),
    "epoch_seconds": frozenset({int, float}),
    "iso8601": frozenset({str}),
}
# numpy dtype kinds a column of each format may arrive as (backfill reads columns).
_ACCEPTED_KINDS: dict[str, str] = {"epoch_millis": "i", "epoch_seconds": "if", "iso8601": ""}
_EXPECTED = {
    "epoch_millis": "an integer of epoch milliseconds",
    "epoch_seconds": "a number of epoch seconds",
    "iso8601": "an ISO 8601 string with an offset or Z",
}

Problem = tuple[DeadLetterReason, str]


def show_value(value: object) -> str:
    """``<type> <short repr>`` of a bad value for error and dead-letter details."""
    text = shortened(repr(value))
    if isinstance(value, float) and not math.isfinite(value):
        return f"non-finite number {text}"
    return f"{type(value).__name__} {text}"


@dataclass(frozen=True)
class ParsedTimes:
    """Event times in ms (0 where refused) and, per refused row, its first problem."""

    ts_ms: npt.NDArray[np.int64]
    problems: dict[int, Problem]


def parse_event_times(values: Sequence[object] | AnyArray, fmt: str, field: str) -> ParsedTimes:
    """Parse one timestamp field of many events; never raises on bad values.

    ``values`` is a list of decoded JSON values or a numpy column. Each refused row gets
    one problem: ``invalid_timestamp`` (wrong type, non-finite, not ISO 8601, no
    offset) or ``timestamp_out_of_range``.
    """
    if fmt not in _ACCEPTED:
        raise IoValueError(f"timestamp field '{field}': format: expected one of {TIMESTAMP_FORMATS}, got {fmt!r}")
    problems: dict[int, Problem] = {}
    # Any: decoded JSON values checked by type() against the format's kinds below, a narrowing
    # mypy cannot follow; the helpers then compare or parse them.
    vals: list[Any] | AnyArray
    if isinstance(values, np.ndarray) and values.dtype.kind in _ACCEPTED_KINDS[fmt]:
        vals = values
    else:
        vals = list(values)
        accepted = _ACCEPTED[fmt]
        if not set(map(type, vals)) <= accepted:
            for i, v in enumerate(vals):
                if type(v) not in accepted:
                    problems[i] = _invalid(field, f"expected {_EXPECTED[fmt]}, got {show_value(v)}")
                    vals[i] = 0
    if fmt == "epoch_millis":
        ts_ms, out_of_range = _millis(vals)
    elif fmt == "epoch_seconds":
        ts_ms, out_of_range, non_finite = _seconds(vals)
        for i in np.flatnonzero(non_finite).tolist():
            problems.setdefault(i, _invalid(field, f"expected {_EXPECTED[fmt]}, got {show_value(vals[i])}"))
    else:
        ts_ms, out_of_range = _iso(vals, field, problems)
    out_of_range |= (ts_ms < MIN_EVENT_TS_MS) | (ts_ms > MAX_EVENT_TS_MS)
    if out_of_range.any():
        for i in np.flatnonzero(out_of_range).tolist():
            problems.setdefault(
                i,
                (
                    DeadLetterReason.TIMESTAMP_OUT_OF_RANGE,
                    f"timestamp field '{field}': value {show_value(_plain(vals[i]))} is outside "
                    f"[{MIN_EVENT_TS_MS}, 2**53] ms (2000-01-01 .. 2**53 ms){_unit_hint(fmt, _plain(vals[i]))}",
                ),
            )
    return ParsedTimes(ts_ms, problems)


def _unit_hint(fmt: str, value: object) -> str:
    """The likeliest mistake behind an out-of-range epoch_millis time: epoch seconds (the
    value is in range once multiplied by 1000)."""
    if fmt != "epoch_millis" or isinstance(value, bool) or not isinstance(value, int):
        return ""
    if MIN_EVENT_TS_MS <= value * 1000 < _YEAR_2100_MS:  # a plausible time once read as seconds
        return f"; it reads as epoch seconds, and this source takes epoch milliseconds ({value * 1000})"
    return ""


def _invalid(field: str, detail: str) -> Problem:
    return DeadLetterReason.INVALID_TIMESTAMP, f"timestamp field '{field}': {detail}"


def _plain(value: object) -> object:
    # numpy scalars of a column show like the JSON values of a stream record.
    return value.item() if isinstance(value, np.generic) else value


def _millis(
    # Any: values of accepted kinds (see parse_event_times), compared to the int64 bounds.
    vals: list[Any] | AnyArray,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    try:
        return np.array(vals, dtype=np.int64), np.zeros(len(vals), dtype=np.bool_)
    except OverflowError:
        # Integers beyond int64 are far beyond 2**53 ms: out of range, not malformed.
        big = np.array([not _INT64_MIN <= v <= _INT64_MAX for v in vals], dtype=np.bool_)
        safe = [0 if b else v for v, b in zip(vals, big.tolist(), strict=True)]
        return np.array(safe, dtype=np.int64), big


def _seconds(
    # Any: values of accepted kinds (see parse_event_times).
    vals: list[Any] | AnyArray,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Epoch seconds floored to milliseconds, the out-of-range mask and the non-finite mask."""
    # float64 is exact here: any in-range value times 1000 stays below 2**53.
    seconds = np.array(vals, dtype=np.float64)
    non_finite = ~np.isfinite(seconds)
    with np.errstate(invalid="ignore", over="ignore"):
        ms = np.floor(seconds * 1000.0)
        bad = ~((ms >= MIN_EVENT_TS_MS) & (ms <= MAX_EVENT_TS_MS))
    ms[bad] = 0.0
    return ms.astype(np.int64), bad & ~non_finite, non_finite


def _iso(
    # Any: values of accepted kinds (see parse_event_times), passed to iso_epoch_ms.
    vals: list[Any] | AnyArray,
    field: str,
    problems: dict[int, Problem],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    out = np.zeros(len(vals), dtype=np.int64)
    for i, v in enumerate(vals):
        if i in problems:
            continue
        try:
            out[i] = iso_epoch_ms(v)
        except NotIsoTimeError as exc:
            problems[i] = _invalid(field, f"{show_value(v)} is not ISO 8601 ({exc})")
        except NaiveTimeError:
            problems[i] = _invalid(
                field, f"{show_value(v)} has no UTC offset; naive times are refused (add Z or +HH:MM)"
            )
    return out, np.zeros(len(vals), dtype=np.bool_)
