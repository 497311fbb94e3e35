"""Hostile join keys and values at decode: what is refused and what passes untouched.

A join-key value holding the separator of compound entity keys (``\\x1f``,
engine/state/keys.py) used to be applied: ``("a\\x1fb", "c")`` and ``("a", "b\\x1fc")``
became one user x merchant entity, and such a user could never be served (serving refuses
the character). It is now refused as ``invalid_string`` on both decode paths. Every other
string (NUL, empty, whitespace, number-like, bidi, long) passes byte for byte.
"""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from engine.io.decoder import Decoder
from engine.io.exceptions import IoValueError
from engine.io.watermarks import PartitionWatermarks
from engine.state.keys import ENTITY_KEY_SEPARATOR
from tests.int_strategies import int64s
from tests.io.io_support import BASE_TS, NOW_MS, FakeSource, dumps, good_event, raw_batch

SEPARATOR = ENTITY_KEY_SEPARATOR.decode()


def _decoder(*, typed_path: bool = True, join_keys: tuple[str, ...] = ("user_id",)) -> Decoder:
    return Decoder(
        FakeSource(),
        now_ms=lambda: NOW_MS,
        typed_path=typed_path,
        join_keys=join_keys,
        key_separator=SEPARATOR,
    )


def _with(i: int, **changes: Any) -> bytes:
    return dumps({**good_event(i), **changes})


@pytest.mark.parametrize("typed_path", [True, False])
@pytest.mark.parametrize("user", [SEPARATOR, "a" + SEPARATOR + "b", "u1" + SEPARATOR])
def test_a_join_key_holding_the_separator_is_refused(typed_path: bool, user: str) -> None:
    raw = raw_batch([_with(0), _with(1, user_id=user), _with(2)])
    out = _decoder(typed_path=typed_path).decode(raw, PartitionWatermarks())
    assert out.offsets.tolist() == [0, 2]
    (letter,) = out.dead_letters
    assert (letter.offset, letter.reason) == (1, "invalid_string")
    assert "field 'user_id'" in letter.detail and "compound entity key" in letter.detail, letter.detail


def test_the_separator_in_a_field_that_is_no_join_key_is_kept() -> None:
    raw = raw_batch([_with(0, currency="E" + SEPARATOR + "R")])
    out = _decoder().decode(raw, PartitionWatermarks())
    assert out.dead_letters == ()
    assert out.columns["currency"].tolist() == ["E" + SEPARATOR + "R"]


@pytest.mark.parametrize("typed_path", [True, False])
def test_fields_are_checked_in_schema_order_and_the_first_problem_names_the_reason(typed_path: bool) -> None:
    # user_id is declared before amount, which is declared before the timestamp.
    raw = raw_batch(
        [
            _with(0, user_id="u" + SEPARATOR, amount="1.0"),
            _with(1, user_id=7, amount=1.0),
            _with(2, user_id="u" + SEPARATOR, ts="late"),
            b'{"user_id": "u\\u001f", "amount": NaN}',
        ]
    )
    letters = _decoder(typed_path=typed_path).decode(raw, PartitionWatermarks()).dead_letters
    assert [letter.reason for letter in letters] == ["invalid_string", "wrong_type", "invalid_string", "invalid_string"]


def test_join_keys_must_be_schema_fields_with_a_separator() -> None:
    with pytest.raises(IoValueError, match="join_keys"):
        Decoder(FakeSource(), join_keys=("no_such_field",), key_separator=SEPARATOR)
    with pytest.raises(IoValueError, match="key_separator"):
        Decoder(FakeSource(), join_keys=("user_id",))


# Strings a producer may send as ids: NUL anywhere, empty, whitespace only, number-like,
# bidi controls, astral characters, long. Surrogates are not text (refused elsewhere).
HOSTILE_KEYS = st.one_of(
    st.sampled_from(["", " ", "\t", "\x00", "u\x00", "\x00u", "1", "1.0", "true", "null", "-0", "\u202eu", "💳"]),
    st.text(st.characters(exclude_categories=["Cs"], exclude_characters=SEPARATOR), max_size=40),
    st.integers(1, 5000).map(lambda n: "k" * n),
)
# Amounts a producer may send: signed zeros, subnormals, the largest floats, integers around
# and beyond 2**53 (not exactly representable, in a float field) up to the int64 edges.
HOSTILE_AMOUNTS = st.one_of(
    st.sampled_from([-0.0, 0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, -1e308]),
    st.floats(allow_nan=False, allow_infinity=False),
    int64s(),
)


@settings(max_examples=150, deadline=None)
@given(
    keys=st.lists(HOSTILE_KEYS, min_size=1, max_size=12),
    amounts=st.lists(HOSTILE_AMOUNTS, min_size=12, max_size=12),
    typed_path=st.booleans(),
)
@example(keys=["\x00", "", " "], amounts=[-0.0, 5e-324, 2**53 + 1] + [0.0] * 9, typed_path=True)
def test_hostile_keys_and_amounts_pass_byte_for_byte(keys: list[str], amounts: list[float], typed_path: bool) -> None:
    docs = [{**good_event(i), "user_id": key, "amount": amounts[i]} for i, key in enumerate(keys)]
    out = _decoder(typed_path=typed_path).decode(raw_batch([orjson.dumps(d) for d in docs]), PartitionWatermarks())
    assert out.dead_letters == ()
    assert out.columns["user_id"].tolist() == keys
    got = out.columns["amount"].tolist()
    for value, doc in zip(got, docs, strict=True):
        want = float(doc["amount"])  # ints become the nearest double, as the reference reads them
        assert value == want and math.copysign(1.0, value) == math.copysign(1.0, want), (value, doc["amount"])
    assert out.event_ts.tolist() == [BASE_TS + i * 10 for i in range(len(keys))]


@pytest.mark.parametrize("typed_path", [True, False])
def test_deep_nesting_outside_the_schema_is_ignored_up_to_the_parsers_depth(typed_path: bool) -> None:
    def nested(depth: int) -> bytes:
        return dumps(good_event(0))[:-1] + b', "extra": ' + b"[" * depth + b"]" * depth + b"}"

    out = _decoder(typed_path=typed_path).decode(raw_batch([nested(500), nested(2000)]), PartitionWatermarks())
    assert out.offsets.tolist() == [0]
    (letter,) = out.dead_letters
    assert (letter.offset, letter.reason) == (1, "invalid_json"), letter


@pytest.mark.parametrize("typed_path", [True, False])
def test_a_repeated_field_keeps_its_last_value_on_both_paths(typed_path: bool) -> None:
    # docs/semantics.md section 1: the last occurrence wins, whatever the earlier one held.
    tail = dumps({**good_event(0), "user_id": "last", "amount": 2.5})[1:]
    records = [b'{"user_id": "first", "amount": 1.0, ' + tail, b'{"user_id": 7, "amount": "x", ' + tail]
    out = _decoder(typed_path=typed_path).decode(raw_batch(records), PartitionWatermarks())
    assert out.dead_letters == ()
    assert out.columns["user_id"].tolist() == ["last", "last"]
    assert out.columns["amount"].tolist() == [2.5, 2.5]
