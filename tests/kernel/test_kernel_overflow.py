"""Huge finite values: partials that overflow stay non-finite and silent (issue 14, item 2).

pytest turns warnings into errors, so on the kernel before ``np.errstate`` these tests failed
with numpy's "overflow encountered" RuntimeWarning. Serving reports such values as INVALID
(serving/pipeline.py), never PRESENT.
"""

from __future__ import annotations

import math

import numpy as np

from engine.kernel.batch_merge import decode_many, merge_flat
from engine.kernel.codec import encode_tiles
from engine.kernel.window import evaluate
from engine.kernel.window_many import evaluate_many
from engine.kernel.window_plan import WindowPlan, decode_record
from tests.kernel.kernel_support import LAYOUT, aggregate_events, build_state, make_spec

INTERVAL = 60_000
BASE = 1_764_000_000_000 // INTERVAL * INTERVAL


def _events(values: list[float], tile: int = 0) -> list[dict[str, object]]:
    return [
        {"entity": 0, "e": BASE + tile * INTERVAL + i, "partition": 0, "offset": tile * 100 + i, "value": v}
        for i, v in enumerate(values)
    ]


def test_sums_that_overflow_inside_one_tile_are_silent_and_not_finite() -> None:
    _, tiles, partials = aggregate_events(_events([1e308, 1e308, 5.0]), INTERVAL)
    assert len(tiles) == 1
    assert math.isinf(partials[0, 1])  # sum


def test_overflow_across_tiles_and_batches_reaches_every_evaluation_path_silently() -> None:
    spec = make_spec(INTERVAL, [3])
    state = build_state([_events([1e308], 0), _events([1e308], 1), _events([2.0], 2)], INTERVAL)
    tiles, partials = state[0]
    t = BASE + 2 * INTERVAL + 10
    one = evaluate(spec, tiles, partials, t)
    record = encode_tiles(tiles, partials, t)
    plan_values, empty = WindowPlan(spec).evaluate(decode_record(record, LAYOUT.width), t)
    flat = decode_many(LAYOUT, [record, record])
    many = evaluate_many(spec, flat.tiles, flat.partials, np.array([0, 3, 6]), np.array([0, 1]), np.array([t, t]))
    merged = merge_flat(LAYOUT, flat, flat)  # merging overflowed partials again
    assert np.isinf(merged.partials[:, 1]).any()
    by_name = dict(zip(spec.output_names, plan_values, strict=True))
    for values in (one.values, by_name, {k: v[0] for k, v in many.to_pylists().items()}):
        assert values["count_3"] == 3
        assert values["min_3"] == 2.0 and values["max_3"] == 1e308 and values["last_3"] == 2.0
        for name in ("sum_3", "mean_3", "stddev_3"):
            value = values[name]
            assert isinstance(value, float) and not math.isfinite(value), (name, value)
    assert not any(empty)
