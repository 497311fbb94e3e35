"""Decode and validate raw Kafka batches into column arrays (docs/semantics.md sections 1 and 5).

Every raw record ends either as a row of the decoded columns or as exactly one ``DeadLetter``;
``decode`` never raises on bad input. Checks run in the order of ``DeadLetterReason`` and the
first failing check names the reason: payload size, JSON, object, then each schema field in
declared order (absent/null -> ``missing_field``, otherwise ``wrong_type``, then its declared
constraint: ``value_out_of_range`` / ``invalid_string``), then the timestamp field, its range,
the future bound and finally the partition watermark (the ``watermark_outliers + 1``-th largest
earlier valid event time minus the allowed lateness).

Speed: the whole batch decodes in C into typed field values (``engine.io.typed_records``);
only the records that path does not accept are parsed with ``orjson.loads`` one by one and
checked field by field, so their reasons and details are the same as if every record had
been. Column checks are whole-column type sets; per-row Python branching only happens for
fields that actually hold bad values.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from operator import itemgetter
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import orjson

from engine.clock import wall_clock_ms
from engine.io.batches import NO_EVENT_TS, DeadLetter, DeadLetterReason, DecodedBatch, RawBatch
from engine.io.exceptions import IoTypeError, IoValueError
from engine.io.timestamps import TIMESTAMP_FORMATS, parse_event_times, show_value
from engine.io.typed_records import TIMESTAMP_KINDS, TypedRecordDecoder

DEFAULT_DLQ_PAYLOAD_CAP = 64 * 1024

FIELD_KINDS = ("string", "int", "float", "bool")

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
# Placeholder object for records refused before their fields are looked at.
_NO_FIELDS: dict[str, Any] = {}
# When most of a batch falls back to orjson (a source whose records carry undeclared fields),
# the typed path only costs time: skip it for this many batches, then try again.
_TYPED_PAUSE_BATCHES = 32

#: The parsed object of each record checked field by field, by row.
RowObjects = list[dict[str, Any]] | dict[int, dict[str, Any]]

# Python types each declared kind accepts (bool is never an int or a float here).
_ACCEPTED: dict[str, frozenset[type]] = {
    "string": frozenset({str}),
    "int": frozenset({int}),
    "float": frozenset({float, int}),
    "bool": frozenset({bool}),
}
_PLACEHOLDER: dict[str, object] = {"string": "", "int": 0, "float": 0.0, "bool": False}
_DTYPE: dict[str, npt.DTypeLike] = {
    "string": object,
    "int": np.int64,
    "float": np.float64,
    "bool": np.bool_,
}
_PY_TYPE_KINDS: dict[object, str] = {str: "string", int: "int", float: "float", bool: "bool"}

_R = DeadLetterReason


class EventSourceLike(Protocol):
    """The attributes of ``engine.definitions.EventSource`` the decoder reads."""

    @property
    def name(self) -> str: ...
    @property
    def topic(self) -> str: ...
    @property
    def timestamp_field(self) -> str: ...
    @property
    def timestamp_format(self) -> Any: ...
    @property
    def schema(self) -> Mapping[str, Any]: ...
    @property
    def allowed_lateness_ms(self) -> int: ...
    @property
    def max_payload_bytes(self) -> int: ...
    @property
    def max_future_skew_ms(self) -> int: ...
    @property
    def watermark_outliers(self) -> int: ...
    @property
    def constraints(self) -> Mapping[str, Any]: ...


class PartitionWatermarks:
    """The largest valid event times seen per partition of one source (the watermark's memory).

    The watermark of a partition is its ``rank``-th largest valid event time minus the
    source's allowed lateness, where ``rank`` is the source's ``watermark_outliers + 1``
    (docs/semantics.md section 5). The decoder keeps the ``rank`` largest times here; they
    are stored with the applied offsets and handed back through ``restore`` on restart.
    """

    def __init__(self) -> None:
        self._top: dict[int, tuple[int, ...]] = {}

    @classmethod
    def restore(cls, top_ts: Mapping[int, Sequence[int]]) -> PartitionWatermarks:
        """State as of a resume point: ``{partition: largest event times through its applied
        offset}``."""
        marks = cls()
        for partition, times in top_ts.items():
            if (
                type(partition) is not int
                or partition < 0
                or isinstance(times, (str, bytes))
                or not isinstance(times, Sequence)
                or any(type(ts) is not int for ts in times)
            ):
                raise IoValueError(
                    f"PartitionWatermarks.restore: entry {partition!r}: expected "
                    f"{{partition int >= 0: sequence of int event times}}, got "
                    f"{partition!r}: {times!r}. Hint: pass the top event times stored with "
                    "each partition's applied offset."
                )
            if times:
                marks._top[partition] = tuple(sorted(times, reverse=True))
        return marks

    def top_ts(self, partition: int) -> tuple[int, ...]:
        """The partition's largest valid event times so far, descending."""
        return self._top.get(partition, ())

    def max_ts(self, partition: int) -> int:
        """Largest valid event time of the partition so far, ``NO_EVENT_TS`` if none."""
        top = self._top.get(partition)
        return top[0] if top else NO_EVENT_TS

    def advance(self, partition: int, times: Sequence[int], rank: int) -> tuple[int, ...]:
        """Record valid events at ``times``, keep the ``rank`` largest; returns them."""
        top = tuple(sorted((*self._top.get(partition, ()), *times), reverse=True)[:rank])
        if top:
            self._top[partition] = top
        return top

    def snapshot(self) -> dict[int, tuple[int, ...]]:
        """Copy of ``{partition: top event times}`` for the partitions seen so far."""
        return dict(self._top)


def _kind_of(declared: object, source_name: str, field: str) -> str:
    # Accept a str enum (value), a plain str, or a Python type, whichever definitions hands us.
    kind = _PY_TYPE_KINDS.get(declared)
    if kind is None:
        value = declared.value if isinstance(declared, Enum) else declared
        kind = value if isinstance(value, str) else None
    if kind not in FIELD_KINDS:
        raise IoValueError(
            f"EventSource '{source_name}': field '{field}': expected a type in {FIELD_KINDS}, "
            f"got {declared!r}. Hint: declare the schema with string/int/float/bool."
        )
    return kind


class _LenientHooks:
    """Marks whether the stdlib JSON parser met NaN/Infinity or an overflowing number."""

    def __init__(self) -> None:
        self.non_finite = False

    def constant(self, name: str) -> float:
        self.non_finite = True
        return float(name)

    def number(self, text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            self.non_finite = True
        return value


def _parse_non_finite(value: bytes) -> object | None:
    """The document when it is JSON except for NaN/Infinity/overflowing numbers, else None.

    Such documents are not JSON to orjson, but the contract refuses their non-finite fields as
    ``wrong_type``, so they are parsed leniently to find out which field holds one.
    """
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return None
    hooks = _LenientHooks()
    try:
        doc = json.loads(text, parse_constant=hooks.constant, parse_float=hooks.number)
    except (ValueError, RecursionError):
        return None
    return doc if hooks.non_finite else None


def _lone_surrogate(doc: object) -> str | None:
    """The first string (key or value) of ``doc`` holding a lone UTF-16 surrogate, else None.

    The stdlib parser accepts ``"\\ud800"`` where orjson refuses it; such a string is not
    Unicode text (it cannot be written as UTF-8, hashed for a distinct count or logged),
    so the record is refused like any other invalid JSON.
    """
    pending = [doc]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return item
    return None


@dataclass(frozen=True)
class _Bounds:
    """A field's declared ``Constraint`` in the form the decoder checks it."""

    low: float | None
    high: float | None
    min_length: int | None
    max_length: int | None
    allowed: re.Pattern[str] | None
    allowed_text: str | None

    @classmethod
    def of(cls, constraint: Any) -> _Bounds:
        chars = constraint.allowed_characters
        return cls(
            constraint.min,
            constraint.max,
            constraint.min_length,
            constraint.max_length,
            None if chars is None else re.compile(f"[{chars}]*"),
            chars,
        )

    def refuse(self, field: str, vals: list[Any], arr: np.ndarray, refused: dict[int, tuple[str, str]]) -> None:
        """Refuse every row whose value breaks the bounds (rows refused earlier keep their
        first reason)."""
        if arr.dtype.kind in "if":
            self._refuse_numbers(field, arr, refused)
        elif arr.dtype.kind == "O":
            self._refuse_strings(field, vals, refused)

    def _refuse_numbers(self, field: str, arr: np.ndarray, refused: dict[int, tuple[str, str]]) -> None:
        bad = np.zeros(len(arr), dtype=np.bool_)
        # NaN compares False both ways; non-finite floats are refused as wrong_type anyway.
        if self.low is not None:
            bad |= arr < self.low
        if self.high is not None:
            bad |= arr > self.high
        if not bad.any():
            return
        low = "-inf" if self.low is None else repr(self.low)
        high = "inf" if self.high is None else repr(self.high)
        _refuse_rows(
            refused,
            bad,
            _R.VALUE_OUT_OF_RANGE,
            lambda i: (
                f"field '{field}': value {arr[i].item()!r} is outside the declared range "
                f"[{low}, {high}] (EventSource constraints)"
            ),
        )

    def _refuse_strings(self, field: str, vals: list[Any], refused: dict[int, tuple[str, str]]) -> None:
        lengths = np.fromiter(map(len, vals), dtype=np.int64, count=len(vals))
        bad = np.zeros(len(vals), dtype=np.bool_)
        if self.min_length is not None:
            bad |= lengths < self.min_length
        if self.max_length is not None:
            bad |= lengths > self.max_length
        high = "inf" if self.max_length is None else self.max_length
        _refuse_rows(
            refused,
            bad,
            _R.INVALID_STRING,
            lambda i: (
                f"field '{field}': length {int(lengths[i])} is outside the declared "
                f"[{self.min_length or 0}, {high}] characters (EventSource constraints)"
            ),
        )
        if self.allowed is None:
            return
        fullmatch = self.allowed.fullmatch
        for i, v in enumerate(vals):
            if i not in refused and fullmatch(v) is None:
                refused[i] = (
                    _R.INVALID_STRING,
                    f"field '{field}': {show_value(v)} has characters outside the declared "
                    f"[{self.allowed_text}] (EventSource constraints)",
                )


def _refuse_rows(
    refused: dict[int, tuple[str, str]],
    bad: npt.NDArray[np.bool_],
    reason: str,
    detail: Callable[[int], str],
) -> None:
    """Refuse the ``bad`` rows not refused yet (the first reason wins)."""
    for i in np.flatnonzero(bad).tolist():
        if i not in refused:
            refused[i] = (reason, detail(i))


class Decoder:
    """Turns ``RawBatch`` items of one ``EventSource`` into ``DecodedBatch`` items.

    ``now_ms`` is the wall clock used for the ``timestamp_in_future`` bound (read once per
    batch); ``dlq_payload_cap`` caps the bytes copied into each dead letter. ``typed_path=False``
    parses every record with orjson (the reference the typed fast path is tested against).
    """

    def __init__(
        self,
        source: EventSourceLike,
        now_ms: Callable[[], int] = wall_clock_ms,
        *,
        dlq_payload_cap: int = DEFAULT_DLQ_PAYLOAD_CAP,
        typed_path: bool = True,
    ) -> None:
        name = str(source.name)
        fmt_raw = source.timestamp_format
        fmt = fmt_raw.value if isinstance(fmt_raw, Enum) else fmt_raw
        if fmt not in TIMESTAMP_FORMATS:
            raise IoValueError(
                f"EventSource '{name}': field 'timestamp_format': expected one of "
                f"{TIMESTAMP_FORMATS}, got {fmt_raw!r}. Hint: see docs/semantics.md section 1."
            )
        for attr in (
            "allowed_lateness_ms",
            "max_payload_bytes",
            "max_future_skew_ms",
            "watermark_outliers",
        ):
            got = getattr(source, attr)
            if type(got) is not int or got < 0:
                raise IoTypeError(
                    f"EventSource '{name}': field '{attr}': expected an int >= 0, got {got!r}. "
                    "Hint: use the EventSource from engine.definitions."
                )
        if type(dlq_payload_cap) is not int or dlq_payload_cap < 0:
            raise IoValueError(
                f"Decoder for source '{name}': field 'dlq_payload_cap': expected an int >= 0, "
                f"got {dlq_payload_cap!r}. Hint: the default is {DEFAULT_DLQ_PAYLOAD_CAP} bytes."
            )
        self.source_name = name
        self.topic = str(source.topic)
        self.timestamp_field = str(source.timestamp_field)
        self.timestamp_format: str = fmt
        self.fields: tuple[tuple[str, str], ...] = tuple(
            (str(field), _kind_of(declared, name, str(field))) for field, declared in source.schema.items()
        )
        self.allowed_lateness_ms = int(source.allowed_lateness_ms)
        self.max_payload_bytes = int(source.max_payload_bytes)
        self.max_future_skew_ms = int(source.max_future_skew_ms)
        #: The watermark follows the rank-th largest valid event time (semantics section 5).
        self.watermark_rank = int(source.watermark_outliers) + 1
        self.dlq_payload_cap = dlq_payload_cap
        self._now_ms = now_ms
        self._bounds = {
            str(field): _Bounds.of(constraint) for field, constraint in getattr(source, "constraints", {}).items()
        }
        self._typed = _typed_decoder(self.fields, self.timestamp_field, fmt) if typed_path else None
        self._typed_paused = 0

    # -- public -----------------------------------------------------------------------------

    def decode(self, raw: RawBatch, watermarks: PartitionWatermarks) -> DecodedBatch:
        """Decode one batch; advances ``watermarks`` for the batch's partition."""
        n = len(raw)
        refused: dict[int, tuple[str, str]] = {}  # row -> (reason, detail); first reason wins
        values, ts_values, objs = self._parse(raw.values, refused)
        columns = {field: self._column(values[field], objs, field, kind, refused) for field, kind in self.fields}
        event_ts = self._event_times(ts_values, objs, refused)

        keep = np.ones(n, dtype=np.bool_)
        if refused:
            keep[np.fromiter(refused, dtype=np.int64, count=len(refused))] = False
        self._refuse_future(event_ts, keep, refused)
        top_after = self._refuse_late(raw.partition, event_ts, keep, refused, watermarks)

        if len(refused):
            offsets = raw.offsets[keep]
            event_ts = event_ts[keep]
            columns = {field: arr[keep] for field, arr in columns.items()}
        else:
            offsets = raw.offsets
        return DecodedBatch(
            topic=raw.topic,
            partition=raw.partition,
            first_offset=int(raw.offsets[0]),
            last_offset=int(raw.offsets[-1]),
            top_ts_after=top_after,
            offsets=offsets,
            event_ts=event_ts,
            columns=columns,
            dead_letters=self._dead_letters(raw, refused),
        )

    # -- stages -----------------------------------------------------------------------------

    def _parse(
        self, values: list[bytes | None], refused: dict[int, tuple[str, str]]
    ) -> tuple[dict[str, list[Any]], list[Any], RowObjects]:
        """Per schema field its value in every record (None where absent), the same for the
        timestamp field (its own list), and the parsed object of each record checked field
        by field (every record when the typed path is off or paused)."""
        typed = self._typed
        if typed is not None and not self._typed_paused:
            return self._parse_typed(typed, values, refused)
        self._typed_paused = max(self._typed_paused - 1, 0)
        objs = self._parse_all(values, refused)
        columns = {field: _field_values(objs, field) for field, _ in self.fields}
        return columns, _field_values(objs, self.timestamp_field), objs

    def _parse_typed(
        self, typed: TypedRecordDecoder, values: list[bytes | None], refused: dict[int, tuple[str, str]]
    ) -> tuple[dict[str, list[Any]], list[Any], RowObjects]:
        limit = self.max_payload_bytes
        try:
            oversized = max(map(len, values)) > limit  # type: ignore[arg-type]
        except TypeError:  # a tombstone
            oversized = True
        to_decode = values
        if oversized:  # never decode these: _parse_one names why they are refused
            to_decode = [v if v is not None and len(v) <= limit else None for v in values]
        rows = typed.decode_rows(to_decode)
        if 2 * len(rows.not_decoded) > len(values):
            self._typed_paused = _TYPED_PAUSE_BATCHES
        fallback = {i: self._parse_object(i, values[i], refused) for i in rows.not_decoded}
        columns = rows.columns
        for field, column in columns.items():
            for i, obj in fallback.items():
                column[i] = obj.get(field)
        # The typed path is off when the timestamp field is a schema field: no list is shared.
        return columns, columns.pop(self.timestamp_field), fallback

    def _parse_all(self, values: list[bytes | None], refused: dict[int, tuple[str, str]]) -> list[dict[str, Any]]:
        """Every record parsed with orjson (the path when the typed one is off)."""
        limit = self.max_payload_bytes
        objs: list[Any]
        try:
            # Common case: no tombstones, nothing too large, every document parses.
            if max(map(len, values)) > limit:  # type: ignore[arg-type]
                raise OverflowError
            objs = list(map(orjson.loads, values))  # type: ignore[arg-type]
        except (TypeError, OverflowError, orjson.JSONDecodeError):
            objs = [self._parse_one(i, v, refused) for i, v in enumerate(values)]
        if set(map(type, objs)) != {dict}:
            for i, obj in enumerate(objs):
                if type(obj) is not dict:
                    self._refuse_not_object(i, obj, refused)
                    objs[i] = _NO_FIELDS
        return objs

    def _parse_object(self, i: int, value: bytes | None, refused: dict[int, tuple[str, str]]) -> dict[str, Any]:
        obj = self._parse_one(i, value, refused)
        if type(obj) is dict:
            return obj
        self._refuse_not_object(i, obj, refused)
        return _NO_FIELDS

    @staticmethod
    def _refuse_not_object(i: int, obj: object, refused: dict[int, tuple[str, str]]) -> None:
        if i not in refused:
            refused[i] = (_R.NOT_AN_OBJECT, f"expected a JSON object, got {show_value(obj)}")

    def _parse_one(self, i: int, value: bytes | None, refused: dict[int, tuple[str, str]]) -> object:
        if value is None:
            refused[i] = (_R.INVALID_JSON, "value is null (a tombstone), not a JSON document")
            return _NO_FIELDS
        if len(value) > self.max_payload_bytes:
            refused[i] = (
                _R.PAYLOAD_TOO_LARGE,
                f"payload is {len(value)} bytes, max_payload_bytes is {self.max_payload_bytes}",
            )
            return _NO_FIELDS
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            doc = _parse_non_finite(value)
            bad_text = None if doc is None else _lone_surrogate(doc)
            if bad_text is not None:
                refused[i] = (
                    _R.INVALID_JSON,
                    f"not a JSON document: {show_value(bad_text)} holds a lone UTF-16 surrogate, "
                    "not Unicode text; escape characters as valid surrogate pairs or send UTF-8",
                )
                return _NO_FIELDS
            if doc is not None:
                return doc
            refused[i] = (_R.INVALID_JSON, f"not a JSON document: {exc}")
            return _NO_FIELDS

    def _column(
        self,
        vals: list[Any],
        objs: RowObjects,
        field: str,
        kind: str,
        refused: dict[int, tuple[str, str]],
    ) -> np.ndarray:
        """The field's array; refuses rows of a wrong type or beyond its bounds. ``vals`` (the
        field's values, changed in place) holds right-typed values in rows not in ``objs``."""
        accepted = _ACCEPTED[kind]
        wrong: list[int] = []
        if isinstance(objs, dict):  # typed path: only the rows in objs may hold wrong types
            wrong = [i for i in objs if type(vals[i]) not in accepted]
        elif not set(map(type, vals)) <= accepted:
            wrong = [i for i, v in enumerate(vals) if type(v) not in accepted]
        if wrong:
            placeholder = _PLACEHOLDER[kind]
            for i in wrong:
                if i not in refused:
                    refused[i] = self._field_problem(objs[i], field, kind, vals[i])
                vals[i] = placeholder
        if kind == "int":
            try:
                arr = np.array(vals, dtype=np.int64)
            except OverflowError:
                for i, v in enumerate(vals):
                    if not _INT64_MIN <= v <= _INT64_MAX:
                        if i not in refused:
                            refused[i] = (
                                _R.WRONG_TYPE,
                                f"field '{field}': expected int, got int {v} beyond int64",
                            )
                        vals[i] = 0
                arr = np.array(vals, dtype=np.int64)
        else:
            arr = np.array(vals, dtype=_DTYPE[kind])
        if kind == "float":
            finite = np.isfinite(arr)
            if not finite.all():
                for i in np.flatnonzero(~finite).tolist():
                    if i not in refused:
                        refused[i] = (
                            _R.WRONG_TYPE,
                            f"field '{field}': expected float, got {show_value(vals[i])}",
                        )
                arr[~finite] = 0.0
        bounds = self._bounds.get(field)
        if bounds is not None:
            bounds.refuse(field, vals, arr, refused)
        return arr

    @staticmethod
    def _field_problem(obj: dict[str, Any], field: str, kind: str, value: object) -> tuple[str, str]:
        if value is None:
            state = "is null" if field in obj else "is absent"
            return _R.MISSING_FIELD, f"field '{field}' {state}"
        return _R.WRONG_TYPE, f"field '{field}': expected {kind}, got {show_value(value)}"

    def _event_times(
        self, vals: list[Any], objs: RowObjects, refused: dict[int, tuple[str, str]]
    ) -> npt.NDArray[np.int64]:
        field = self.timestamp_field
        if None in vals:
            for i, v in enumerate(vals):
                if v is None and i not in refused:
                    refused[i] = self._field_problem(objs[i], field, "timestamp", v)
        parsed = parse_event_times(vals, self.timestamp_format, field)
        for i, problem in parsed.problems.items():
            refused.setdefault(i, problem)
        return parsed.ts_ms

    def _refuse_future(
        self,
        event_ts: npt.NDArray[np.int64],
        keep: npt.NDArray[np.bool_],
        refused: dict[int, tuple[str, str]],
    ) -> None:
        now = self._now_ms()
        bound = now + self.max_future_skew_ms
        future = keep & (event_ts > bound)
        if future.any():
            for i in np.flatnonzero(future).tolist():
                refused[i] = (
                    _R.TIMESTAMP_IN_FUTURE,
                    f"timestamp field '{self.timestamp_field}': event time {int(event_ts[i])} ms "
                    f"is more than max_future_skew {self.max_future_skew_ms} ms after the wall "
                    f"clock {now} ms",
                )
            keep &= ~future

    def _refuse_late(
        self,
        partition: int,
        event_ts: npt.NDArray[np.int64],
        keep: npt.NDArray[np.bool_],
        refused: dict[int, tuple[str, str]],
        watermarks: PartitionWatermarks,
    ) -> tuple[int, ...]:
        carried = watermarks.top_ts(partition)
        valid = np.flatnonzero(keep)
        if len(valid) == 0:
            return carried
        ts_valid = event_ts[valid]
        lateness = self.allowed_lateness_ms
        rank = self.watermark_rank
        # The largest earlier time bounds the rank-th largest from above: only events below
        # it can be late, and usually there are none, so the exact rank-th is rarely needed.
        running = np.maximum.accumulate(ts_valid)
        before = np.empty_like(ts_valid)
        before[0] = carried[0] if carried else NO_EVENT_TS
        np.maximum(running[:-1], before[0], out=before[1:])
        # e < before - lateness, written without subtracting from the int64 minimum.
        late = ts_valid + lateness < before
        if late.any() and rank > 1:
            before, late = _rank_th_before(carried, ts_valid, rank, lateness)
        if late.any():
            for j in np.flatnonzero(late).tolist():
                i = int(valid[j])
                refused[i] = (
                    _R.LATE_EVENT,
                    f"event time {int(ts_valid[j])} ms is below the partition watermark "
                    f"{int(before[j]) - lateness} ms (the {_ordinal(rank)} largest earlier event "
                    f"time {int(before[j])} ms minus allowed_lateness {lateness} ms)",
                )
            keep[valid[late]] = False
        # Late events lie below the rank-th largest time, so adding them changes nothing.
        if len(ts_valid) > rank:
            ts_valid = np.partition(ts_valid, len(ts_valid) - rank)[-rank:]
        return watermarks.advance(partition, ts_valid.tolist(), rank)

    def _dead_letters(self, raw: RawBatch, refused: dict[int, tuple[str, str]]) -> tuple[DeadLetter, ...]:
        if not refused:
            return ()
        cap = self.dlq_payload_cap
        letters = []
        for i in sorted(refused):
            reason, detail = refused[i]
            value = raw.values[i]
            if value is not None and len(value) > cap:
                detail = f"{detail}; value truncated to {cap} of {len(value)} bytes"
                value = value[:cap]
            letters.append(
                DeadLetter(
                    topic=raw.topic,
                    partition=raw.partition,
                    offset=int(raw.offsets[i]),
                    key=raw.keys[i],
                    value=value,
                    reason=str(reason),
                    detail=detail,
                )
            )
        return tuple(letters)


def _ordinal(n: int) -> str:
    return {1: "1st", 2: "2nd", 3: "3rd"}.get(n, f"{n}th")


def _rank_th_before(
    carried: Sequence[int], ts: npt.NDArray[np.int64], rank: int, lateness: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Per event: the rank-th largest of ``carried`` and the earlier ``ts``, and whether the
    event is late against it (one pass; ``rank`` is small)."""
    top = sorted(carried, reverse=True)[:rank]
    before = np.empty_like(ts)
    late = np.zeros(len(ts), dtype=np.bool_)
    for j, e in enumerate(ts.tolist()):
        base = top[rank - 1] if len(top) >= rank else NO_EVENT_TS
        before[j] = base
        if e + lateness < base:
            late[j] = True
            continue
        if len(top) < rank or e > top[-1]:
            top.append(e)
            top.sort(reverse=True)
            del top[rank:]
    return before, late


def _typed_decoder(fields: Sequence[tuple[str, str]], timestamp_field: str, fmt: str) -> TypedRecordDecoder | None:
    """The typed fast path for records of exactly these fields; None when the timestamp field
    is also a schema field (rare: such records always take the orjson path)."""
    kinds = dict(fields)
    if timestamp_field in kinds:
        return None
    kinds[timestamp_field] = TIMESTAMP_KINDS[fmt]
    return TypedRecordDecoder(kinds)


def _field_values(objs: list[dict[str, Any]], field: str) -> list[Any]:
    """The field of every object, None where absent."""
    try:
        # itemgetter through map runs in C: about twice as fast as a comprehension with .get.
        return list(map(itemgetter(field), objs))
    except KeyError:
        return [o.get(field) for o in objs]
