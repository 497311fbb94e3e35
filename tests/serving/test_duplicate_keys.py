"""Property test: a body is refused for duplicate keys exactly when its text repeats a key
in one object, whatever colons, escapes and nesting the cheap count has to see through."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.duplicate_keys import check_duplicate_keys
from serving.exceptions import DuplicateKey

TEXT = st.text(alphabet=st.sampled_from(["a", "b", ":", '"', "\\", "é", " "]), max_size=4)


class Obj:
    """A JSON object as written: its (key, value) pairs in order, repeats allowed."""

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        self.pairs = pairs


def _string(text: str, escape_colons: bool) -> str:
    out = orjson.dumps(text).decode()
    return out.replace(":", "\\u003a") if escape_colons else out


def _write(value: Any, escape: bool) -> str:
    if isinstance(value, Obj):
        return "{" + ", ".join(f"{_string(k, escape)}: {_write(v, escape)}" for k, v in value.pairs) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_write(v, escape) for v in value) + "]"
    if isinstance(value, str):
        return _string(value, escape)
    return orjson.dumps(value).decode()


def _repeats(value: Any) -> bool:
    if isinstance(value, Obj):
        keys = [k for k, _ in value.pairs]
        return len(set(keys)) != len(keys) or any(_repeats(v) for _, v in value.pairs)
    if isinstance(value, list):
        return any(_repeats(v) for v in value)
    return False


KEYS = st.sampled_from(["as_of", "user_id", "a:b", "x", "é"])
LEAVES = st.one_of(st.integers(-5, 5), st.floats(allow_nan=False, allow_infinity=False), TEXT, st.booleans(), st.none())
VALUES = st.recursive(
    LEAVES,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.lists(st.tuples(KEYS, inner), max_size=4).map(Obj)),
    max_leaves=12,
)
BODIES = st.lists(st.tuples(KEYS, VALUES), max_size=5).map(Obj)


@settings(max_examples=200, deadline=None)
@given(body=BODIES, escape=st.booleans())
def test_refused_exactly_when_a_key_repeats(body: Obj, escape: bool) -> None:
    raw = _write(body, escape).encode()
    parsed = orjson.loads(raw)
    if _repeats(body):
        with pytest.raises(DuplicateKey):
            check_duplicate_keys(raw, parsed)
    else:
        check_duplicate_keys(raw, parsed)
