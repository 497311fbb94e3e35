"""The packed record's sketch section: round trip, old records, merges in any order."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.kernel import TileCodecError, decode_tiles, encode_tiles
from engine.kernel.aggregate import aggregate_batch, aggregate_sketches
from engine.kernel.batch_merge import FlatTiles, decode_many, encode_many, merge_flat
from engine.kernel.codec import decode_sketches, section_slots
from engine.kernel.layout import AggregationSpec
from engine.kernel.sketches import empty_blobs, hash_values, merge_window
from engine.kernel.view_spec import ViewSpec

HOUR = 3_600_000
SPEC = ViewSpec(
    60_000,
    ("merchant", "amount"),
    (
        AggregationSpec("m_cd", "merchant", "count_distinct", HOUR, params=(("max_distinct", 50),)),
        AggregationSpec("m_hll", "merchant", "count_distinct_approx", HOUR),
        AggregationSpec("p95", "amount", "percentile", HOUR, params=(("q", 0.95),)),
    ),
    2 * HOUR,
)
LAYOUT = SPEC.layout
N_SLOTS = len(LAYOUT.sketch_slots)


def _events(seed: int, n: int) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    ts = np.sort(rng.integers(0, 600_000, n))
    merchants = np.array([f"m{i}" for i in rng.integers(0, 30, n)], dtype=object)
    amounts = np.round(rng.exponential(40.0, n) - 5.0, 2)
    return ts, np.arange(n, dtype=np.int64), {"merchant": merchants, "amount": amounts}


def _record(ts: np.ndarray, pos: np.ndarray, raw: dict[str, np.ndarray]) -> bytes:
    codes = np.zeros(len(ts), dtype=np.int64)
    values = np.stack([np.zeros(len(ts)), raw["amount"]], axis=1)
    _, tiles, partials = aggregate_batch(LAYOUT, codes, ts // 60_000, ts, pos, values)
    blobs = aggregate_sketches(LAYOUT, codes, ts // 60_000, ts, pos, raw)
    return encode_tiles(tiles, partials, int(ts.max()), blobs)


def test_section_round_trips_and_keeps_the_record_8_byte_aligned() -> None:
    ts, pos, raw = _events(1, 200)
    record = _record(ts, pos, raw)
    assert len(record) % 8 == 0
    tiles, _, newest = decode_tiles(record)
    blobs = decode_sketches(record, N_SLOTS)
    assert blobs.shape == (len(tiles), N_SLOTS)
    assert newest == int(ts.max())
    assert section_slots(record) == N_SLOTS
    assert all(isinstance(b, bytes) and b for b in blobs.ravel().tolist())


def test_a_record_without_the_section_reads_as_empty_blobs() -> None:
    record = encode_tiles(np.array([1, 2], dtype=np.int64), LAYOUT.empty(2), 5)
    assert decode_sketches(record, N_SLOTS).tolist() == empty_blobs(2, N_SLOTS).tolist()
    assert section_slots(record) == 0
    # All-empty blobs write no section at all: the bytes of the old format.
    same = encode_tiles(np.array([1, 2], dtype=np.int64), LAYOUT.empty(2), 5, empty_blobs(2, N_SLOTS))
    assert same == record


def test_truncated_or_mismatched_sections_are_refused() -> None:
    ts, pos, raw = _events(2, 50)
    record = _record(ts, pos, raw)
    with pytest.raises(TileCodecError, match="length: expected"):
        decode_tiles(record[:-8])
    with pytest.raises(TileCodecError, match="field 'n_slots': expected 2, got 3"):
        decode_sketches(record, 2)


def test_decode_many_and_encode_many_carry_the_section() -> None:
    ts, pos, raw = _events(3, 120)
    record = _record(ts, pos, raw)
    flat = decode_many(LAYOUT, [None, record])
    assert encode_many(LAYOUT, flat, 2)[1] == record


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 150), cuts=st.lists(st.integers(0, 150), max_size=4))
def test_merging_batches_in_any_grouping_gives_the_bytes_of_one_batch(seed: int, n: int, cuts: list[int]) -> None:
    """Bit-identical state whatever the batch boundaries and merge order."""
    ts, pos, raw = _events(seed, n)
    whole = _record(ts, pos, raw)
    bounds = sorted({0, n, *[min(c, n) for c in cuts]})
    parts = [
        decode_many(
            LAYOUT,
            [_record(ts[a:b], pos[a:b], {k: v[a:b] for k, v in raw.items()})],
        )
        for a, b in itertools.pairwise(bounds)
    ]
    for order in (parts, parts[::-1]):
        merged = order[0]
        for part in order[1:]:
            merged = merge_flat(LAYOUT, merged, part)
        record = encode_many(LAYOUT, merged, 1)[0]
        assert decode_sketches(record, N_SLOTS).tolist() == decode_sketches(whole, N_SLOTS).tolist()
        assert decode_tiles(record)[0].tolist() == decode_tiles(whole)[0].tolist()


def test_window_merge_is_order_independent() -> None:
    ts, pos, raw = _events(4, 300)
    blobs = decode_sketches(_record(ts, pos, raw), N_SLOTS)
    for j, slot in enumerate(LAYOUT.sketch_slots):
        column = blobs[:, j].tolist()
        assert merge_window(slot, column) == merge_window(slot, column[::-1])


def test_hashing_is_typed_and_deterministic() -> None:
    strings = hash_values(np.array(["1", "a", "1"], dtype=object))
    ints = hash_values(np.array([1, 2, 1], dtype=np.int64))
    floats = hash_values(np.array([1.0, -0.0, 0.0]))
    assert strings[0] == strings[2] and strings[0] != ints[0]
    assert ints[0] == ints[2] and ints[0] != floats[0]
    assert floats[1] == floats[2]
    # A fixed value: BLAKE2b-64 of b"s" + b"1", little endian (never Python's salted hash).
    assert int(strings[0]) == int(hash_values(np.array(["1"], dtype=object))[0])


def test_flat_tiles_without_blobs_merge_as_empty_state() -> None:
    ts, pos, raw = _events(5, 40)
    stored = decode_many(LAYOUT, [_record(ts, pos, raw)])
    bare = FlatTiles(stored.codes, stored.tiles, LAYOUT.empty(len(stored.codes)), stored.max_event_ts)
    merged = merge_flat(LAYOUT, stored, bare)
    assert merged.blobs(N_SLOTS).tolist() == stored.blobs(N_SLOTS).tolist()
