"""Refuse JSON bodies that name a key twice in one object.

orjson keeps the last value of a repeated key silently, so ``{"as_of": 1, "as_of": 2}``
would be answered for one of two times the caller may have meant. An exact check needs a
second parse with an ``object_pairs_hook``; it runs only when a cheap count cannot rule
duplicates out:

every key in the text is followed by one ``:`` outside strings, so the parsed key count
can only equal the number of ``:`` bytes when no key was dropped. Colons inside the
parsed strings of the walked objects are counted too, but only when the body has no
backslash (an escaped ``\\u003a`` is a colon in the parsed string and not in the bytes).
Only objects nested in objects are walked (a feature request has no objects inside
arrays); anything unwalked leaves the counts unequal and takes the exact path.
"""

from __future__ import annotations

import json

from serving.exceptions import DuplicateKey, MalformedRequest


def _keys(obj: dict[str, object]) -> int:
    count = len(obj)
    for value in obj.values():
        if type(value) is dict:
            count += _keys(value)
    return count


def _keys_and_string_colons(obj: dict[str, object]) -> int:
    count = len(obj)
    for key, value in obj.items():
        count += key.count(":")
        if type(value) is dict:
            count += _keys_and_string_colons(value)
        elif type(value) is str:
            count += value.count(":")
    return count


def _refuse_repeats(pairs: list[tuple[str, object]]) -> dict[str, object]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKey(
                    f"request body: key {key!r} appears twice in one object",
                    hint="send each key once: which value is meant is ambiguous",
                    field=key,
                )
            seen.add(key)
    return obj


def check_duplicate_keys(raw: bytes, parsed: dict[str, object]) -> None:
    """Raise :class:`DuplicateKey` if ``raw`` (which parsed to ``parsed``) repeats a key in an object,
    :class:`MalformedRequest` if it nests too deep for these checks (Python's recursion limit,
    about 1000 levels, is below orjson's 1024; a request of the documented shapes nests a few)."""
    try:
        colons = raw.count(b":")
        if colons == _keys(parsed):
            return
        if b"\\" not in raw and colons == _keys_and_string_colons(parsed):
            return  # e.g. an ISO-8601 as_of
        json.loads(raw, object_pairs_hook=_refuse_repeats)
    except RecursionError:
        raise MalformedRequest(
            "request body: JSON nested too deep to check (objects or lists about 1000 levels inside each other)",
            hint="send the documented request shape: it nests objects and lists a few levels deep",
            field="body",
        ) from None
