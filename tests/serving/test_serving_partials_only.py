"""Many-entity reads of a projection that evaluates no sketch decode the partials alone:
the same tile ids, partials and newest event times as the full decode, the same values,
and a corrupt record (its sketch section included) is still refused."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings

from engine.kernel import TileCodecError
from engine.kernel.batch_merge import decode_many
from engine.kernel.codec import without_sketch_section
from engine.kernel.window_many import evaluate_many
from tests.kernel.kernel_support import stream_sketch_records
from tests.kernel.sketch_view_support import ENTITIES, SPEC, events, make_batch

PLAIN = SPEC.project(["n", "s", "sd", "last", "since", "first"])  # no sketch aggregation
LAYOUT = replace(SPEC.layout, sketch_slots=())


@settings(max_examples=40, deadline=None)
@given(write=events)
def test_partials_alone_decode_and_evaluate_like_the_full_record(write: list[dict[str, Any]]) -> None:
    records = [*stream_sketch_records(SPEC, ENTITIES, [make_batch(write, 0)]), None]
    full = decode_many(SPEC.layout, records)
    alone = decode_many(LAYOUT, [None if r is None else without_sketch_section(r, LAYOUT.width) for r in records])
    assert alone.sketches is None
    np.testing.assert_array_equal(alone.codes, full.codes)
    np.testing.assert_array_equal(alone.tiles, full.tiles)
    np.testing.assert_array_equal(alone.partials, full.partials)
    np.testing.assert_array_equal(alone.max_event_ts, full.max_event_ts)
    indptr = np.zeros(len(records) + 1, dtype=np.int64)
    np.cumsum(np.bincount(full.codes, minlength=len(records)), out=indptr[1:])
    t = int(full.max_event_ts.max())
    segments = np.arange(len(records))
    want = evaluate_many(PLAIN, full.tiles, full.partials, indptr, segments, t, full.sketches)
    got = evaluate_many(PLAIN, alone.tiles, alone.partials, indptr, segments, t)
    assert got.to_pylists() == want.to_pylists()


def test_a_corrupt_sketch_section_is_still_refused() -> None:
    record = stream_sketch_records(SPEC, 1, [make_batch([{"entity": 0, "e": 5, "amount": 1.0, "merchant": "m1"}], 0)])[
        0
    ]
    assert record is not None
    assert without_sketch_section(record, LAYOUT.width) != record  # the section was there and is cut off
    with pytest.raises(TileCodecError, match="length"):
        without_sketch_section(record[:-8], LAYOUT.width)
    with pytest.raises(TileCodecError, match="width"):
        without_sketch_section(record, LAYOUT.width + 1)
