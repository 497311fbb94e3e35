"""The write path's fast paths equal their straightforward definitions.

- routing factorizes entity keys once per batch and hashes each distinct key once;
  the result must equal per-row ``entity_key`` + ``crc32(fingerprint + key) % shards``
  (docs/semantics.md section 6, engine/state/keys.py);
- ``decode_many`` / ``encode_many`` work on all records of a batch at once; they must
  equal per-record ``decode_tiles`` / ``encode_tiles`` and raise the codec's errors;
- the applier merges key lists of several routed parts.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.definitions.filters import col
from engine.entity_codes import factorize_entity_keys
from engine.io.batches import DecodedBatch
from engine.kernel import PartialLayout, TileCodecError, decode_tiles, encode_tiles
from engine.kernel.batch_merge import FlatTiles, decode_many, encode_many
from engine.kernel.blob_buffers import SLICED_RUN_WORDS
from engine.routing import ViewRows, merge_codes, route, split_by_shard
from engine.state.keys import encode_entity_keys, entity_key, shard_for, shard_for_many
from engine.timefmt import NO_EVENT_TS
from tests.int_strategies import int64s
from tests.reference import TILE_RECORD_HEADER, shard_of

LAYOUT = PartialLayout(("amount", "fee"))
FINGERPRINT = b"\x01\x02\x03\x04\x05\x06\x07\x08"

# Text without the 0x1f separator (which entity_key refuses), including non-ASCII.
key_text = st.text(st.characters(exclude_characters="\x1f", exclude_categories=["Cs"]), max_size=6)


def _object_array(values: list[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(key_text, st.integers(-(10**6), 10**6), int64s()), max_size=60))
def test_factorize_single_key_round_trips(values: list[str | int]) -> None:
    keys, codes = factorize_entity_keys([_object_array(values)])
    assert len(set(keys)) == len(keys)
    assert [keys[c] for c in codes.tolist()] == encode_entity_keys([values])
    assert [keys[c] for c in codes.tolist()] == [entity_key([v]) for v in values]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(key_text, st.one_of(key_text, st.integers(0, 99))), max_size=60))
def test_factorize_composite_keys_round_trips(rows: list[tuple[str, str | int]]) -> None:
    cols = [_object_array([r[0] for r in rows]), _object_array([r[1] for r in rows])]
    keys, codes = factorize_entity_keys(cols)
    assert len(set(keys)) == len(keys)
    assert [keys[c] for c in codes.tolist()] == [entity_key(list(r)) for r in rows]


def test_factorize_merges_values_with_the_same_text() -> None:
    # 7 and "7" name the same entity (engine/state/keys.py entity_key).
    keys, codes = factorize_entity_keys([_object_array([7, "7", "x", 7])])
    assert keys == [b"7", b"x"]
    assert codes.tolist() == [0, 0, 1, 0]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=12), max_size=40), st.integers(1, 16), st.binary(min_size=8, max_size=8))
def test_shard_of_equals_crc32_of_concatenation(keys: list[bytes], shards: int, fp: bytes) -> None:
    got = shard_for_many(fp, keys, shards).tolist()
    assert got == [shard_of(fp, k, shards) for k in keys]
    assert got == [shard_for(fp, k, shards) for k in keys]


def _view(join_keys: tuple[str, ...], with_filter: bool) -> Any:
    class _Filter:
        def evaluate(self, columns: dict[str, np.ndarray]) -> np.ndarray:
            return np.asarray([t == "PURCHASE" for t in columns["event_type"].tolist()])

    return SimpleNamespace(
        name="v",
        join_keys=join_keys,
        columns=("amount",),
        column_types={"amount": "float"},
        fingerprint=FINGERPRINT,
        filter=_Filter() if with_filter else None,
        aggregations=(),
    )


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["u1", "u2", "ü3", "4", "u5"]), st.sampled_from(["m", "n"]), st.booleans()),
        min_size=1,
        max_size=80,
    ),
    st.integers(1, 7),
    st.booleans(),
    st.booleans(),
)
def test_route_equals_per_row_definition(
    rows: list[tuple[str, str, bool]], shards: int, composite: bool, with_filter: bool
) -> None:
    n = len(rows)
    batch = DecodedBatch(
        topic="t",
        partition=2,
        first_offset=10,
        last_offset=10 + n - 1,
        top_ts_after=(5_000,),
        offsets=np.arange(10, 10 + n, dtype=np.int64),
        event_ts=np.arange(1000, 1000 + n, dtype=np.int64),
        columns={
            "user_id": _object_array([r[0] for r in rows]),
            "merchant_id": _object_array([r[1] for r in rows]),
            "event_type": _object_array(["PURCHASE" if r[2] else "REFUND" for r in rows]),
            "amount": np.arange(n, dtype=np.float64) * 1.5,
        },
        dead_letters=(),
    )
    join = ("user_id", "merchant_id") if composite else ("user_id",)
    view = _view(join, with_filter)
    routed = route(batch, [view], shards)
    assert [key for key, _ in routed] == [f"shard-{s:03d}" for s in range(shards)]
    seen: dict[int, tuple[bytes, float, int]] = {}
    for _, shard_batch in routed:
        assert (shard_batch.last_offset, shard_batch.top_ts_after) == (10 + n - 1, (5_000,))
        part = shard_batch.views.get(FINGERPRINT)
        if part is None:
            continue
        assert len(set(part.keys)) == len(part.keys)
        assert set(part.codes.tolist()) == set(range(len(part.keys)))  # every key is used
        assert part.offsets.tolist() == sorted(part.offsets.tolist())  # row order kept
        for key, value, offset, *joined in zip(
            part.entity_keys,
            part.values[:, 0].tolist(),
            part.offsets.tolist(),
            *(part.join_values[k].tolist() for k in join),
            strict=True,
        ):
            assert shard_for(FINGERPRINT, key, shards) == shard_batch.shard
            assert key == entity_key(joined)
            seen[offset] = (key, value, shard_batch.shard)
    want = {
        10 + i: entity_key([r[0], r[1]] if composite else [r[0]]) for i, r in enumerate(rows) if r[2] or not with_filter
    }
    assert {o: k for o, (k, _, _) in seen.items()} == want
    assert all(v == (o - 10) * 1.5 for o, (_, v, _) in seen.items())


def _rows(keys: list[bytes], codes: list[int]) -> ViewRows:
    n = len(codes)
    return ViewRows(
        keys=keys,
        codes=np.asarray(codes, dtype=np.int64),
        join_values={},
        event_ts=np.zeros(n, np.int64),
        offsets=np.arange(n, dtype=np.int64),
        values=np.zeros((n, 0)),
    )


def test_split_by_shard_and_merge_codes_keep_each_row_key() -> None:
    keys = [f"user-{i}".encode() for i in range(50)]
    codes = [(i * 7) % 50 for i in range(120)]
    rows = _rows(keys, codes)
    parts = split_by_shard(rows, FINGERPRINT, 3)
    assert sum(len(p) for _, p in parts) == 120
    merged_keys, merged_codes = merge_codes([(p, 0) for _, p in parts])
    assert len(set(merged_keys)) == len(merged_keys) == 50
    got = sorted(
        zip(
            (merged_keys[c] for c in merged_codes.tolist()),
            np.concatenate([p.offsets for _, p in parts]).tolist(),
            strict=True,
        )
    )
    assert got == sorted(zip(rows.entity_keys, rows.offsets.tolist(), strict=True))


def test_merge_codes_drops_keys_no_row_uses() -> None:
    part = _rows([b"a", b"b", b"c"], [0, 2, 2, 0]).select(np.array([False, True, True, False]))
    keys, codes = merge_codes([(part, 0), (_rows([b"c", b"d"], [1, 0]), 1)])
    assert keys == [b"c", b"d"]
    assert [keys[c] for c in codes.tolist()] == [b"c", b"c", b"d", b"c"]


@st.composite
def tile_sets(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, int]:
    tiles = np.array(sorted(draw(st.sets(st.integers(-(2**40), 2**40), max_size=6))), np.int64)
    values = draw(
        st.lists(
            st.floats(allow_nan=True, width=64), min_size=len(tiles) * LAYOUT.width, max_size=len(tiles) * LAYOUT.width
        )
    )
    partials = np.asarray(values, dtype=np.float64).reshape(len(tiles), LAYOUT.width)
    return tiles, partials, draw(st.integers(-(2**62), 2**62))


@st.composite
def long_tile_sets(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, int]:
    """Hundreds of tiles (a day of minute tiles): the batch codec moves them as slices."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    count = draw(st.integers(SLICED_RUN_WORDS, 3 * SLICED_RUN_WORDS))
    tiles = np.sort(rng.choice(2**40, size=count, replace=False)).astype(np.int64)
    return tiles, rng.standard_normal((count, LAYOUT.width)), draw(st.integers(-(2**62), 2**62))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.none(), tile_sets(), long_tile_sets()), max_size=12))
