"""last_n, first_n and last_distinct_n through the kernel (docs/semantics.md "List functions").

Random histories stream through the write path in random batches (aggregate, merge,
retention folding the lifetime windows' expired tiles), then are read as the server
reads them (one entity, and many at once) and as training sets compute them (event
level): every answer equals the brute-force reference in tests/reference.py. The list
blobs merge to the same bytes in any grouping and order and hold at most n entries.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.kernel.codec import decode_sketches, decode_tiles
from engine.kernel.layout import AggregationSpec, encode_positions
from engine.kernel.sketches import SketchSlot, merge_window
from engine.kernel.value_lists import decode_entries
from engine.kernel.view_spec import ViewSpec
from engine.kernel.window import evaluate
from engine.kernel.window_many import evaluate_many
from engine.kernel.window_plan import WindowPlan, decode_record
from engine.offline.event_windows import evaluate_windows
from tests.kernel.kernel_support import stream_sketch_records
from tests.reference import reference_value

G = 60_000
WINDOW = 5 * G
LISTS = (
    AggregationSpec("m_last3_5m", "merchant", "last_n", WINDOW, params=(("n", 3),)),
    AggregationSpec("a_first2_5m", "amount", "first_n", WINDOW, params=(("n", 2),)),
    AggregationSpec("m_distinct2_life", "merchant", "last_distinct_n", None, params=(("n", 2),)),
    AggregationSpec("q_last4_life", "qty", "last_n", None, params=(("n", 4),)),
    AggregationSpec("m_first3_life", "merchant", "first_n", None, params=(("n", 3),)),
    AggregationSpec("q_distinct3_5m", "qty", "last_distinct_n", WINDOW, params=(("n", 3),)),
)
SPEC = ViewSpec(
    G, ("merchant", "amount", "qty"), (*LISTS, AggregationSpec("n_5m", "amount", "count", WINDOW)), WINDOW + G
)
LAYOUT = SPEC.layout
ENTITIES = 2
COLUMNS = {"m": "merchant", "a": "amount", "q": "qty"}


@st.composite
def histories(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Events of two entities, few distinct times (ties on e), shuffled positions."""
    n = draw(st.integers(1, 60))
    times = sorted(draw(st.lists(st.integers(0, 20 * G), min_size=n, max_size=n)))
    partitions = draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
    offsets = draw(st.permutations(range(n)))
    return [
        {
            "entity": draw(st.integers(0, ENTITIES - 1)),
            "e": t,
            "partition": p,
            "offset": o,
            "merchant": draw(st.sampled_from(["m0", "m1", "m2", "m3", "é"])),
            "amount": draw(st.sampled_from([1.0, 2.5, -3.0, 1e300])),
            "qty": draw(st.sampled_from([0, 1, 2, -7])),
        }
        for t, p, o in zip(times, partitions, offsets, strict=True)
    ]


