"""The likely cause of one mismatch between streamfeat and the baseline (docs/shadow.md).

Checked in this order; the first that holds is the cause:

1. ``missing_entity``: one side has no record of the entity of the feature's view (every
   feature of that view NOT_FOUND in the row) while the other has one.
2. ``request_time``: the baseline equals streamfeat's value at the moment the baseline
   answered (one that ignores ``as_of``, as Feast does, answers "now"): a value that counts time
   to the request (``time_since_last``) or a window that slid between the two requests.
3. ``null_vs_default``: one side is null, the other a default (0, 0.0, false, "").
4. ``unit_or_time_zone``: the values differ by a unit (the baseline in seconds or
   microseconds where streamfeat has milliseconds) or by a whole number of hours (up to
   14: a time-zone offset on a timestamp).
5. ``window_boundary``: the baseline equals streamfeat's value with the window moved by
   one or two tiles of the view, or aligned to the tile start.
6. ``staleness``: the baseline equals an older streamfeat value (5 minutes to 1 day).
7. ``unexplained``: none of these (the example is kept for a human to read).

(``not_in_baseline`` is given by the runner when the baseline does not answer the feature.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeGuard

from engine.exact_doubles import FLOAT_TOLERANCE
from engine.timefmt import duration_text

CAUSES: dict[str, str] = {
    "missing_entity": "one side has no record of the entity",
    "request_time": "the baseline equals streamfeat's value at the moment the baseline answered",
    "null_vs_default": "one side is null, the other a default (0, empty, false)",
    "unit_or_time_zone": "the values differ by a unit (ms vs s) or a whole-hour offset",
    "window_boundary": "the baseline equals streamfeat's value with the window a tile or two off",
    "staleness": "the baseline equals an older streamfeat value",
    "not_in_baseline": "the baseline does not answer this feature",
    "unexplained": "none of the known causes",
}
HOUR_MS = 3_600_000
MAX_ZONE_OFFSET_HOURS = 14
STALE_SHIFTS_MS = (
    -5 * 60_000,
    -15 * 60_000,
    -30 * 60_000,
    -HOUR_MS,
    -2 * HOUR_MS,
    -6 * HOUR_MS,
    -12 * HOUR_MS,
    -24 * HOUR_MS,
)
NO_VALUE = object()  # a probe that could not be answered (refused as_of, failed request)
Probe = Callable[[int], object]  # shift in ms from the request's as_of -> streamfeat's value then, or NO_VALUE


@dataclass(frozen=True)
class Tolerance:
    """Numbers are equal when ``|a - b| <= absolute + relative * |b|``; by default within
    the last-bits tolerance of docs/semantics.md (1e-9 both), which two correct
    evaluations of one value may differ by; ``Tolerance(0, 0)`` is exact."""

    absolute: float = FLOAT_TOLERANCE
    relative: float = FLOAT_TOLERANCE

    def __post_init__(self) -> None:
        for name in ("absolute", "relative"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise ValueError(f"Tolerance.{name}: expected a number >= 0, got {value!r}")

    def equal(self, a: object, b: object) -> bool:
        if _number(a) and _number(b):
            return bool(abs(a - b) <= self.absolute + self.relative * abs(b))
        return type(a) is type(b) and bool(a == b)


@dataclass(frozen=True)
class Verdict:
    cause: str
    evidence: str

    def __post_init__(self) -> None:
        if self.cause not in CAUSES:
            raise ValueError(f"Verdict.cause: expected one of {sorted(CAUSES)}, got {self.cause!r}")


def _number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_default(value: object) -> bool:
    return value is not None and (value in (0, "") or value is False)


def _unit_or_zone(ours: object, theirs: object, tolerance: Tolerance) -> str | None:
    if _number(ours) and _number(theirs) and ours != 0 and theirs != 0:
        return _numbers_unit_or_zone(ours, theirs, tolerance)
    return None


def _numbers_unit_or_zone(ours: float, theirs: float, tolerance: Tolerance) -> str | None:
    if abs(ours) >= 1000:  # seconds truncated from milliseconds lose up to 999 ms
        scaled = theirs * 1000
        if tolerance.equal(scaled, ours) or 0 <= ours - scaled < 1000:
            return f"the baseline is in seconds where streamfeat has milliseconds (x1000 = {scaled:g})"
    if abs(theirs) >= 1000 and (tolerance.equal(theirs / 1000, ours) or 0 <= theirs / 1000 - ours < 1):
        return f"the baseline is in microseconds where streamfeat has milliseconds (/1000 = {theirs / 1000:g})"
    difference = theirs - ours
    if isinstance(difference, int) or float(difference).is_integer():
        hours, rest = divmod(abs(int(difference)), HOUR_MS)
        if rest == 0 and 1 <= hours <= MAX_ZONE_OFFSET_HOURS:
            return f"the baseline is {'+' if difference > 0 else '-'}{hours} h off (a time-zone offset)"
    return None


def boundary_shifts(as_of_ms: int, interval_ms: int) -> tuple[int, ...]:
    """Shifts that move a window by a tile or two, or align it to its tile's start."""
    into_tile = as_of_ms % interval_ms
    shifts = [-interval_ms, interval_ms, -2 * interval_ms, 2 * interval_ms]
    if into_tile:
        shifts += [-into_tile, -into_tile - 1]
    return tuple(dict.fromkeys(shifts))


