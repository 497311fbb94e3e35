"""Property tests: kernel aggregation + merge + window evaluation equal the reference."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.kernel import evaluate, evaluate_many
from engine.kernel.exceptions import KernelSpecError
from engine.kernel.layout import FIELD_COUNT, FIELD_LAST_VALUE, PARTIAL_FUNCTIONS, PartialLayout
from engine.kernel.view_spec import ViewSpec
from tests.kernel.kernel_support import (
    ENTITIES,
    LAYOUT,
    Event,
    aggregate_events,
    assert_same_value,
    build_state,
    empty_tile_set,
    histories,
    make_spec,
)
from tests.reference import reference_value


def check_all(history: dict[str, Any], t: int, applied: list[Event]) -> None:
    """Kernel values of every entity, function and window as of t equal the reference."""
    interval = history["interval"]
    spec = make_spec(interval, history["windows"])
    state = build_state([[ev for ev in batch if ev in applied] for batch in history["batches"]], interval)
    for entity in ENTITIES:
        tiles, partials = state.get(entity, empty_tile_set())
        result = evaluate(spec, tiles, partials, t)
        for agg in spec.aggregations:
            want = reference_value(applied, entity, t, agg.function, agg.window_ms, interval, agg.default)
            assert_same_value(result.values[agg.output_name], want, f"{agg.output_name} entity {entity} t {t}")


@settings(max_examples=150, deadline=None)
@given(histories(), st.integers(0, 30))
def test_every_function_matches_reference_after_all_events(history: dict[str, Any], after: int) -> None:
    events = history["events"]
    newest = max((ev["e"] for ev in events), default=0)
    check_all(history, newest + after * history["interval"] // 3, events)


@settings(max_examples=100, deadline=None)
@given(histories(), st.integers(0, 14), st.booleans(), st.integers(1, 59))
def test_values_as_of_t_on_and_off_tile_boundaries(
    history: dict[str, Any], tile_back: int, on_boundary: bool, into_tile: int
) -> None:
    # Ingest every event up to t and nothing after (semantics section 3, as_of reads).
    events = history["events"]
    interval = history["interval"]
    newest = max((ev["e"] for ev in events), default=0)
    t = (newest // interval - tile_back) * interval
    if not on_boundary:
        t += into_tile % interval or 1
    check_all(history, t, [ev for ev in events if ev["e"] <= t])


@settings(max_examples=60, deadline=None)
@given(histories(), st.randoms(use_true_random=False))
def test_partials_do_not_depend_on_batching_or_merge_order(history: dict[str, Any], rnd: Any) -> None:
    events = history["events"]
    interval = history["interval"]
    one = build_state([events], interval)
    shuffled = list(events)
    rnd.shuffle(shuffled)
    singles = build_state([[ev] for ev in shuffled], interval)
    assert one.keys() == singles.keys()
    for entity, (tiles, partials) in one.items():
        other_tiles, other_partials = singles[entity]
        np.testing.assert_array_equal(tiles, other_tiles)
        exact = [FIELD_COUNT, 3, 4, 5, 6, FIELD_LAST_VALUE]  # count, min, max, last_*
        np.testing.assert_array_equal(partials[:, exact], other_partials[:, exact])
        np.testing.assert_allclose(partials[:, 1:3], other_partials[:, 1:3], rtol=1e-9, atol=1e-9)


@settings(max_examples=80, deadline=None)
@given(histories(), st.lists(st.tuples(st.integers(0, 3), st.integers(-5, 40)), max_size=12))
def test_evaluate_many_equals_evaluate(history: dict[str, Any], queries: list[tuple[int, int]]) -> None:
    interval = history["interval"]
    spec = make_spec(interval, history["windows"], default=None)
    state = build_state(history["batches"], interval)
    newest = max((ev["e"] for ev in history["events"]), default=0)
    # Entity 3 never has events: an empty segment inside the CSR arrays.
    sets = [state.get(entity, empty_tile_set()) for entity in (0, 3, 1, 2)]
    tiles = np.concatenate([s[0] for s in sets])
    partials = np.concatenate([s[1] for s in sets])
    indptr = np.concatenate([[0], np.cumsum([len(s[0]) for s in sets])])
    segments = np.array([q[0] for q in queries], dtype=np.int64)
    times = np.array([newest - q[1] * interval // 2 for q in queries], dtype=np.int64)
    batch = evaluate_many(spec, tiles, partials, indptr, segments, times)
    assert len(batch) == len(queries)
    for i, (segment, t) in enumerate(zip(segments.tolist(), times.tolist(), strict=True)):
        seg_tiles, seg_partials = sets[segment]
        want = evaluate(spec, seg_tiles, seg_partials, t)
        got = batch.row(i)
        assert got.empty == want.empty
        for name in spec.output_names:
            assert_same_value(got.values[name], want.values[name], f"{name} query {i}")
    lists = batch.to_pylists()
    for name in spec.output_names:
        assert [batch.row(i).values[name] for i in range(len(queries))] == lists[name]


def test_current_tile_is_taken_whole() -> None:
    # Documented limitation (semantics section 3): events of t's tile with e > t count.
    interval = 10
    spec = make_spec(interval, [1])
    events = [
        {"entity": 0, "e": 100, "partition": 0, "offset": 1, "value": 1.0},
        {"entity": 0, "e": 108, "partition": 0, "offset": 2, "value": 5.0},
        {"entity": 0, "e": 110, "partition": 0, "offset": 3, "value": 7.0},
    ]
    tiles, partials = build_state([events], interval)[0]
    result = evaluate(spec, tiles, partials, 103)
    assert result.values["count_1"] == 2  # the reference says 1 (only e=100 <= 103)
    assert result.values["last_1"] == 5.0
    assert reference_value(events, 0, 103, "count", interval, interval) == 1


def test_empty_window_values_and_defaults() -> None:
    interval = 10
    plain = make_spec(interval, [2])
    with_default = make_spec(interval, [2], default=-1.0)
    tiles, partials = empty_tile_set()
    result = evaluate(plain, tiles, partials, 1_000)
    assert result.values == {
        "count_2": 0,
        "sum_2": 0.0,
        **{f"{f}_2": None for f in PARTIAL_FUNCTIONS if f not in ("count", "sum")},
    }
    assert result.empty == (True,) * len(PARTIAL_FUNCTIONS)
    assert not result.any_defaulted
    defaulted = evaluate(with_default, tiles, partials, 1_000)
    assert set(defaulted.values.values()) == {-1.0}
    assert defaulted.defaulted == (True,) * len(PARTIAL_FUNCTIONS)
    batch = evaluate_many(with_default, tiles, partials, [0, 0], [0, 0], [5, 50])
    assert batch.defaulted.all()
    assert batch.row(1).values == defaulted.values


def test_layout_is_single_column_plus_first_ts() -> None:
    assert LAYOUT.width == 9 and LAYOUT.column_width == 8
    assert LAYOUT.offset("amount") == 0 and LAYOUT.first_event_field == 8
    assert PartialLayout(("amount",)).width == 8  # views without first_seen do not pay for it
    with pytest.raises(KernelSpecError, match="tracks_first_event"):
        _ = PartialLayout(("amount",)).first_event_field


def test_aggregate_batch_partials_of_one_group() -> None:
    values = [3.0, -1.0, 3.0, 10.0]
    events = [{"entity": 7, "e": 1_000 + i, "partition": 1, "offset": 10 - i, "value": v} for i, v in enumerate(values)]
    events.append({"entity": 7, "e": 1_003, "partition": 0, "offset": 99, "value": -4.0})
    codes, tiles, partials = aggregate_events(events, 1_000)
    assert codes.tolist() == [7] and tiles.tolist() == [1]
    everything = np.array([*values, -4.0])
    count, total, m2, low, high, last_ts, last_pos, last_value, first_ts = partials[0].tolist()
    assert first_ts == 1_000.0
    assert (count, low, high) == (5.0, -4.0, 10.0)
    assert total == pytest.approx(everything.sum(), rel=1e-12)
    assert m2 == pytest.approx(((everything - everything.mean()) ** 2).sum(), rel=1e-12)
    # e=1003 twice: partition 1 beats partition 0 in the (e, partition, offset) order.
    assert (last_ts, last_pos, last_value) == (1_003.0, float(2**40 + 7), 10.0)


def test_evaluate_many_with_tile_ids_too_far_apart_for_one_key() -> None:
    # Tile ids spread over ~2**61 overflow the composite search key: per-entity fallback.
    interval = 1
    spec = make_spec(interval, [1, 3])
    far = 2**61
    events = [
        {"entity": 0, "e": 50, "partition": 0, "offset": 0, "value": 2.0},
        {"entity": 1, "e": far, "partition": 0, "offset": 1, "value": 4.0},
        {"entity": 1, "e": far + 2, "partition": 0, "offset": 2, "value": 6.0},
    ]
    state = build_state([events], interval)
    tiles = np.concatenate([state[0][0], state[1][0]])
    partials = np.concatenate([state[0][1], state[1][1]])
    indptr = [0, len(state[0][0]), len(tiles)]
    times = [51, far + 3, far]
    batch = evaluate_many(spec, tiles, partials, indptr, [0, 1, 1], times)
    for i, (entity, t) in enumerate(zip([0, 1, 1], times, strict=True)):
        assert batch.row(i) == evaluate(spec, *state[entity], t)


def test_a_projected_spec_evaluates_its_aggregations_as_the_full_spec() -> None:
    spec = make_spec(60_000, [1, 5, 60], default=None)
    events = [Event(entity=0, e=60_000 * i + 17 * i, value=float(i % 7), partition=0, offset=i) for i in range(90)]
    tiles, partials = build_state([events], 60_000)[0]
    kept = [spec.output_names[-1], spec.output_names[0]]
    projected = spec.project(kept)
    assert projected.output_names == (spec.output_names[0], spec.output_names[-1])  # declared order
    assert projected.layout == spec.layout
    t = 60_000 * 95
    full, part = evaluate(spec, tiles, partials, t), evaluate(projected, tiles, partials, t)
    for name in projected.output_names:
        assert_same_value(part.values[name], full.values[name], name)
    with pytest.raises(ValueError, match="unknown \\['nope'\\]"):
        spec.project(["nope"])
    # Without its first_seen aggregations the projection still reads records with first_ts.
    plain = spec.project([n for n in spec.output_names if not n.startswith("first_seen")])
    assert plain.layout == spec.layout and plain.layout.tracks_first_event
    with pytest.raises(KernelSpecError, match="tracks_first_event"):
        ViewSpec(60_000, ("amount",), spec.aggregations, spec.retention_ms, tracks_first_event=False)
