"""An int field or join key holds a 64-bit integer (docs/semantics.md, "Numbers"): a larger
integer in a request is refused naming the row and the range, never called a "number"
(orjson reads one beyond 2^64 as a float)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from engine.definitions import FieldType
from serving.exceptions import InvalidRequest
from serving.request import parse_json, read_columns

EXPECTED = {"card_id": FieldType.INT}


def _columns(raw: bytes) -> dict[str, list[Any]]:
    return read_columns("entities", parse_json(raw)["entities"], EXPECTED, entity=True, max_rows=10)


@pytest.mark.parametrize(
    ("literal", "shown"),
    [
        (b"9223372036854775808", "(9223372036854775808)"),
        (b"-9223372036854775809", "(about -9.22e+18, read as a float)"),
        (b"18446744073709551616", "(about 1.84e+19, read as a float)"),
        (b"123456789012345678901234567890", "(about 1.23e+29, read as a float)"),
    ],
)
def test_an_integer_beyond_int64_is_refused_naming_the_row_and_the_range(literal: bytes, shown: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        _columns(b'{"entities": {"card_id": [1, ' + literal + b"]}}")
    message = str(refused.value)
    assert refused.value.field == "entities.card_id[1]", message
    assert "expected an int from -2^63 to 2^63-1, got an integer beyond that range" in message
    assert shown in message and "number" not in message, message


def test_the_int64_bounds_and_a_whole_float_are_told_apart() -> None:
    bounds = orjson.dumps({"entities": {"card_id": [-(2**63), 2**63 - 1]}})
    assert _columns(bounds) == {"card_id": [-(2**63), 2**63 - 1]}
    with pytest.raises(InvalidRequest, match=r"expected int, got number 1\.0") as refused:
        _columns(b'{"entities": {"card_id": [1.0]}}')
    assert refused.value.field == "entities.card_id[0]"
