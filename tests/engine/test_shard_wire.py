"""Routed rows crossing between cluster processes (engine/shard_wire.py) come back equal,
value for value, dtype for dtype and type for type, to what was routed."""

from __future__ import annotations

import pickle
from types import SimpleNamespace
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.definitions.filters import col
from engine.io.batches import DecodedBatch
from engine.routing import ShardBatch, ViewRows, route
from engine.shard_wire import narrow_ints, widen_ints
from tests.int_strategies import int64s


def _object_array(values: list[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _same_rows(got: ViewRows, want: ViewRows) -> None:
    assert got.keys == want.keys
    for name in ("codes", "event_ts", "offsets", "values"):
        a, b = getattr(got, name), getattr(want, name)
        assert (a.dtype, a.shape, a.tolist()) == (b.dtype, b.shape, b.tolist()), name
    for name in ("join_values", "raw_values"):
        a, b = getattr(got, name), getattr(want, name)
        assert list(a) == list(b), name
        for column in a:
            assert a[column].dtype == b[column].dtype
            assert a[column].tolist() == b[column].tolist()
            assert [type(v) for v in a[column].tolist()] == [type(v) for v in b[column].tolist()]


def _same_batch(got: ShardBatch, want: ShardBatch) -> None:
    assert (got.shard, got.topic, got.partition, got.last_offset, got.top_ts_after) == (
        want.shard,
        want.topic,
        want.partition,
        want.last_offset,
        want.top_ts_after,
    )
    assert list(got.views) == list(want.views)
    for fingerprint, rows in want.views.items():
        _same_rows(got.views[fingerprint], rows)


JOINED = ("user_id", "merchant_id")
#: What routing reads of every view (engine.routing.RoutableView).
VIEW_FIELDS = {"columns": ("amount",), "column_types": {"amount": "float"}, "aggregations": ()}


def _view(number: int, join_keys: tuple[str, ...], view_filter: object) -> Any:
    return SimpleNamespace(
        name=f"v{number}", join_keys=join_keys, fingerprint=bytes([number]) * 8, filter=view_filter, **VIEW_FIELDS
    )


text = st.text(st.characters(exclude_characters="\x1f", exclude_categories=["Cs"]), max_size=5)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.one_of(text, st.integers(-50, 50)), text, st.booleans(), int64s(), text),
        min_size=1,
        max_size=40,
    ),
    st.integers(1, 4),
    st.integers(0, 2**62),
)
def test_routed_batches_round_trip_through_pickle(
    rows: list[tuple[str | int, str, bool, int, str]], shards: int, first_offset: int
) -> None:
    n = len(rows)
    batch = DecodedBatch(
        topic="t",
        partition=2,
        first_offset=first_offset,
        last_offset=first_offset + n - 1,
        top_ts_after=(7,),
        offsets=np.arange(first_offset, first_offset + n, dtype=np.int64),
        event_ts=np.array([r[3] for r in rows], dtype=np.int64),
        columns={
            "user_id": _object_array([r[0] for r in rows]),
            "merchant_id": _object_array([r[1] for r in rows]),
            "kind": _object_array(["P" if r[2] else "R" for r in rows]),
            "amount": np.arange(n, dtype=np.float64) * 0.25,
            "note": _object_array([r[4] for r in rows]),
        },
        dead_letters=(),
    )

    purchases = col("kind") == "P"
    views = [_view(1, ("user_id",), None), _view(2, ("merchant_id",), purchases), _view(3, JOINED, purchases)]
    for _, shard_batch in route(batch, views, shards):
        _same_batch(pickle.loads(pickle.dumps(shard_batch)), shard_batch)


def test_join_values_not_matching_the_keys_travel_as_they_are() -> None:
    rows = ViewRows(
        keys=[b"a", b"\xff"],
        codes=np.array([0, 1, 0], dtype=np.int64),
        join_values={"user_id": _object_array(["a", "b", "a"])},
        event_ts=np.array([3, 1, 2], dtype=np.int64),
        offsets=np.array([5, 6, 7], dtype=np.int64),
        values=np.zeros((3, 0)),
        raw_values={"note": _object_array(["x", None, 1])},
    )
    _same_rows(pickle.loads(pickle.dumps(rows)), rows)
    numbers = ViewRows(
        keys=[b"1", b"2"],
        codes=np.array([1, 0], dtype=np.int64),
        join_values={"user_id": _object_array([2, 1])},
        event_ts=np.array([0, 0], dtype=np.int64),
        offsets=np.array([0, 1], dtype=np.int64),
        values=np.zeros((2, 1)),
    )
    _same_rows(pickle.loads(pickle.dumps(numbers)), numbers)


@settings(max_examples=200, deadline=None)
@given(st.lists(int64s(), max_size=30))
def test_integer_arrays_narrow_and_widen_exactly(values: list[int]) -> None:
    array = np.array(values, dtype=np.int64)
    back = widen_ints(narrow_ints(array))
    assert back.dtype == np.int64
    assert back.tolist() == values
