"""The decoder's fast path: a whole batch of well-formed records straight into field values.

A record whose JSON object has exactly the declared fields (schema plus timestamp field), each
holding the declared JSON type, decodes in C (msgspec, one typed struct per record, no dict)
into the very values ``orjson.loads(record)[field]`` gives, same Python type included. Every
other record is reported back by row; ``engine.io.decoder`` parses those with orjson and runs
its per-field checks on them, so every refused record keeps its dead-letter reason and detail.

Why accepted values match orjson exactly (checked in tests/io/test_typed_records.py):

- unknown fields are refused, so no byte of an accepted record goes unvalidated (msgspec would
  otherwise skip an unknown field's invalid UTF-8 or out-of-range number that orjson rejects);
- ints are limited to int64: beyond it orjson turns some integers into floats, msgspec not;
- a "float" field is ``int | float``: a JSON integer stays an int, as orjson returns it;
- non-finite numbers, NaN/Infinity literals, nulls, wrong types, duplicate keys whose first
  value has the wrong type, tombstones: msgspec refuses them, so the record falls back;
- duplicate keys otherwise keep the last value in both parsers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Annotated, Any

import msgspec

_INT64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]

#: msgspec type of each field kind (the decoder's schema kinds and timestamp formats).
# Any: msgspec type expressions (Annotated, a union) that mypy does not accept as ``type``.
_TYPES: dict[str, Any] = {
    "string": str,
    "int": _INT64,
    "float": _INT64 | float,
    "bool": bool,
}
#: The field kind a timestamp format's JSON values have (as engine.io.timestamps accepts them).
TIMESTAMP_KINDS: dict[str, str] = {"epoch_millis": "int", "epoch_seconds": "float", "iso8601": "string"}


@dataclass(frozen=True)
class TypedRows:
    """Per field, the value of every row (``None`` in rows not decoded), and the rows not
    decoded (malformed, tombstones, extra fields, wrong types: the caller checks them)."""

    # Any: values straight from JSON, checked by type() in the decoder (hot path, not narrowed by mypy).
    columns: dict[str, list[Any]]
    not_decoded: list[int]


class TypedRecordDecoder:
    """Decodes the records of one source whose fields are ``{field: kind}``."""

    def __init__(self, kinds: Mapping[str, str]) -> None:
        unknown = sorted(set(kinds.values()) - set(_TYPES))
        if unknown:
            raise ValueError(f"TypedRecordDecoder: field kinds {unknown}: expected one of {sorted(_TYPES)}")
        # Positional attribute names: any JSON field name works (it need not be an identifier).
        attrs = [f"f{i}" for i in range(len(kinds))]
        record_type = msgspec.defstruct(
            "Record",
            [(attr, _TYPES[kind]) for attr, kind in zip(attrs, kinds.values(), strict=True)],
            rename=dict(zip(attrs, kinds, strict=True)),
            forbid_unknown_fields=True,
            gc=False,
        )
        self._decode = msgspec.json.Decoder(record_type).decode
        self._getters = {field: attrgetter(attr) for field, attr in zip(kinds, attrs, strict=True)}
        self._blank = record_type(*(None for _ in attrs))

    def decode_rows(self, values: Sequence[bytes | None]) -> TypedRows:
        records: list[object] = []
        not_decoded: list[int] = []
        remaining = iter(values)
        while True:
            try:
                # One C-level pass; a failing record stops it, is marked, and the pass resumes
                # after it (list.extend keeps what it appended before the exception).
                records.extend(map(self._decode, remaining))  # type: ignore[arg-type]
                break
            except (msgspec.DecodeError, TypeError):
                not_decoded.append(len(records))
                records.append(self._blank)
        if len(records) != len(values):  # a Python whose extend drops partial results
            records, not_decoded = self._one_by_one(values)
        return TypedRows({field: list(map(get, records)) for field, get in self._getters.items()}, not_decoded)

    def _one_by_one(self, values: Sequence[bytes | None]) -> tuple[list[object], list[int]]:
        records: list[object] = []
        not_decoded: list[int] = []
        for i, value in enumerate(values):
            try:
                records.append(self._decode(value))  # type: ignore[arg-type]
            except (msgspec.DecodeError, TypeError):
                not_decoded.append(i)
                records.append(self._blank)
        return records, not_decoded