def _columns(events: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    return {
        "merchant": np.array([ev["merchant"] for ev in events], dtype=object),
        "amount": np.array([ev["amount"] for ev in events], dtype=np.float64),
        "qty": np.array([ev["qty"] for ev in events], dtype=np.int64),
    }


def _positions(events: list[dict[str, Any]]) -> np.ndarray:
    return encode_positions([ev["partition"] for ev in events], [ev["offset"] for ev in events])


def _stream(batches: list[list[dict[str, Any]]]) -> list[bytes | None]:
    """The write path: each batch aggregated, merged into the records, trimmed/folded."""
    arrays = [
        {
            "entity": np.array([ev["entity"] for ev in batch], dtype=np.int64),
            "e": np.array([ev["e"] for ev in batch], dtype=np.int64),
            "pos": _positions(batch),
            **_columns(batch),
        }
        for batch in batches
    ]
    return stream_sketch_records(SPEC, ENTITIES, arrays)


def _reference(events: list[dict[str, Any]], entity: int, t: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for agg in SPEC.aggregations:
        column = "value" if agg.column == "amount" else agg.column
        chosen = [{**ev, "value": ev["amount"]} for ev in events]
        n = agg.param("n")
        out[agg.output_name] = reference_value(
            chosen, entity, t, agg.function, agg.window_ms, G, n=None if n is None else int(n), column=column
        )
    return out


def _training(events: list[dict[str, Any]], queries: list[tuple[int, int]]) -> dict[str, list[Any]]:
    """The training-set path: event-level windows over the log's sorted events."""
    order = sorted(range(len(events)), key=lambda i: (events[i]["entity"], events[i]["e"], _positions([events[i]])[0]))
    chosen = [events[i] for i in order]
    series = evaluate_windows(
        np.array([ev["entity"] for ev in chosen], dtype=np.int64),
        np.array([ev["e"] for ev in chosen], dtype=np.int64),
        {"amount": np.array([ev["amount"] for ev in chosen], dtype=np.float64)},
        np.array([q[0] if any(ev["entity"] == q[0] for ev in chosen) else -1 for q in queries], dtype=np.int64),
        np.array([q[1] for q in queries], dtype=np.int64),
        G,
        SPEC.aggregations,
        raw_values=_columns(chosen),
        positions=_positions(chosen),
    )
    return {name: s.to_list() for name, s in series.items()}


@settings(max_examples=60, deadline=None)
@given(events=histories(), cuts=st.lists(st.integers(0, 60), max_size=4), late=st.integers(0, 8 * G))
def test_online_and_training_values_equal_the_reference(
    events: list[dict[str, Any]], cuts: list[int], late: int
) -> None:
    bounds = [0, *sorted(c for c in cuts if c < len(events)), len(events)]
    records = _stream([events[a:b] for a, b in itertools.pairwise(bounds) if b > a])
    queries: list[tuple[int, int]] = []
    n_slots = len(LAYOUT.sketch_slots)
    for entity, record in enumerate(records):
        mine = [ev for ev in events if ev["entity"] == entity]
        if not mine:
            assert record is None or not len(decode_tiles(record)[0])
            continue
        assert record is not None
        # Exact as of any t at or after the entity's newest event (semantics "Online reads").
        t = max(ev["e"] for ev in mine) + late
        tiles, partials, _ = decode_tiles(record)
        sketches = decode_sketches(record, n_slots)
        for blob, slot in zip(sketches.T.tolist(), LAYOUT.sketch_slots, strict=True):
            assert all(len(decode_entries(b)) <= int(slot.param("n")) for b in blob)  # bounded state
        want = _reference(events, entity, t)
        assert dict(evaluate(SPEC, tiles, partials, t, sketches).values) == want
        batch = evaluate_many(SPEC, tiles, partials, [0, len(tiles)], [0, 0], [t, t], sketches)
        assert batch.row(1).values == want
        assert batch.to_pylists() == {k: [v, v] for k, v in want.items()}
        # The server's one-entity plan over the packed record.
        plan = WindowPlan(SPEC)
        values, _ = plan.evaluate(decode_record(record, LAYOUT.width, n_slots), t)
        assert dict(zip(plan.names, values, strict=True)) == want
        queries.append((entity, t))
    # Training sets answer any t exactly, including times before the newest event.
    queries += [(entity, t) for entity in range(ENTITIES) for t in (0, 3 * G + 1, 9 * G, 25 * G)]
    training = _training(events, queries)
    for i, (entity, t) in enumerate(queries):
        assert {k: v[i] for k, v in training.items()} == _reference(events, entity, t), (entity, t)


@settings(max_examples=60, deadline=None)
@given(events=histories(), seed=st.integers(0, 2**32 - 1))
def test_blobs_merge_to_the_same_bytes_in_any_grouping_and_order(events: list[dict[str, Any]], seed: int) -> None:
    rng = np.random.default_rng(seed)
    raw = _columns(events)
    ts = np.array([ev["e"] for ev in events], dtype=np.int64)
    pos = _positions(events)
    order = np.lexsort((pos, ts))
    for slot in LAYOUT.sketch_slots:
        kind = slot.implementation
        column = raw[slot.column][order]
        whole = kind.build(slot, column, ts[order], pos[order], np.zeros(1, dtype=np.int64))[0]
        # Any split of the events into groups, each built on its own, then merged in any order.
        labels = rng.integers(0, 4, len(events))
        parts = []
        for label in range(4):
            picked = order[labels[order] == label]
            if len(picked):
                parts.append(
                    kind.build(slot, raw[slot.column][picked], ts[picked], pos[picked], np.zeros(1, np.int64))[0]
                )
        shuffled = [parts[i] for i in rng.permutation(len(parts))]
        assert merge_window(slot, shuffled) == whole
        assert merge_window(slot, parts[::-1]) == whole
        assert len(decode_entries(whole)) <= int(slot.param("n"))


def test_an_empty_list_is_fresh_per_answer() -> None:
    plan = WindowPlan(SPEC)
    first, _ = plan.evaluate(None, 0)
    assert first[0] == []
    first[0].append("changed by a caller")
    assert plan.evaluate(None, 0)[0][0] == []


def test_values_keep_the_column_type_and_order() -> None:
    slot = SketchSlot.of("qty", "newest_distinct", n=3)
    # Sorted by (e, position) as build expects: at e=30, position 3 is newer than 2.
    values = np.array([1, 2, 3, 1, 2], dtype=np.int64)
    ts = np.array([10, 20, 30, 30, 40], dtype=np.int64)
    pos = np.array([0, 1, 2, 3, 4], dtype=np.int64)
    blob = slot.implementation.build(slot, values, ts, pos, np.zeros(1, dtype=np.int64))[0]
    got = slot.implementation.evaluate(slot, "last_distinct_n", (("n", 3),), blob)
    assert got == [2, 1, 3]
    assert all(type(v) is int for v in got)
    strings = SketchSlot.of("merchant", "oldest_values", n=2)
    built = strings.implementation.build(
        strings, np.array(["b", "a", "c"], dtype=object), ts[:3], pos[:3], np.zeros(1, dtype=np.int64)
    )[0]
    assert strings.implementation.evaluate(strings, "first_n", (("n", 2),), built) == ["b", "a"]
