"""One-pass merges of every kind (``merge_groups``, behind ``merge_window`` and
``merge_rows``): the same bytes as the pairwise ``merge`` in any order, and as the blob
built from all the values at once. And the batch record codec (``decode_many`` /
``encode_many``) reads and writes exactly the bytes of the per-record codec."""

from __future__ import annotations

import random
import re
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.kernel.batch_merge import decode_many, encode_many
from engine.kernel.codec import decode_sketches, decode_tiles, encode_tiles
from engine.kernel.exceptions import TileCodecError
from engine.kernel.layout import PartialLayout
from engine.kernel.sketches import EMPTY_BLOB, SketchSlot, empty_blobs, merge_blobs, merge_rows, merge_window
from engine.kernel.value_lists import encode_entries
from engine.timefmt import NO_EVENT_TS

SLOTS = (
    SketchSlot.of("v", "distinct_set", max_distinct=6),  # small: over the bound often
    SketchSlot.of("v", "hll", precision=4),  # 16 registers: dense blobs often
    SketchSlot.of("v", "hll", precision=12),  # sparse blobs
    SketchSlot.of("v", "ddsketch", alpha=0.01),
    SketchSlot.of("v", "newest_values", n=3),
    SketchSlot.of("v", "oldest_values", n=2),
    SketchSlot.of("v", "newest_distinct", n=3),
)
NUMERIC = st.one_of(st.integers(-5, 5).map(float), st.floats(-1e6, 1e6), st.just(0.0))
WORDS = st.sampled_from(["m0", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "é", ""])


@st.composite
def tiles(draw: st.DrawFn, numeric: bool) -> list[list[tuple[int, Any]]]:
    """Tiles of (event time, value) events; positions are the events' global order."""
    values = NUMERIC if numeric else WORDS
    return draw(st.lists(st.lists(st.tuples(st.integers(0, 50), values), max_size=12), max_size=8))


def _build(slot: SketchSlot, events: list[tuple[int, int, Any]]) -> bytes:
    """The blob of one group of (event time, position, value) events."""
    if not events:
        return EMPTY_BLOB
    events = sorted(events, key=lambda e: (e[0], e[1]))
    values = np.array([e[2] for e in events], dtype=np.float64 if isinstance(events[0][2], float) else object)
    ts = np.array([e[0] for e in events], dtype=np.int64)
    pos = np.array([e[1] for e in events], dtype=np.int64)
    return slot.implementation.build(slot, values, ts, pos, np.zeros(1, dtype=np.int64))[0]


def _pairwise(slot: SketchSlot, blobs: list[bytes]) -> bytes:
    out = EMPTY_BLOB
    for blob in blobs:
        if not out:
            out = blob
        elif blob:
            out = slot.implementation.merge(slot, out, blob)
    return out


def _numbered(tile_list: list[list[tuple[int, Any]]]) -> list[list[tuple[int, int, Any]]]:
    position = iter(range(10**6))
    return [[(t, next(position), v) for t, v in tile] for tile in tile_list]


def _check_slot(slot: SketchSlot, events: list[list[tuple[int, int, Any]]], seed: int) -> None:
    blobs = [_build(slot, tile) for tile in events]
    want = _pairwise(slot, blobs)
    shuffled = blobs[:]
    random.Random(seed).shuffle(shuffled)
    assert _pairwise(slot, shuffled) == want
    assert merge_window(slot, blobs) == want
    assert merge_window(slot, shuffled) == want
    assert merge_window(slot, blobs) == _build(slot, [e for tile in events for e in tile])
    # Many groups at once, rows in any order: each group equals its own pairwise merge.
    rng = random.Random(seed + 1)
    n_groups = 3
    groups = [rng.randrange(n_groups) for _ in blobs]
    order = list(range(len(blobs)))
    rng.shuffle(order)
    rows = empty_blobs(len(blobs), 1)
    rows[:, 0] = [blobs[i] for i in order]
    merged = merge_rows((slot,), rows, np.array([groups[i] for i in order], dtype=np.int64), n_groups)
    for g in range(n_groups):
        assert merged[g, 0] == _pairwise(slot, [b for b, of in zip(blobs, groups, strict=True) if of == g])