def _answer_time_shifts(ours: object, theirs: object, answered: tuple[int, int]) -> tuple[int, ...]:
    """Moments (shifts from as_of) at which the baseline may have evaluated its answer: the
    one a time-counting value points at, then both ends of the time it took to answer."""
    low, high = answered
    if high <= 0:
        return ()
    shifts = []
    if _number(ours) and _number(theirs) and float(theirs - ours).is_integer() and low <= theirs - ours <= high:
        shifts.append(int(theirs - ours))
    shifts += [max(low, 0), high]
    return tuple(s for s in dict.fromkeys(shifts) if s > 0)


def _shift_text(shift_ms: int) -> str:
    return f"{'+' if shift_ms > 0 else '-'}{duration_text(abs(shift_ms))}"


def classify(
    ours: object,
    theirs: object,
    *,
    ours_row_missing: bool,
    theirs_row_missing: bool,
    as_of_ms: int,
    interval_ms: int,
    tolerance: Tolerance,
    probe: Probe,
    baseline_answered: tuple[int, int] = (0, 0),
) -> Verdict:
    """The cause of ``ours`` (streamfeat) != ``theirs`` (baseline), with the evidence found.

    ``baseline_answered``: the shifts from ``as_of`` (ms) between which the baseline was
    asked and answered."""
    if theirs_row_missing and not ours_row_missing:
        return Verdict(
            "missing_entity", "the baseline has no record of this entity (every feature of the view NOT_FOUND)"
        )
    if ours_row_missing and not theirs_row_missing:
        return Verdict(
            "missing_entity", "streamfeat has no record of this entity (every feature of the view NOT_FOUND)"
        )
    # Evidence (streamfeat's own value at the baseline's moment) before the heuristics.
    for shift in _answer_time_shifts(ours, theirs, baseline_answered):
        if tolerance.equal(probe(shift), theirs):
            return Verdict(
                "request_time",
                f"equals streamfeat's value at as_of {_shift_text(shift)}, while the baseline was "
                f"answering (asked {_shift_text(baseline_answered[0])} to {_shift_text(baseline_answered[1])} "
                "after as_of, answering now)",
            )
    if (ours is None and _is_default(theirs)) or (theirs is None and _is_default(ours)):
        side = "streamfeat" if ours is None else "the baseline"
        return Verdict(
            "null_vs_default", f"{side} answers null where the other answers {theirs if ours is None else ours!r}"
        )
    unit = _unit_or_zone(ours, theirs, tolerance)
    if unit is not None:
        return Verdict("unit_or_time_zone", unit)
    for shift in boundary_shifts(as_of_ms, interval_ms):
        then = probe(shift)
        if then is not NO_VALUE and tolerance.equal(then, theirs):
            return Verdict(
                "window_boundary",
                f"equals streamfeat's value at as_of {_shift_text(shift)} "
                f"(the view's tile is {duration_text(interval_ms)})",
            )
    for shift in STALE_SHIFTS_MS:
        if abs(shift) <= 2 * interval_ms:
            continue
        then = probe(shift)
        if then is not NO_VALUE and tolerance.equal(then, theirs):
            return Verdict("staleness", f"equals streamfeat's value {duration_text(-shift)} earlier")
    return Verdict("unexplained", "no unit, offset, window shift or older value explains it")
