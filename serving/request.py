"""Parsing and validation of feature requests, by hand on the orjson-parsed body.

No pydantic on the hot path: every check here names the field (dotted path), the
expected and the received value, so a 422 tells the caller exactly what to fix.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

import orjson

from engine.clock import wall_clock_ms
from engine.definitions import FieldType
from engine.definitions.base import did_you_mean
from engine.exceptions import NaiveTimeError, NotIsoTimeError
from engine.io.timestamps import MIN_EVENT_TS_MS
from engine.json_types import json_kind
from engine.state.keys import ENTITY_KEY_SEPARATOR
from engine.state.offsets import INT64_MAX, INT64_MIN
from engine.timefmt import iso_epoch_ms, iso_utc
from engine.wording import counted, quoted
from serving.duplicate_keys import check_duplicate_keys
from serving.exceptions import InvalidRequest, MalformedRequest, PayloadTooLarge, short_repr
from serving.registry import CompiledService

MAX_TS_MS = 2**53
_SEPARATOR = ENTITY_KEY_SEPARATOR.decode()  # the entity key's join-key separator

EntityValue = str | int


@dataclass(frozen=True, slots=True)
class FeatureRequest:
    service: CompiledService
    entities: dict[str, list[EntityValue]]  # join key -> one value per row
    request_data: dict[str, list[Any]]  # request field -> one value per row
    n_rows: int
    t_ms: int  # the evaluation time; with one as_of per row, the latest of them
    as_of_given: bool
    include_metadata: bool
    row_times: tuple[int, ...] | None = None  # one as_of per row (a list in the request)

    def times(self) -> list[int]:
        """The evaluation time of every row."""
        return list(self.row_times) if self.row_times is not None else [self.t_ms] * self.n_rows

    def as_of_echo(self) -> int | list[int]:
        """What the response's ``as_of`` says: the time used, or one per row."""
        return list(self.row_times) if self.row_times is not None else self.t_ms


# Any: the parsed request body; each reader checks the field it takes (isinstance) and names it
def parse_json(raw: bytes, example: str = '{"entities": {...}}') -> dict[str, Any]:
    """The body as a JSON object; ``example`` is the shape the route takes (in the hint
    of a body that is valid JSON but no object)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as bad:
            raise MalformedRequest(
                f"request body: expected UTF-8 JSON, got byte 0x{raw[bad.start]:02x} at offset {bad.start}, "
                "which is not UTF-8",
                hint="encode the JSON as UTF-8 and send it uncompressed (no Content-Encoding)",
            ) from None
        token = _non_finite_token(raw, exc.pos, str(exc))
        if token is not None:
            raise MalformedRequest(
                f"request body: {token} is not a finite JSON number (JSON has no NaN or "
                "Infinity, and a number beyond the largest double is infinite)",
                hint="send a finite number instead",
            ) from None
        raise MalformedRequest(
            f"request body: expected a JSON object, got invalid JSON ({exc})",
            hint="send UTF-8 JSON with Content-Type: application/json",
        ) from None
    if not isinstance(body, dict):
        raise InvalidRequest(
            f"request body: expected a JSON object, got {json_kind(body)}",
            hint=f"send {example}",
            field="body",
        )
    check_duplicate_keys(raw, body)
    return body


def _non_finite_token(raw: bytes, pos: int, error: str) -> str | None:
    """``<text> at offset <n>`` of a NaN, Infinity or overflowing number at the parse error's
    position, else None."""
    start = pos - 1 if raw[pos - 1 : pos] == b"-" else pos
    end = start
    while (
        end < len(raw) and end - start < 40 and raw[end : end + 1] not in (b",", b"]", b"}", b" ", b"\n", b"\r", b"\t")
    ):
        end += 1
    token = raw[start:end].decode("utf-8", "replace")
    if token.lstrip("-").startswith(("NaN", "Infinity")) or "infinity" in error:
        return f"{token} at offset {start}"
    return None


def parse_as_of(value: object, field: str = "as_of") -> int:
    """Epoch milliseconds (an integer) or an ISO-8601 string with an explicit offset, from
    2000-01-01 (no event time can be earlier: ingest refuses them) to below 2^53 ms.

    The one owner of what an ``as_of`` may be (the routes and the shadow reader call it)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidRequest(
            f"field '{field}': expected epoch milliseconds (integer) or an ISO-8601 string, got {json_kind(value)}",
            hint="e.g. 1767225600000, or a list with one time per entity row",
            field=field,
        )
    if isinstance(value, str):
        try:
            ms = iso_epoch_ms(value)
        except NotIsoTimeError:
            raise InvalidRequest(
                f"field '{field}': expected epoch milliseconds or an ISO-8601 time, got {short_repr(value)}",
                hint='e.g. 1767225600000 or "2026-01-01T00:00:00Z"',
                field=field,
            ) from None
        except NaiveTimeError:
            raise InvalidRequest(
                f"field '{field}': expected an ISO-8601 time with an offset, got {short_repr(value)} (no offset)",
                hint="append Z or +00:00: a time zone is never guessed",
                field=field,
            ) from None
        if not MIN_EVENT_TS_MS <= ms < MAX_TS_MS:
            raise _as_of_out_of_range(ms, f"{short_repr(value)} ({ms} ms)", field)
        return ms
    if isinstance(value, int) and MIN_EVENT_TS_MS <= value < MAX_TS_MS:
        return value
    raise _as_of_refused(value, field)


