"""Tile record codec, retention, specs and the reference's watermark rule."""

from __future__ import annotations

import struct
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.kernel import (
    HEADER,
    AggregationSpec,
    KernelInputError,
    KernelSpecError,
    KernelSpecTypeError,
    PartialLayout,
    TileCodecError,
    ViewSpec,
    apply_retention,
    decode_tiles,
    encode_positions,
    encode_tiles,
    evaluate,
    merge_tile_sets,
)
from tests.int_strategies import int64s
from tests.kernel.kernel_support import LAYOUT, assert_same_value, build_state, make_spec
from tests.reference import apply_watermark

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@st.composite
def tile_sets(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    width = draw(st.integers(1, 3)) * 8
    tiles = np.array(sorted(draw(st.sets(st.integers(-(2**40), 2**40), max_size=20))), np.int64)
    values = draw(st.lists(finite, min_size=len(tiles) * width, max_size=len(tiles) * width))
    return tiles, np.array(values, dtype=np.float64).reshape(len(tiles), width)


@settings(max_examples=100, deadline=None)
@given(tile_sets(), int64s())
def test_codec_round_trip(tile_set: tuple[np.ndarray, np.ndarray], max_ts: int) -> None:
    tiles, partials = tile_set
    record = encode_tiles(tiles, partials, max_ts)
    assert len(record) == HEADER.size + 8 * len(tiles) * (1 + partials.shape[1])
    got_tiles, got_partials, got_max = decode_tiles(record, expected_width=partials.shape[1])
    np.testing.assert_array_equal(got_tiles, tiles)
    np.testing.assert_array_equal(got_partials, partials)
    assert got_max == max_ts
    assert got_partials.base is not None  # a view of the record, not a copy
    assert not got_partials.flags.writeable


def _record() -> bytes:
    tiles = np.array([3, 5, 9], dtype=np.int64)
    return encode_tiles(tiles, LAYOUT.empty(3), 123)


def test_every_truncation_is_refused_with_lengths() -> None:
    record = _record()
    for cut in range(len(record)):
        with pytest.raises(TileCodecError) as info:
            decode_tiles(record[:cut])
        expected = HEADER.size if cut < HEADER.size else len(record)
        assert f"expected {expected} bytes" in str(info.value)
        assert f"got {cut}" in str(info.value)
    with pytest.raises(TileCodecError, match=rf"expected {len(record)} bytes.*got {len(record) + 1}"):
        decode_tiles(record + b"\x00")


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        (lambda h: (2, *h[1:]), "field 'version': expected 1, got 2"),
        (lambda h: (h[0], 4, *h[2:]), "field 'flags': expected 0 or 1, got 4"),
        (lambda h: (*h[:3], h[3] + 1, h[4]), "length: expected"),
    ],
)
def test_corrupt_headers_are_refused(patch: Any, message: str) -> None:
    record = _record()
    header = HEADER.unpack_from(record)
    with pytest.raises(TileCodecError, match=message):
        decode_tiles(HEADER.pack(*patch(header)) + record[HEADER.size :])


def test_width_mismatch_and_unsorted_tiles_are_refused() -> None:
    with pytest.raises(TileCodecError, match="field 'width': expected 16, got 9"):
        decode_tiles(_record(), expected_width=16)
    record = bytearray(_record())
    struct.pack_into("<q", record, HEADER.size + 8, 1)  # tiles become 3, 1, 9
    with pytest.raises(TileCodecError, match="strictly increasing ids, got 3 then 1"):
        decode_tiles(bytes(record))
    with pytest.raises(KernelInputError, match="strictly increasing"):
        encode_tiles(np.array([2, 2]), LAYOUT.empty(2), 0)


def test_retention_keeps_tiles_until_their_end_is_more_than_retention_behind() -> None:
    interval, retention = 10, 30
    tiles = np.arange(0, 10, dtype=np.int64)
    partials = LAYOUT.empty(10)
    # Tile 4 ends at 50; newest 80 puts it exactly 30 behind: kept. At 81 it goes.
    kept, kept_partials = apply_retention(tiles, partials, 80, retention, interval)
    assert kept.tolist() == [4, 5, 6, 7, 8, 9]
    assert kept_partials.shape == (6, LAYOUT.width)
    assert apply_retention(tiles, partials, 81, retention, interval)[0].tolist() == [5, 6, 7, 8, 9]
    assert apply_retention(tiles, partials, -5, retention, interval)[0].tolist() == tiles.tolist()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 400), st.floats(-100, 100)), min_size=1, max_size=40),
    st.integers(0, 25),
    st.integers(0, 60),
)
def test_retention_never_changes_values_the_watermark_allows(
    raw: list[tuple[int, float]], lateness: int, back: int
) -> None:
    interval = 10
    spec = make_spec(interval, [1, 3])
    events = [{"entity": 0, "e": e, "partition": 0, "offset": i, "value": v} for i, (e, v) in enumerate(raw)]
    tiles, partials = build_state([events], interval)[0]
    newest = max(e for e, _ in raw)
    retention = max(a.window_ms for a in spec.aggregations if a.window_ms is not None) + lateness + interval
    kept_tiles, kept_partials = apply_retention(tiles, partials, newest, retention, interval)
    t = newest - lateness + back  # any time at or after the watermark
    full = evaluate(spec, tiles, partials, t)
    trimmed = evaluate(spec, kept_tiles, kept_partials, t)
    for name in spec.output_names:
        assert_same_value(trimmed.values[name], full.values[name], name)