def test_decode_many_and_encode_many_equal_the_codec(entities: list[Any]) -> None:
    records = [None if e is None else encode_tiles(*e) for e in entities]
    flat = decode_many(LAYOUT, records)
    for code, entity in enumerate(entities):
        rows = flat.codes == code
        if entity is None:
            assert not rows.any() and flat.max_event_ts[code] == NO_EVENT_TS
            continue
        tiles, partials, newest = decode_tiles(records[code], expected_width=LAYOUT.width)  # type: ignore[arg-type]
        assert flat.tiles[rows].tolist() == tiles.tolist()
        np.testing.assert_array_equal(flat.partials[rows], partials)
        assert int(flat.max_event_ts[code]) == newest
    encoded = encode_many(LAYOUT, flat, len(entities))
    for code, entity in enumerate(entities):
        if entity is not None:
            assert encoded[code] == records[code]
        else:  # an entity with no tiles and no record: an empty record
            assert encoded[code] == encode_tiles(np.empty(0, np.int64), np.empty((0, LAYOUT.width)), NO_EVENT_TS)


def test_encode_many_is_the_codec_for_merged_tiles() -> None:
    flat = FlatTiles(
        codes=np.array([0, 0, 2], np.int64),
        tiles=np.array([3, 9, -4], np.int64),
        partials=np.arange(3 * LAYOUT.width, dtype=np.float64).reshape(3, LAYOUT.width),
        max_event_ts=np.array([99, NO_EVENT_TS, 7], np.int64),
    )
    out = encode_many(LAYOUT, flat, 3)
    assert out[0] == encode_tiles([3, 9], flat.partials[:2], 99)
    assert out[1] == encode_tiles(np.empty(0, np.int64), np.empty((0, LAYOUT.width)), NO_EVENT_TS)
    assert out[2] == encode_tiles([-4], flat.partials[2:], 7)


