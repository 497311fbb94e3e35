"""The serving hot path (WindowPlan over decode_record) equals evaluate over decode_tiles."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.kernel import HEADER, TileCodecError, decode_tiles, encode_tiles, evaluate
from engine.kernel.codec import decode_sketches
from engine.kernel.window_plan import WindowPlan, decode_record
from tests.kernel.kernel_support import (
    LAYOUT,
    assert_same_value,
    build_state,
    histories,
    make_spec,
    stream_sketch_records,
)
from tests.kernel.sketch_view_support import ENTITIES, G, make_batch
from tests.kernel.sketch_view_support import PLAN as SKETCH_PLAN
from tests.kernel.sketch_view_support import SPEC as SKETCH_SPEC
from tests.kernel.sketch_view_support import events as sketch_events


def _check_plan(spec: Any, record: bytes, t: int) -> None:
    tiles, partials, _ = decode_tiles(record, expected_width=LAYOUT.width)
    want = evaluate(spec, tiles, partials, t)
    values, empty = WindowPlan(spec).evaluate(decode_record(record, LAYOUT.width), t)
    assert tuple(empty) == want.empty
    for name, got in zip(spec.output_names, values, strict=True):
        assert_same_value(got, want.values[name], f"{name} at t={t}")
        assert type(got) is type(want.values[name]), name


@settings(max_examples=120, deadline=None)
@given(histories(), st.lists(st.integers(-5, 40), min_size=1, max_size=6), st.sampled_from([None, -1.0, 7]))
def test_plan_equals_evaluate(history: dict[str, Any], offsets: list[int], default: float | None) -> None:
    interval = history["interval"]
    spec = make_spec(interval, history["windows"], default=default)
    state = build_state(history["batches"], interval)
    newest = max((ev["e"] for ev in history["events"]), default=0)
    for tiles, partials in state.values():
        record = encode_tiles(tiles, partials, newest)
        for k in offsets:
            _check_plan(spec, record, newest - k * interval // 2)


@pytest.mark.parametrize("n", [150, 600])  # 600: past the row-loop limit (vectorized path)
def test_long_tile_sets_and_windows(n: int) -> None:
    rng = np.random.default_rng(5)
    events = [
        {"entity": 0, "e": int(e), "partition": 0, "offset": i, "value": float(v)}
        for i, (e, v) in enumerate(zip(np.sort(rng.integers(0, n * 10, n * 2)), rng.normal(50, 20, n * 2), strict=True))
    ]
    spec = make_spec(10, (1, 7, n), default=None)
    tiles, partials = build_state([events], 10)[0]
    assert len(tiles) > n * 2 // 3
    record = encode_tiles(tiles, partials, int(events[-1]["e"]))
    for t in (0, n * 5, n * 10, n * 30):
        _check_plan(spec, record, t)


def test_missing_or_empty_record_gives_empty_values_and_defaults() -> None:
    spec = make_spec(10, (2,), default=-1.0)
    plan = WindowPlan(spec)
    values, empty = plan.evaluate(None, 100)
    assert values == [-1.0] * len(spec.aggregations) and empty == [True] * len(spec.aggregations)
    assert plan.has_default == (True,) * len(spec.aggregations)
    no_tiles = decode_record(encode_tiles(np.empty(0, np.int64), LAYOUT.empty(0), 5), LAYOUT.width)
    assert plan.evaluate(no_tiles, 100) == (values, empty)


def test_decode_record_refuses_what_decode_tiles_refuses_with_the_same_message() -> None:
    good = encode_tiles(np.array([3, 5, 9], dtype=np.int64), LAYOUT.empty(3), 123)
    decoded = decode_record(good, LAYOUT.width)
    assert tuple(decoded.tiles) == (3, 5, 9) and decoded.max_event_ts == 123
    assert len(decoded.flat) == 3 * LAYOUT.width
    unsorted = bytearray(good)
    struct.pack_into("<q", unsorted, HEADER.size + 8, 1)
    long = bytearray(encode_tiles(np.arange(300, dtype=np.int64), LAYOUT.empty(300), 0))
    struct.pack_into("<q", long, HEADER.size + 8 * 170, 3)  # past the Python check's length
    bad_version = HEADER.pack(2, *HEADER.unpack_from(good)[1:]) + good[HEADER.size :]
    for record, width in (
        (good[:-1], LAYOUT.width),
        (good, 16),
        (bytes(unsorted), LAYOUT.width),
        (bytes(long), LAYOUT.width),
        (bad_version, LAYOUT.width),
        (good[:5], LAYOUT.width),
    ):
        with pytest.raises(TileCodecError) as want:
            decode_tiles(record, expected_width=width)
        with pytest.raises(TileCodecError) as got:
            decode_record(record, width)
        assert str(got.value) == str(want.value)


@settings(max_examples=60, deadline=None)
@given(writes=st.lists(sketch_events, min_size=1, max_size=3), offsets=st.lists(st.integers(-2, 12), max_size=4))
def test_plan_with_sketches_and_lists_equals_evaluate(writes: list[list[dict[str, Any]]], offsets: list[int]) -> None:
    """Sketch, list and plain aggregations of one record in one pass: the plan answers
    what the vectorized evaluate answers (blobs merged once per slot and window)."""
    batches = []
    position = 0
    for write in writes:
        batches.append(make_batch(write, position))
        position += len(write)
    newest = max(int(b["e"].max()) for b in batches)
    for record in stream_sketch_records(SKETCH_SPEC, ENTITIES, batches):
        if record is None:
            continue
        tiles, partials, _ = decode_tiles(record, expected_width=SKETCH_SPEC.layout.width)
        blobs = decode_sketches(record, len(SKETCH_SPEC.layout.sketch_slots))
        for k in (0, *offsets):
            t = newest + k * G // 3
            want = evaluate(SKETCH_SPEC, tiles, partials, t, blobs)
            decoded = decode_record(record, SKETCH_SPEC.layout.width, len(SKETCH_SPEC.layout.sketch_slots))
            values, empty = SKETCH_PLAN.evaluate(decoded, t)
            assert tuple(empty) == want.empty
            for name, got in zip(SKETCH_SPEC.output_names, values, strict=True):
                expected = want.values[name]
                assert type(got) is type(expected), name
                if isinstance(expected, list):
                    assert got == expected, f"{name} at t={t}"
                else:
                    assert_same_value(got, expected, f"{name} at t={t}")