def test_merge_tile_sets_refuses_unsorted_and_misshaped_input() -> None:
    with pytest.raises(KernelInputError, match="'tiles_a': expected strictly increasing"):
        merge_tile_sets(LAYOUT, [5, 4], LAYOUT.empty(2), [1], LAYOUT.empty(1))
    with pytest.raises(KernelInputError, match=r"'partials_b': expected shape \(1, 9\)"):
        merge_tile_sets(LAYOUT, [1], LAYOUT.empty(1), [2], np.zeros((1, 8)))


def test_view_spec_from_duck_typed_view() -> None:
    agg = SimpleNamespace(
        output_name="amount_sum_1h",
        column="amount",
        function="sum",
        window_ms=3_600_000,
        default=None,
    )
    view = SimpleNamespace(
        aggregations=[agg], interval_ms=60_000, columns=("amount",), retention_ms=3_660_000, int_columns=frozenset()
    )
    spec = ViewSpec.from_view(view)
    assert spec.aggregations == (AggregationSpec("amount_sum_1h", "amount", "sum", 3_600_000),)
    assert spec.window_tiles == (60,)
    assert PartialLayout.for_view(view) == spec.layout


def test_spec_validation_names_field_and_values() -> None:
    with pytest.raises(KernelSpecError, match="field 'function': expected one of"):
        AggregationSpec("x", "amount", "mode", 60_000)
    with pytest.raises(KernelSpecTypeError, match="field 'window_ms': expected an int"):
        AggregationSpec("x", "amount", "sum", 1.5)  # type: ignore[arg-type]
    with pytest.raises(KernelSpecError, match="expected a multiple of interval_ms=60000, got 90000"):
        ViewSpec(60_000, ("amount",), (AggregationSpec("x", "amount", "sum", 90_000),), 0)
    with pytest.raises(KernelSpecError, match="column 'other': expected one of"):
        ViewSpec(60_000, ("amount",), (AggregationSpec("x", "other", "sum", 60_000),), 0)
    with pytest.raises(KernelInputError, match=r"'partition': expected 0\.\.8191"):
        encode_positions([8192], [0])


def test_watermark_reference_follows_section_5() -> None:
    events = [
        {"entity": 0, "e": 100, "partition": 0, "offset": 0, "value": 1.0},
        {"entity": 0, "e": 90, "partition": 0, "offset": 1, "value": 1.0},  # 90 >= 100-10
        {"entity": 0, "e": 89, "partition": 0, "offset": 2, "value": 1.0},  # late
        {"entity": 0, "e": 500, "partition": 0, "offset": 3, "value": 1.0, "valid": False},
        {"entity": 0, "e": 95, "partition": 0, "offset": 4, "value": 1.0},  # bad record ignored
        {"entity": 0, "e": 10, "partition": 1, "offset": 0, "value": 1.0},  # other partition
    ]
    applied = apply_watermark(events, allowed_lateness_ms=10, watermark_outliers=0)
    assert [(ev["partition"], ev["offset"]) for ev in applied] == [(0, 0), (0, 1), (0, 4), (1, 0)]
    assert [ev["offset"] for ev in apply_watermark(events[:3], 0, 0)] == [0]


def test_watermark_reference_ignores_the_declared_number_of_outliers() -> None:
    def ev(offset: int, e: int) -> dict[str, object]:
        return {"entity": 0, "e": e, "partition": 0, "offset": offset, "value": 1.0}

    # One event far ahead (offset 1) does not make the later real events late with one
    # outlier allowed; the second far one (offset 4) confirms it, and 96 becomes late.
    events = [ev(0, 100), ev(1, 10_000), ev(2, 95), ev(3, 99), ev(4, 10_001), ev(5, 96)]
    applied = apply_watermark(events, allowed_lateness_ms=5)
    assert [e["offset"] for e in applied] == [0, 1, 2, 3, 4]
    assert [e["offset"] for e in apply_watermark(events, 5, watermark_outliers=0)] == [0, 1, 4]