def _corruptions() -> list[tuple[str, bytes]]:
    good = encode_tiles([1, 2], np.zeros((2, LAYOUT.width)), 5)
    header = TILE_RECORD_HEADER
    return [
        ("header: expected 16 bytes", good[:10]),
        ("length: expected", good[:-8]),
        ("length: expected", good + b"\0" * 3),
        ("field 'version'", header.pack(2, 0, LAYOUT.width, 2, 5) + good[16:]),
        ("field 'flags'", header.pack(1, 2, LAYOUT.width, 2, 5) + good[16:]),
        ("field 'width'", encode_tiles([1], np.zeros((1, 8)), 5)),
        ("strictly increasing", header.pack(1, 0, LAYOUT.width, 2, 5) + np.array([2, 1], "<i8").tobytes() + good[32:]),
    ]


@pytest.mark.parametrize(("message", "bad"), _corruptions())
def test_decode_many_raises_the_codec_error_for_a_corrupt_record(message: str, bad: bytes) -> None:
    good = encode_tiles([1, 2], np.zeros((2, LAYOUT.width)), 5)
    with pytest.raises(TileCodecError) as codec_error:
        decode_tiles(bad, expected_width=LAYOUT.width)
    with pytest.raises(TileCodecError, match=message) as batch_error:
        decode_many(LAYOUT, [good, None, bad, good])
    assert str(batch_error.value) == str(codec_error.value)


