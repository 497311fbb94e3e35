"""Decode and validate raw Kafka batches into column arrays (docs/semantics.md sections 1 and 5).

Every raw record ends either as a row of the decoded columns or as exactly one ``DeadLetter``;
``decode`` never raises on bad input. Checks run in the order of ``DeadLetterReason`` and the
first failing check names the reason: payload size, JSON, object, then each schema field in
declared order (absent/null -> ``missing_field``, otherwise ``wrong_type``, then its declared
constraint: ``value_out_of_range`` / ``invalid_string``; a ``missing_field`` detail names every
missing field of the record, not only the first), then the timestamp field, its range,
the future bound and finally the partition watermark (the ``watermark_outliers + 1``-th largest
earlier valid event time minus the allowed lateness).

Speed: the whole batch decodes in C into typed field values (``engine.io.typed_records``);
only the records that path does not accept are parsed with ``orjson.loads`` one by one and
checked field by field, so their reasons and details are the same as if every record had
been. Column checks are whole-column type sets; per-row Python branching only happens for
fields that actually hold bad values.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from enum import Enum
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import orjson

from engine.clock import wall_clock_ms
from engine.io.batches import DeadLetter, DeadLetterReason, DecodedBatch, RawBatch
from engine.io.exceptions import IoTypeError, IoValueError
from engine.io.field_checks import (
    ACCEPTED,
    DTYPE,
    PLACEHOLDER,
    Bounds,
    ConstraintLike,
    field_values,
    kind_of,
    lone_surrogate,
    parse_non_finite,
    refuse_inexact_ints,
    refuse_separator,
)
from engine.io.time_refusals import refuse_future, refuse_late
from engine.io.timestamps import TIMESTAMP_FORMATS, parse_event_times, show_value
from engine.io.typed_records import TIMESTAMP_KINDS, TypedRecordDecoder
from engine.io.watermarks import PartitionWatermarks

DEFAULT_DLQ_PAYLOAD_CAP = 64 * 1024


_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
# Placeholder object for records refused before their fields are looked at.
_NO_FIELDS: dict[str, object] = {}
# When most of a batch falls back to orjson (a source whose records carry undeclared fields),
# the typed path only costs time: skip it for this many batches, then try again.
_TYPED_PAUSE_BATCHES = 32

#: The parsed object of each record checked field by field, by row.
RowObjects = list[dict[str, object]] | dict[int, dict[str, object]]

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
    def timestamp_format(self) -> object: ...  # a str or a str-valued enum
    @property
    def schema(self) -> Mapping[str, object]: ...
    @property
    def allowed_lateness_ms(self) -> int: ...
    @property
    def max_payload_bytes(self) -> int: ...
    @property
    def max_future_skew_ms(self) -> int: ...
    @property
    def watermark_outliers(self) -> int: ...
    @property
    def constraints(self) -> Mapping[str, ConstraintLike]: ...


class Decoder:
    """Turns ``RawBatch`` items of one ``EventSource`` into ``DecodedBatch`` items.

    ``now_ms`` is the wall clock used for the ``timestamp_in_future`` bound (read once per
    batch); ``dlq_payload_cap`` caps the bytes copied into each dead letter. ``typed_path=False``
    parses every record with orjson (the reference the typed fast path is tested against).
    ``join_keys`` are the fields the views read as join keys: a string value holding
    ``key_separator`` (the character joining the values of a compound entity key,
    engine/state/keys.py) is refused as ``invalid_string``, since it would make two
    entities one. ``exact_int_fields`` are the int fields some aggregation reads as a double
    (engine.kernel.layout.double_read_columns): a value beyond +-2**53 there is refused as
    ``value_out_of_range``, since a double cannot hold it exactly.
    """

    def __init__(
        self,
        source: EventSourceLike,
        now_ms: Callable[[], int] = wall_clock_ms,
        *,
        dlq_payload_cap: int = DEFAULT_DLQ_PAYLOAD_CAP,
        typed_path: bool = True,
        join_keys: Collection[str] = (),
        key_separator: str = "",
        exact_int_fields: Collection[str] = (),
    ) -> None:
        name = str(source.name)
        fmt_raw = source.timestamp_format
        fmt = fmt_raw.value if isinstance(fmt_raw, Enum) else fmt_raw
        if not isinstance(fmt, str) or fmt not in TIMESTAMP_FORMATS:
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
            (str(field), kind_of(declared, name, str(field))) for field, declared in source.schema.items()
        )
        self.allowed_lateness_ms = int(source.allowed_lateness_ms)
        self.max_payload_bytes = int(source.max_payload_bytes)
        self.max_future_skew_ms = int(source.max_future_skew_ms)
        #: The watermark follows the rank-th largest valid event time (semantics section 5).
        self.watermark_rank = int(source.watermark_outliers) + 1
        self.dlq_payload_cap = dlq_payload_cap
        self._now_ms = now_ms
        self._bounds = {
            str(field): Bounds.of(constraint) for field, constraint in getattr(source, "constraints", {}).items()
        }
        kinds = dict(self.fields)
        if join_keys and (len(key_separator) != 1 or not set(join_keys) <= set(kinds)):
            raise IoValueError(
                f"Decoder for source '{name}': field 'join_keys': expected schema fields and a "
                f"one-character key_separator, got {sorted(join_keys)} and {key_separator!r}. "
                f"Hint: the schema has {sorted(kinds)}; pass ENTITY_KEY_SEPARATOR decoded."
            )
        #: String join-key fields and the character their values cannot hold.
        self._separated = frozenset(f for f in join_keys if kinds[f] == "string")
        self._key_separator = key_separator
        #: Int fields read as doubles: their values must stay within +-MAX_EXACT_INTEGER.
        self._exact_ints = frozenset(f for f in exact_int_fields if kinds.get(f) == "int")
        self._typed = _typed_decoder(self.fields, self.timestamp_field, fmt) if typed_path else None
        self._typed_paused = 0

    # -- public -----------------------------------------------------------------------------

    def decode(self, raw: RawBatch, watermarks: PartitionWatermarks | None) -> DecodedBatch:
        """Decode one batch; advances ``watermarks`` for the batch's partition. Without
        ``watermarks`` lateness is not judged (a push: the records of one request are not a
        partition's stream; the dataflow judges them once they are on the topic)."""
        n = len(raw)
        refused: dict[int, tuple[str, str]] = {}  # row -> (reason, detail); first reason wins
        values, ts_values, objs = self._parse(raw.values, refused)
        columns = {field: self._column(values[field], objs, field, kind, refused) for field, kind in self.fields}
        event_ts = self._event_times(ts_values, objs, refused)

        keep = np.ones(n, dtype=np.bool_)
        if refused:
            keep[np.fromiter(refused, dtype=np.int64, count=len(refused))] = False
        refuse_future(
            event_ts,
            keep,
            refused,
            self._now_ms(),
            self.max_future_skew_ms,
            self.timestamp_field,
            self.timestamp_format,
        )
        top_after = (
            ()
            if watermarks is None
            else refuse_late(
                raw.partition, event_ts, keep, refused, watermarks, self.allowed_lateness_ms, self.watermark_rank
            )
        )

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
        self,
        values: list[bytes | None],
        refused: dict[int, tuple[str, str]],
    ) -> tuple[dict[str, list[Any]], list[Any], RowObjects]:  # Any: JSON values, type()-checked in _column
        """Per schema field its value in every record (None where absent), the same for the
        timestamp field (its own list), and the parsed object of each record checked field
        by field (every record when the typed path is off or paused)."""
        typed = self._typed
        if typed is not None and not self._typed_paused:
            return self._parse_typed(typed, values, refused)
        self._typed_paused = max(self._typed_paused - 1, 0)
        objs = self._parse_all(values, refused)
        columns = {field: field_values(objs, field) for field, _ in self.fields}
        return columns, field_values(objs, self.timestamp_field), objs

    def _parse_typed(
        self,
        typed: TypedRecordDecoder,
        values: list[bytes | None],
        refused: dict[int, tuple[str, str]],
    ) -> tuple[dict[str, list[Any]], list[Any], RowObjects]:  # Any: JSON values, type()-checked in _column
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

    def _parse_all(self, values: list[bytes | None], refused: dict[int, tuple[str, str]]) -> list[dict[str, object]]:
        """Every record parsed with orjson (the path when the typed one is off)."""
        limit = self.max_payload_bytes
        # Any: orjson.loads results; the non-dicts are replaced below, a narrowing mypy cannot follow.
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

    def _parse_object(self, i: int, value: bytes | None, refused: dict[int, tuple[str, str]]) -> dict[str, object]:
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
            doc = parse_non_finite(value)
            bad_text = None if doc is None else lone_surrogate(doc)
            if bad_text is not None:
                refused[i] = (
                    _R.INVALID_JSON,
                    f"not a JSON document: {show_value(bad_text)} holds a lone UTF-16 surrogate, "
                    "not Unicode text; escape characters as valid surrogate pairs or send UTF-8",
                )
                return _NO_FIELDS
            if doc is not None:
                return doc
            refused[i] = (_R.INVALID_JSON, f"not a JSON document: {_utf8_problem(value) or exc}")
            return _NO_FIELDS

    def _column(
        self,
        # Any: field values straight from JSON, checked by type() against ACCEPTED below (hot
        # path), which mypy does not narrow; the int bounds check compares them after that.
        vals: list[Any],
        objs: RowObjects,
        field: str,
        kind: str,
        refused: dict[int, tuple[str, str]],
    ) -> np.ndarray:
        """The field's array; refuses rows of a wrong type or beyond its bounds. ``vals`` (the
        field's values, changed in place) holds right-typed values in rows not in ``objs``."""
        accepted = ACCEPTED[kind]
        wrong: list[int] = []
        if isinstance(objs, dict):  # typed path: only the rows in objs may hold wrong types
            wrong = [i for i in objs if type(vals[i]) not in accepted]
        elif not set(map(type, vals)) <= accepted:
            wrong = [i for i, v in enumerate(vals) if type(v) not in accepted]
        if wrong:
            placeholder = PLACEHOLDER[kind]
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
            arr = np.array(vals, dtype=DTYPE[kind])
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
        if field in self._exact_ints:
            refuse_inexact_ints(field, vals, arr, refused)
        bounds = self._bounds.get(field)
        if bounds is not None:
            bounds.refuse(field, vals, arr, refused)
        if field in self._separated:
            refuse_separator(field, vals, self._key_separator, refused)
        return arr

    def _field_problem(self, obj: dict[str, object], field: str, kind: str, value: object) -> tuple[str, str]:
        if value is None:  # the first missing field: the detail names every one of the record
            return _R.MISSING_FIELD, self._missing_detail(obj)
        return _R.WRONG_TYPE, f"field '{field}': expected {kind}, got {show_value(value)}"

    def _missing_detail(self, obj: dict[str, object]) -> str:
        """Every schema field and the timestamp field that ``obj`` lacks (absent) or holds as
        null, in declared order, e.g. ``fields 'user_id' and 'ts' are absent; field 'amount' is null``."""
        wanted = dict.fromkeys([*(field for field, _ in self.fields), self.timestamp_field])
        missing = [field for field in wanted if obj.get(field) is None]
        parts = []
        for state, names in (
            ("absent", [f for f in missing if f not in obj]),
            ("null", [f for f in missing if f in obj]),
        ):
            if names:
                quoted = [f"'{name}'" for name in names]
                listed = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} and {quoted[-1]}"
                parts.append(f"field {listed} is {state}" if len(names) == 1 else f"fields {listed} are {state}")
        return "; ".join(parts)

    def _event_times(
        self,
        # Any: timestamp values straight from JSON; parse_event_times checks each one.
        vals: list[Any],
        objs: RowObjects,
        refused: dict[int, tuple[str, str]],
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


def _typed_decoder(fields: Sequence[tuple[str, str]], timestamp_field: str, fmt: str) -> TypedRecordDecoder | None:
    """The typed fast path for records of exactly these fields; None when the timestamp field
    is also a schema field (rare: such records always take the orjson path)."""
    kinds = dict(fields)
    if timestamp_field in kinds:
        return None
    kinds[timestamp_field] = TIMESTAMP_KINDS[fmt]
    return TypedRecordDecoder(kinds)


def _utf8_problem(value: bytes) -> str | None:
    """What is wrong when the bytes are not UTF-8 at all (orjson says "surrogates not
    allowed" for any undecodable byte); None when they are UTF-8."""
    try:
        value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"byte {value[exc.start]:#04x} at offset {exc.start} is not UTF-8 (JSON text is UTF-8)"
    return None