_AS_OF_RANGE = f"{MIN_EVENT_TS_MS} (2000-01-01T00:00:00Z) .. {MAX_TS_MS - 1}"


def _as_of_refused(value: int | float, field: str) -> InvalidRequest:
    """Why a number is no ``as_of``: seconds for milliseconds, not an integer, or out of range."""
    shown = repr(value)
    finite = math.isfinite(value)
    if finite and value < MIN_EVENT_TS_MS <= value * 1000 < MAX_TS_MS:
        ms = math.floor(value * 1000)
        return InvalidRequest(
            f"field '{field}': {shown} looks like epoch seconds ({iso_utc(ms)}), and as_of takes epoch milliseconds",
            hint=f"multiply by 1000: send {ms}",
            field=field,
        )
    if isinstance(value, float) and finite and MIN_EVENT_TS_MS <= value < MAX_TS_MS:
        whole = math.floor(value)
        return InvalidRequest(
            f"field '{field}': expected whole epoch milliseconds (an integer), got the number {shown}",
            hint=f"send an integer: {whole}",
            field=field,
        )
    return _as_of_out_of_range(value, shown, field)


def _as_of_out_of_range(value: int | float, shown: str, field: str) -> InvalidRequest:
    if value < MIN_EVENT_TS_MS:
        where = (
            f"before {MIN_EVENT_TS_MS} ms (2000-01-01T00:00:00Z), the earliest as_of: no event time can be earlier "
            "(ingest refuses them)"
        )
    else:
        where = f"beyond {MAX_TS_MS - 1} ms, the latest as_of (event times are integers below 2^53 ms)"
    return InvalidRequest(
        f"field '{field}': {shown} is {where}; valid: {_AS_OF_RANGE} epoch milliseconds",
        hint='send epoch milliseconds in that range, e.g. 1767225600000, or an ISO-8601 time like "2026-01-01T00:00:00Z"',
        field=field,
    )


def _check_value(kind: FieldType, value: object, field: str, *, entity: bool) -> None:
    ok: bool
    if kind is FieldType.STRING:
        ok = isinstance(value, str)
    elif kind is FieldType.INT:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is FieldType.FLOAT:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    else:
        ok = isinstance(value, bool)
    if kind is FieldType.INT and _beyond_int64(value):
        raise InvalidRequest(
            f"field '{field}': expected an int from -2^63 to 2^63-1, got an integer beyond that range "
            f"({_integer_text(value)})",
            hint="int fields and join keys hold 64-bit integers; send an id this large as a string field",
            field=field,
        )
    if not ok:
        raise InvalidRequest(
            # null speaks for itself: "got null None" repeated it
            f"field '{field}': expected {kind}, got {json_kind(value)}"
            + ("" if value is None else f" {short_repr(value)}"),
            hint="every value of a column has the declared type",
            field=field,
        )
    if entity and isinstance(value, str) and _SEPARATOR in value:
        raise InvalidRequest(
            f"field '{field}': join-key values cannot contain \\x1f, got {short_repr(value)}",
            hint="\\x1f separates join keys in stored entity keys: no entity can have it in a key",
            field=field,
        )


