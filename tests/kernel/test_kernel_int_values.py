"""Property tests: min, max and last of an int column are ints, exactly the column's
values, in every evaluation path (docs/semantics.md section 3, "Types of values"):
evaluate, evaluate_many (rows and Python lists) and serving's WindowPlan; sum, mean and
stddev of it stay floats. Values reach +-2**53, the largest a field read as a double holds.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.kernel import encode_tiles, evaluate, evaluate_many
from engine.kernel.layout import COLUMN_VALUE_FUNCTIONS, PARTIAL_FUNCTIONS
from engine.kernel.view_spec import ViewSpec
from engine.kernel.window_plan import WindowPlan, decode_record
from tests.kernel.kernel_support import (
    ENTITIES,
    INT_VALUES,
    LAYOUT,
    Event,
    assert_same_value,
    build_state,
    empty_tile_set,
    histories,
    make_spec,
)
from tests.reference import reference_value

# Every function whose value reads no sum: exact next to 2**53 too.
EXACT_FUNCTIONS = (*sorted(COLUMN_VALUE_FUNCTIONS), "count", "time_since_last", "first_seen")
# Moderate ints: their sums, means and spreads are compared with the float tolerance.
SMALL_INTS = st.integers(-1000, 1000)


def check_paths(spec: ViewSpec, history: dict[str, Any], times: list[int], applied: list[Event]) -> None:
    """Every path's value of every entity, function and window as of each t equals the
    reference for an int column, type for type."""
    interval = history["interval"]
    state = build_state([[ev for ev in batch if ev in applied] for batch in history["batches"]], interval)
    newest = max((ev["e"] for ev in applied), default=0)
    sets = [state.get(entity, empty_tile_set()) for entity in ENTITIES]
    tiles = np.concatenate([s[0] for s in sets])
    partials = np.concatenate([s[1] for s in sets])
    indptr = np.concatenate([[0], np.cumsum([len(s[0]) for s in sets])])
    segments = np.repeat(np.arange(len(ENTITIES), dtype=np.int64), len(times))
    batch = evaluate_many(
        spec, tiles, partials, indptr, segments, np.tile(np.array(times, dtype=np.int64), len(ENTITIES))
    )
    lists = batch.to_pylists()
    plan = WindowPlan(spec)
    for i, (entity, t) in enumerate((entity, t) for entity in ENTITIES for t in times):
        seg_tiles, seg_partials = sets[entity]
        record = decode_record(encode_tiles(seg_tiles, seg_partials, newest), LAYOUT.width)
        paths = {
            "evaluate": evaluate(spec, seg_tiles, seg_partials, t).values,
            "evaluate_many row": batch.row(i).values,
            "evaluate_many lists": {name: lists[name][i] for name in spec.output_names},
            "window plan": dict(zip(spec.output_names, plan.evaluate(record, t)[0], strict=True)),
        }
        for agg in spec.aggregations:
            want = reference_value(
                applied, entity, t, agg.function, agg.window_ms, interval, agg.default, int_column=True
            )
            for path, values in paths.items():
                assert_same_value(values[agg.output_name], want, f"{path}: {agg.output_name} entity {entity} t {t}")


@settings(max_examples=120, deadline=None)
@given(
    histories(values=INT_VALUES),
    st.lists(st.integers(0, 30), min_size=1, max_size=4),
    st.sampled_from([None, -1.0, 7]),
)
def test_min_max_last_of_an_int_column_are_its_ints(
    history: dict[str, Any], offsets: list[int], default: float | None
) -> None:
    interval = history["interval"]
    spec = make_spec(interval, history["windows"], default, int_column=True, functions=EXACT_FUNCTIONS)
    events = history["events"]
    newest = max((ev["e"] for ev in events), default=0)
    check_paths(spec, history, [newest + k * interval // 3 for k in offsets], events)


@settings(max_examples=80, deadline=None)
@given(histories(values=SMALL_INTS), st.integers(0, 14), st.sampled_from([None, -1.0]))
def test_every_function_over_an_int_column_as_of_t(
    history: dict[str, Any], tile_back: int, default: float | None
) -> None:
    # Ingest every event up to t and nothing after (semantics section 3, as_of reads).
    interval = history["interval"]
    events = history["events"]
    newest = max((ev["e"] for ev in events), default=0)
    t = (newest // interval - tile_back) * interval + interval // 2
    spec = make_spec(interval, history["windows"], default, int_column=True, functions=PARTIAL_FUNCTIONS)
    check_paths(spec, history, [t], [ev for ev in events if ev["e"] <= t])


def test_the_ends_of_the_exact_range_come_back_whole() -> None:
    # 2**53 and -(2**53) as ints in a window with 5: min, max and last are those ints.
    events = [
        {"entity": 0, "e": 1_000 + i, "partition": 0, "offset": i, "value": v}
        for i, v in enumerate([2**53, -(2**53), 5])
    ]
    history = {"interval": 10, "events": events, "batches": [events], "windows": [3]}
    spec = make_spec(10, [3], None, int_column=True, functions=EXACT_FUNCTIONS)
    check_paths(spec, history, [1_002], events)
    values = evaluate(spec, *build_state([events], 10)[0], 1_002).values
    assert {n: values[n] for n in ("last_3", "max_3", "min_3")} == {"last_3": 5, "max_3": 2**53, "min_3": -(2**53)}
    assert all(type(v) is int for v in values.values())
