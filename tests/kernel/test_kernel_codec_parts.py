"""Hot and cold parts of a tile record (engine/kernel/codec.py): splitting a record and
joining its parts gives it back byte for byte, each part is the record encode_tiles
writes for its tiles, and no decoder takes a hot part for a whole record."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.kernel.codec import (
    FLAG_COLD,
    check_header,
    decode_tiles,
    encode_tiles,
    has_cold,
    join_parts,
    leading_tiles,
    split_record,
    stored_cold_part,
    with_cold_flag,
)
from engine.kernel.exceptions import KernelInputError, TileCodecError


@st.composite
def records(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    n = draw(st.integers(2, 12))
    width = draw(st.integers(0, 3))
    slots = draw(st.integers(0, 2))
    tiles = np.array(sorted(draw(st.sets(st.integers(-(2**40), 2**40), min_size=n, max_size=n))), dtype=np.int64)
    partials = np.array(
        draw(st.lists(st.floats(allow_nan=False), min_size=n * width, max_size=n * width)), dtype=np.float64
    ).reshape(n, width)
    blobs = None
    if slots:
        blobs = np.empty((n, slots), dtype=object)
        blobs[:] = [[draw(st.binary(max_size=11)) for _ in range(slots)] for _ in range(n)]
    return tiles, partials, blobs


@given(parts=records(), data=st.data())
def test_split_and_join_give_the_record_back(
    parts: tuple[np.ndarray, np.ndarray, np.ndarray | None], data: st.DataObject
) -> None:
    tiles, partials, blobs = parts
    record = encode_tiles(tiles, partials, 1234, blobs)
    cut = data.draw(st.integers(1, len(tiles) - 1))
    cold, hot = split_record(record, cut)
    assert join_parts(cold, hot) == record
    assert cold == encode_tiles(tiles[:cut], partials[:cut], 1234, None if blobs is None else blobs[:cut])
    plain_hot = encode_tiles(tiles[cut:], partials[cut:], 1234, None if blobs is None else blobs[cut:])
    assert hot == with_cold_flag(plain_hot, True) and has_cold(hot) and not has_cold(cold)
    assert with_cold_flag(hot, False) == plain_hot
    assert leading_tiles(record, 2) == tuple(int(t) for t in tiles[:2])
    with pytest.raises(TileCodecError, match="flags"):
        decode_tiles(hot)
    with pytest.raises(TileCodecError, match="every cold tile before every hot tile"):
        join_parts(hot, cold)


def test_split_needs_a_tile_on_each_side() -> None:
    record = encode_tiles(np.array([1, 2]), np.zeros((2, 1)), 0)
    for cut in (0, 2):
        with pytest.raises(KernelInputError, match="n_cold"):
            split_record(record, cut)
    assert record[1] & FLAG_COLD == 0


def test_a_flagged_record_is_refused_without_its_cold_part_and_by_plain_header_checks() -> None:
    record = encode_tiles(np.arange(4, dtype=np.int64), np.ones((4, 1)), 7)
    cold, hot = split_record(record, 2)
    assert stored_cold_part(cold, b"Kkey") is cold
    with pytest.raises(TileCodecError, match="tile record b'Kkey': its hot part is flagged, but no cold part"):
        stored_cold_part(None, b"Kkey")
    assert check_header(hot, hot_part=True) == (1, 2, 7)
    with pytest.raises(TileCodecError, match="field 'flags'"):
        check_header(hot)