def _beyond_int64(value: object) -> bool:
    """An integer outside int64: orjson keeps one up to 2^64-1 as an int and turns a larger
    one into a whole float, which would otherwise be named a "number"."""
    if isinstance(value, int) and not isinstance(value, bool):
        return not INT64_MIN <= value <= INT64_MAX
    return isinstance(value, float) and math.isfinite(value) and value.is_integer() and abs(value) > INT64_MAX


def _integer_text(value: object) -> str:
    return str(value) if isinstance(value, int) else f"about {value:.3g}, read as a float"


# Exact JSON types per kind: what orjson produces for valid input. Anything else (bool
# for a number, a subclass, a wrong type) takes the per-value check.
_PLAIN_TYPES: dict[FieldType, frozenset[type]] = {
    FieldType.STRING: frozenset({str}),
    FieldType.INT: frozenset({int}),
    FieldType.FLOAT: frozenset({float, int}),
    FieldType.BOOL: frozenset({bool}),
}


# Any: values as orjson parsed them; the exact-type check before the join makes them strings there
def _plainly_valid(kind: FieldType, values: list[Any], *, entity: bool) -> bool:
    """True when every value has an exact accepted type (one pass, no call per value);
    False sends the column through :func:`_check_value`, which accepts or names the value."""
    if not _PLAIN_TYPES[kind].issuperset(map(type, values)):
        return False
    if kind is FieldType.INT and values and not (min(values) >= INT64_MIN and max(values) <= INT64_MAX):
        return False
    # Joined, the strings hold the separator exactly when one of them does (one C search).
    return not (entity and kind is FieldType.STRING and _SEPARATOR in "".join(values))


def read_columns(
    section: str,
    given: object,
    expected: Mapping[str, FieldType],
    *,
    entity: bool,
    max_rows: int,
) -> dict[str, list[Any]]:  # Any: values as orjson parsed them, checked per kind below
    """One section of a request (``entities`` or ``request_data``): every expected column a
    list of values of its kind, every refusal naming the field and the row."""
    if not isinstance(given, dict):
        raise InvalidRequest(
            f"field '{section}': expected an object of column name -> list of values, got {json_kind(given)}",
            hint=f'e.g. {{"{next(iter(expected), "name")}": [...]}}',
            field=section,
        )
    for name in given:
        if name not in expected:
            shown = f"{section}.{name}" if name else f'{section}.""'
            raise InvalidRequest(
                f"field {short_repr(shown)}: not an input of this service"
                + (" (a column with an empty name)" if not name else ""),
                hint=did_you_mean(name, expected, "names"),
                field=shown,
            )
    for name in expected:
        if name not in given:
            raise InvalidRequest(
                f"field '{section}.{name}': required ({expected[name]} values, one per entity row)",
                hint=f'add "{name}": [...] to "{section}"',
                field=f"{section}.{name}",
            )
    # Any: the column's values as orjson parsed them, checked per kind here; callers compute on them by kind
    out: dict[str, list[Any]] = {}
    for name, kind in expected.items():
        values = given[name]
        field = f"{section}.{name}"
        if not isinstance(values, list):
            raise InvalidRequest(
                f"field '{field}': expected a list of {kind} values, got {json_kind(values)}",
                hint="wrap a single value in a list",
                field=field,
            )
        if len(values) > max_rows:
            raise PayloadTooLarge(
                f"field '{field}': {len(values)} entities, at most {max_rows} per request",
                hint="split the request",
                field=field,
            )
        if not _plainly_valid(kind, values, entity=entity):
            for i, value in enumerate(values):  # finds and names the offending value
                _check_value(kind, value, f"{field}[{i}]", entity=entity)
        out[name] = values
    return out


