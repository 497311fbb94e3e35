"""JSON values in type hints: the one alias every module uses for data that is JSON.

``JSONValue`` is what ``json``/``orjson`` can write: ``None``, ``bool``, ``int``,
``float``, ``str``, and lists and string-keyed objects of those. Containers are
``Sequence``/``Mapping`` so a ``list[str]`` or a ``dict[str, int]`` built by a caller is
accepted without copying (both are covariant; ``list``/``dict`` are not).
``JSONObject`` is what a module builds and returns (a ``to_dict()``, a response body).

Data parsed from an untrusted request or file is ``object`` until checked: readers
narrow it with ``isinstance`` and name the field they refuse.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeAlias

JSONScalar: TypeAlias = str | int | float | bool | None
JSONValue: TypeAlias = JSONScalar | Sequence["JSONValue"] | Mapping[str, "JSONValue"]
JSONObject: TypeAlias = dict[str, JSONValue]


_KINDS: dict[type, str] = {
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    list: "array",
    dict: "object",
}


def json_kind(value: object) -> str:
    """The JSON type of a parsed value, as an error message names what it received."""
    if value is None:
        return "null"
    return _KINDS.get(type(value), type(value).__name__)
