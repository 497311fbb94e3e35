"""The string hash memo changes only speed: every hash_values answer equals BLAKE2b of
the canonical bytes, whether the memo holds the text, misses it or has just started over."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.kernel import value_hash
from engine.kernel.value_hash import canonical_bytes, hash_bytes, hash_values, value_bytes
from tests.int_strategies import int64s


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.text(max_size=6), max_size=30), min_size=1, max_size=5), st.integers(1, 8))
def test_string_hashes_equal_the_canonical_hash_through_memo_hits_misses_and_resets(
    batches: list[list[str]], memo_size: int
) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(value_hash, "_STRING_HASHES", {})
        patch.setattr(value_hash, "_MAX_STRING_HASHES", memo_size)
        for batch in batches:
            got = hash_values(np.array(batch, dtype=object)).tolist()
            assert got == [hash_bytes(canonical_bytes(text)) for text in batch]
            assert len(value_hash._STRING_HASHES) <= memo_size


def test_a_string_and_the_int_it_spells_hash_differently_with_the_memo_warm() -> None:
    first = hash_values(np.array(["7", "a"], dtype=object))
    again = hash_values(np.array(["7", "a"], dtype=object))  # memo hits now
    assert first.tolist() == again.tolist()
    assert int(first[0]) != int(hash_values(np.array([7], dtype=np.int64))[0])


@settings(max_examples=100, deadline=None)
@given(
    st.one_of(
        st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=20).map(
            lambda v: np.array(v, dtype=np.float64)
        ),
        st.lists(int64s(), max_size=20).map(lambda v: np.array(v, dtype=np.int64)),
        st.lists(st.booleans(), max_size=20).map(lambda v: np.array(v, dtype=bool)),
        st.lists(st.text(max_size=5), max_size=20).map(lambda v: np.array(v, dtype=object)),
    )
)
def test_value_bytes_are_the_canonical_bytes_of_each_value(values: np.ndarray) -> None:
    want = [canonical_bytes(v) for v in values.tolist()]
    assert value_bytes(values) == want
    assert value_bytes(values) == want  # again, with the string memo warm


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=30))
def test_hash_many_is_hash_bytes_of_each(datas: list[bytes]) -> None:
    got = value_hash.hash_many(datas)
    assert got.dtype == np.uint64
    assert got.tolist() == [hash_bytes(data) for data in datas]


@settings(max_examples=100, deadline=None)
@given(
    st.one_of(
        st.lists(int64s(), max_size=20).map(lambda v: np.array(v, dtype=np.int64)),
        st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=20).map(
            lambda v: np.array(v, dtype=np.float64)
        ),
        st.lists(st.booleans(), max_size=20).map(lambda v: np.array(v, dtype=bool)),
        st.lists(st.one_of(st.text(max_size=4), int64s(), st.booleans()), max_size=20).map(
            lambda v: np.array(v, dtype=object)
        ),
    )
)
def test_hash_values_is_the_hash_of_each_canonical_encoding(values: np.ndarray) -> None:
    assert hash_values(values).tolist() == [hash_bytes(canonical_bytes(v)) for v in values.tolist()]