@settings(max_examples=80, deadline=None)
@given(tile_list=tiles(numeric=False), seed=st.integers(0, 2**16))
def test_one_pass_merges_of_string_values_equal_the_pairwise_merge_and_the_whole_build(
    tile_list: list[list[tuple[int, Any]]], seed: int
) -> None:
    events = _numbered(tile_list)
    for slot in SLOTS:
        if slot.kind != "ddsketch":
            _check_slot(slot, events, seed)


@settings(max_examples=80, deadline=None)
@given(tile_list=tiles(numeric=True), seed=st.integers(0, 2**16))
def test_one_pass_merges_of_numbers_equal_the_pairwise_merge_and_the_whole_build(
    tile_list: list[list[tuple[int, Any]]], seed: int
) -> None:
    events = _numbered(tile_list)
    for slot in SLOTS:
        _check_slot(slot, events, seed)


@settings(max_examples=60, deadline=None)
@given(tile_list=st.one_of(tiles(numeric=True), tiles(numeric=False)), seed=st.integers(0, 2**16))
def test_pairs_merged_one_by_one_equal_the_one_pass_merge_of_the_same_groups(
    tile_list: list[list[tuple[int, Any]]], seed: int
) -> None:
    # merge_rows and merge_blobs merge up to a kind's ``pairwise_merges`` pairs with
    # ``merge``, more with ``merge_groups``: both paths must give the same bytes for
    # every count of pairs, on both sides of the threshold.
    rng = random.Random(seed)
    events = _numbered(tile_list)
    numeric = any(isinstance(v, float) for tile in events for _, _, v in tile)
    for slot in SLOTS:
        if slot.kind == "ddsketch" and not numeric:
            continue
        blobs = [blob for blob in (_build(slot, tile) for tile in events) if blob]
        kind = slot.implementation
        for n_pairs in range(1, min(len(blobs) // 2, kind.pairwise_merges + 1) + 1):
            chosen = blobs[: 2 * n_pairs]
            groups = [i // 2 for i in range(len(chosen))]
            order = list(range(len(chosen)))
            rng.shuffle(order)
            rows = empty_blobs(len(chosen), 1)
            rows[:, 0] = [chosen[i] for i in order]
            merged = merge_rows((slot,), rows, np.array([groups[i] for i in order], dtype=np.int64), n_pairs)
            one_pass = kind.merge_groups(slot, chosen, np.array(groups, dtype=np.int64), n_pairs)
            assert merged[:, 0].tolist() == one_pass
            # The same pairs as two row arrays, with an empty blob on either side of some rows.
            left, right = empty_blobs(n_pairs + 2, 1), empty_blobs(n_pairs + 2, 1)
            left[:n_pairs, 0], right[:n_pairs, 0] = chosen[0::2], chosen[1::2]
            left[n_pairs, 0], right[n_pairs + 1, 0] = chosen[0], chosen[1]
            paired = merge_blobs((slot,), left, right)[:, 0].tolist()
            assert paired == [*one_pass, chosen[0], chosen[1]]


def test_a_dense_hyperloglog_merges_with_sparse_ones() -> None:
    slot = SLOTS[1]
    many = _build(slot, [(0, i, f"v{i}") for i in range(200)])
    few = _build(slot, [(1, 1000, "w")])
    assert len(many) == 16  # dense
    assert merge_window(slot, [few, many]) == _pairwise(slot, [many, few])


LAYOUT = PartialLayout(("v",), False, SLOTS[:2])


@settings(max_examples=60, deadline=None)
@given(
    records=st.lists(
        st.one_of(
            st.none(),
            st.lists(st.tuples(st.integers(0, 40), st.sampled_from(["", "a", "b", "c"]), st.booleans()), max_size=5),
        ),
        max_size=6,
    )
)
def test_the_batch_codec_matches_the_record_codec(records: list[list[tuple[int, str, bool]] | None]) -> None:
    encoded: list[bytes | None] = []
    for rows in records:
        if rows is None:
            encoded.append(None)
            continue
        tile_ids = sorted({t for t, _, _ in rows})
        blobs = empty_blobs(len(tile_ids), len(LAYOUT.sketch_slots))
        for t, word, second in rows:
            if word:
                blobs[tile_ids.index(t), int(second)] = _build(LAYOUT.sketch_slots[int(second)], [(t, 0, word)])
        partials = np.arange(len(tile_ids) * LAYOUT.width, dtype=np.float64).reshape(len(tile_ids), LAYOUT.width)
        encoded.append(encode_tiles(np.array(tile_ids, dtype=np.int64), partials, 7 * len(tile_ids), blobs))
    flat = decode_many(LAYOUT, encoded)
    for code, record in enumerate(encoded):
        rows_of = flat.codes == code
        if record is None:
            assert not rows_of.any()
            assert flat.max_event_ts[code] == NO_EVENT_TS
            continue
        stored_tiles, stored_partials, newest = decode_tiles(record, LAYOUT.width)
        assert flat.tiles[rows_of].tolist() == stored_tiles.tolist()
        assert np.array_equal(flat.partials[rows_of], stored_partials)
        assert flat.max_event_ts[code] == newest
        assert flat.blobs(2)[rows_of].tolist() == decode_sketches(record, 2).tolist()
    present = [i for i, r in enumerate(encoded) if r is not None]
    if present:
        again = encode_many(LAYOUT, flat, len(encoded))
        assert [again[i] for i in present] == [encoded[i] for i in present]


def test_entries_with_equal_keys_order_by_their_value_bytes_as_the_pairwise_merge_does() -> None:
    # Distinct events never share (e, position); corrupt or hand-made blobs may, and the
    # one-pass merge then orders them by value bytes exactly like ``sorted`` does.
    a = encode_entries([(5, 1, b"sb"), (4, 0, b"sa")])
    b = encode_entries([(5, 1, b"sa"), (5, 1, b"sc")])
    for slot in SLOTS[4:]:
        assert merge_window(slot, [a, b]) == _pairwise(slot, [a, b]) == _pairwise(slot, [b, a])


@pytest.mark.parametrize(
    ("slot", "corrupt", "names"),
    [
        (SLOTS[0], b"\x01" * 9, "distinct_set blob: length"),
        (SLOTS[2], b"\x01" * 7, "hll blob (precision 12): length"),
        (SLOTS[3], b"\x01" * 9, "ddsketch blob: header"),
        (SLOTS[3], b"\x00" * 8 + b"\x01\x00\x00\x00" + b"\x00" * 4, "ddsketch blob: length"),
        (SLOTS[4], b"\x01\x00", "value list blob: header"),
        (SLOTS[4], b"\x02\x00\x00\x00" + b"\x00" * 8, "value list blob: length"),
    ],
)
def test_a_corrupt_stored_blob_is_refused_by_the_one_pass_merge_with_the_codec_error(
    slot: SketchSlot, corrupt: bytes, names: str
) -> None:
    good = _build(slot, [(0, 0, "a"), (1, 1, "b")] if slot.kind != "ddsketch" else [(0, 0, 1.5)])
    with pytest.raises(TileCodecError, match=re.escape(names)):
        merge_window(slot, [good, corrupt])


# Where the sketch section of a 2-tile record of LAYOUT starts (after header, tiles, partials).
_SECTION_AT = 16 + 8 * 2 * (1 + LAYOUT.width)


def _record_with_section() -> bytes:
    blobs = empty_blobs(2, 2)
    blobs[0, 0] = _build(LAYOUT.sketch_slots[0], [(0, 0, "a")])
    blobs[1, 1] = _build(LAYOUT.sketch_slots[1], [(0, 0, "b")])
    return encode_tiles(np.array([3, 4], dtype=np.int64), np.zeros((2, LAYOUT.width)), 5, blobs)


@pytest.mark.parametrize(
    ("corrupt", "names"),
    [
        (lambda r: r[:-8], "length"),  # truncated blobs
        # Another slot count means another length of the lengths array: the codec names the length.
        (lambda r: r[: _SECTION_AT + 2] + b"\x05\x00" + r[_SECTION_AT + 4 :], "length"),
        (lambda r: r[: _SECTION_AT + 8] + b"\x07" + r[_SECTION_AT + 9 :], "blob_bytes"),
    ],
)
def test_a_corrupt_record_is_refused_by_the_batch_decoder_with_the_codec_error(corrupt: Any, names: str) -> None:
    good = _record_with_section()
    with pytest.raises(TileCodecError, match=names):
        decode_many(LAYOUT, [good, corrupt(good)])