@pytest.mark.parametrize("mixed", [False, True])
def test_factorize_large_batches_through_polars_equals_per_row_keys(mixed: bool) -> None:
    # Big batches take the polars hash path; a column that is not all strings falls back.
    rng = np.random.default_rng(7)
    names = [f"usér-{i}" for i in range(3_000)] + ["", " ", "7"]
    values: list[Any] = [names[i] for i in rng.integers(0, len(names), 60_000).tolist()]
    if mixed:
        values[::1000] = [7] * len(values[::1000])
    keys, codes = factorize_entity_keys([_object_array(values)])
    assert len(set(keys)) == len(keys)
    assert [keys[c] for c in codes.tolist()] == [entity_key([v]) for v in values]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["u1", "u2", "4"]), st.sampled_from(["m", "n"]), st.sampled_from(["P", "R", "L"])),
        min_size=1,
        max_size=60,
    ),
    st.integers(1, 5),
)
def test_views_sharing_a_filter_route_as_if_alone(rows: list[tuple[str, str, str]], shards: int) -> None:
    """route evaluates equal filters once per batch and shares the picked columns; every
    view's rows must be what routing that view alone gives."""
    n = len(rows)
    batch = DecodedBatch(
        topic="t",
        partition=0,
        first_offset=0,
        last_offset=n - 1,
        top_ts_after=(5_000,),
        offsets=np.arange(n, dtype=np.int64),
        event_ts=np.arange(1000, 1000 + n, dtype=np.int64),
        columns={
            "user_id": _object_array([r[0] for r in rows]),
            "merchant_id": _object_array([r[1] for r in rows]),
            "event_type": _object_array([r[2] for r in rows]),
            "amount": np.arange(n, dtype=np.float64) * 0.5,
        },
        dead_letters=(),
    )
    filters = [col("event_type") == "P", col("event_type") == "P", col("event_type") != "R", None]
    join_keys = [("user_id",), ("user_id", "merchant_id"), ("merchant_id",), ("user_id",)]
    views = [
        SimpleNamespace(
            name=f"v{i}",
            join_keys=keys,
            columns=("amount",),
            column_types={"amount": "float"},
            fingerprint=bytes([i + 1]) * 8,
            filter=view_filter,
            aggregations=(),
        )
        for i, (view_filter, keys) in enumerate(zip(filters, join_keys, strict=True))
    ]
    together = route(batch, views, shards)
    for view in views:
        alone = route(batch, [view], shards)
        for (_, got), (_, want) in zip(together, alone, strict=True):
            got_rows, want_rows = got.views.get(view.fingerprint), want.views.get(view.fingerprint)
            assert (got_rows is None) == (want_rows is None)
            if got_rows is None or want_rows is None:
                continue
            assert got_rows.entity_keys == want_rows.entity_keys
            assert got_rows.offsets.tolist() == want_rows.offsets.tolist()
            assert got_rows.event_ts.tolist() == want_rows.event_ts.tolist()
            assert got_rows.values.tolist() == want_rows.values.tolist()
            assert {k: v.tolist() for k, v in got_rows.join_values.items()} == {
                k: v.tolist() for k, v in want_rows.join_values.items()
            }