# Any: the request's columns as read_columns returned them; only their lengths are read here
_Columns = dict[str, list[Any]]


def _refuse_unequal_lengths(sections: tuple[str, str], ent: _Columns, req: _Columns) -> NoReturn:
    """Name the first list whose length differs from the one most lists have (the first
    list's on a tie), with every list's length."""
    lengths = {f"{sections[0]}.{name}": len(v) for name, v in ent.items()}
    lengths.update((f"{sections[1]}.{name}", len(v)) for name, v in req.items())
    n_rows = Counter(lengths.values()).most_common(1)[0][0]
    first_off = next(name for name, n in lengths.items() if n != n_rows)
    shown = ", ".join(f"{name} {n}" for name, n in lengths.items())
    raise InvalidRequest(
        f"field {first_off!r}: expected {counted(n_rows, 'value')} (one per entity row, as most lists "
        f"have), got {lengths[first_off]}; list lengths: {shown}",
        hint="row i of the request is the i-th value of every list",
        field=first_off,
    )


def build_request(
    service: CompiledService,
    entities: object,
    request_data: object,
    as_of: object,
    include_metadata: object,
    *,
    max_entities: int,
    sections: tuple[str, str] = ("entities", "request_data"),
) -> FeatureRequest:
    ent = read_columns(sections[0], entities, service.join_key_types, entity=True, max_rows=max_entities)
    if request_data is None and service.request_fields:
        names = quoted(service.request_fields)
        raise InvalidRequest(
            f"field '{sections[1]}': required: service {service.name!r} takes request data {names} "
            "(one value per entity row), got none",
            hint=f'add "{sections[1]}": {{"{next(iter(service.request_fields))}": [...]}}',
            field=sections[1],
        )
    req = read_columns(
        sections[1],
        {} if request_data is None and not service.request_fields else request_data,
        service.request_fields,
        entity=False,
        max_rows=max_entities,
    )
    columns = (*ent.values(), *req.values())
    n_rows = len(columns[0])
    if any(len(v) != n_rows for v in columns):
        _refuse_unequal_lengths(sections, ent, req)
    if n_rows == 0:
        raise InvalidRequest(
            f"field '{sections[0]}': expected at least one entity, got empty lists",
            hint="send one value per entity row in every list",
            field=sections[0],
        )
    if include_metadata is not None and not isinstance(include_metadata, bool):
        raise InvalidRequest(
            f"field 'include_metadata': expected a boolean, got {json_kind(include_metadata)}",
            hint='send "include_metadata": true or false, or leave it out',
            field="include_metadata",
        )
    given = as_of is not None
    row_times: tuple[int, ...] | None = None
    if isinstance(as_of, list):
        if len(as_of) != n_rows:
            raise InvalidRequest(
                f"field 'as_of': expected one time per entity row ({n_rows}), got {len(as_of)}",
                hint="send one as_of for every row, or a single as_of for all of them",
                field="as_of",
            )
        row_times = tuple(parse_as_of(v, f"as_of[{i}]") for i, v in enumerate(as_of))
        t_ms = max(row_times)
    else:
        t_ms = parse_as_of(as_of) if given else wall_clock_ms()
    return FeatureRequest(
        service=service,
        entities=ent,
        request_data=req,
        n_rows=n_rows,
        t_ms=t_ms,
        as_of_given=given,
        include_metadata=bool(include_metadata),
        row_times=row_times,
    )


def check_keys(body: Mapping[str, object], allowed: tuple[str, ...], hints: Mapping[str, str] | None = None) -> None:
    """Refuses a body field other than ``allowed``; ``hints`` has the fix for a field a
    caller may send by mistake (one another route takes), else the closest valid name."""
    for key in body:
        if key not in allowed:
            hint = (hints or {}).get(key) or did_you_mean(key, allowed, "fields")
            raise InvalidRequest(f"field {short_repr(key)}: not a field of this request", hint=hint, field=key)
