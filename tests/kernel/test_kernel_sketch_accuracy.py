"""count_distinct (exact) against the brute-force reference; HyperLogLog and DDSketch
against their documented bounds and the reference libraries; the serving paths agree."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.kernel.aggregate import aggregate_batch, aggregate_sketches
from engine.kernel.batch_merge import FlatTiles, decode_many, encode_many, merge_flat
from engine.kernel.codec import decode_sketches, decode_tiles
from engine.kernel.layout import AggregationSpec
from engine.kernel.sketch_kinds import dd_decode, dd_quantile, hll_estimate, hll_registers
from engine.kernel.sketches import SketchSlot, build_sketches
from engine.kernel.view_spec import ViewSpec
from engine.kernel.window import evaluate
from engine.kernel.window_many import evaluate_many
from engine.kernel.window_plan import WindowPlan, decode_record
from tests.reference import exact_rank_value, reference_value

G = 60_000
W = 5 * G
BOUND = 6


def _spec() -> ViewSpec:
    return ViewSpec(
        G,
        ("v",),
        (
            AggregationSpec("cd", "v", "count_distinct", W, params=(("max_distinct", BOUND),)),
            AggregationSpec("n", "v", "count", W),
        ),
        4 * W,
    )


def _state(spec: ViewSpec, events: list[dict[str, Any]], cuts: list[int]) -> bytes:
    """The record after applying ``events`` in batches split at ``cuts``."""
    layout = spec.layout
    ts_all = np.array([e["e"] for e in events], dtype=np.int64)
    raw_all = np.array([e["value"] for e in events], dtype=object)
    bounds = sorted({0, len(events), *[min(c, len(events)) for c in cuts]})
    flat = decode_many(layout, [None])
    for a, b in itertools.pairwise(bounds):
        ts, raw = ts_all[a:b], raw_all[a:b]
        codes = np.zeros(len(ts), dtype=np.int64)
        pos = np.arange(a, b, dtype=np.int64)
        _, tiles, partials = aggregate_batch(layout, codes, ts // G, ts, pos, np.zeros((len(ts), 1)))
        blobs = aggregate_sketches(layout, codes, ts // G, ts, pos, {"v": raw})
        batch = FlatTiles(codes[: len(tiles)] * 0, tiles, partials, np.array([int(ts.max())]), blobs)
        flat = merge_flat(layout, flat, batch)
    return encode_many(layout, flat, 1)[0]


values = st.one_of(st.sampled_from(["a", "b", "c", "1", "m-7", "é"]), st.integers(0, 5))


@settings(max_examples=60, deadline=None)
@given(
    events=st.lists(st.fixed_dictionaries({"e": st.integers(0, 20 * G), "value": values}), min_size=1, max_size=60),
    cuts=st.lists(st.integers(0, 60), max_size=3),
    extra=st.integers(0, 3 * G),
)
def test_exact_count_distinct_equals_the_reference(events: list[dict[str, Any]], cuts: list[int], extra: int) -> None:
    spec = _spec()
    for i, event in enumerate(events):
        event.update(entity="u", partition=0, offset=i)
    record = _state(spec, events, cuts)
    t = max(e["e"] for e in events) + extra
    tiles, partials, _ = decode_tiles(record)
    got = evaluate(spec, tiles, partials, t, decode_sketches(record, 1))
    want = reference_value(events, "u", t, "count_distinct", W, G, max_distinct=BOUND)
    assert got.values["cd"] == want
    assert got.over_bound[0] == (want is None)
    # The serving hot path (one entity) and the vectorized path (many) agree.
    plan_values, _ = WindowPlan(spec).evaluate(decode_record(record, spec.layout.width, 1), t)
    assert plan_values[0] == want
    flat = decode_many(spec.layout, [record])
    batch = evaluate_many(spec, flat.tiles, flat.partials, [0, len(flat.tiles)], [0], t, flat.sketches)
    assert batch.to_pylists()["cd"] == [want]


def _one_group(slot: SketchSlot, raw: np.ndarray) -> bytes:
    n = len(raw)
    blobs = build_sketches(
        (slot,),
        {slot.column: raw},
        np.arange(n),
        np.zeros(1, dtype=np.int64),
        np.zeros(n, dtype=np.int64),
        np.arange(n, dtype=np.int64),
    )
    return bytes(blobs[0, 0])


@pytest.mark.parametrize("precision", [4, 10, 12, 14])
@pytest.mark.parametrize("n", [0, 1, 7, 300, 5_000, 40_000])
def test_hll_estimate_is_within_the_documented_error(precision: int, n: int) -> None:
    slot = SketchSlot.of("v", "hll", precision=precision)
    raw = np.array([f"merchant-{i}" for i in range(n)], dtype=object)
    blob = _one_group(slot, np.concatenate([raw, raw[: n // 2]]))  # repeats change nothing
    estimate = 0.0 if not blob else hll_estimate(hll_registers(blob, precision))
    sigma = 1.04 / math.sqrt(2**precision)
    assert abs(estimate - n) <= max(5 * sigma * n, 1.0)
    datasketches = pytest.importorskip("datasketches")
    if 4 <= precision <= 21 and n:
        reference = datasketches.hll_sketch(precision)
        for value in raw.tolist():
            reference.update(value)
        assert abs(reference.get_estimate() - n) <= max(5 * sigma * n, 1.0)


@pytest.mark.parametrize("alpha", [0.01, 0.05])
@pytest.mark.parametrize("q", [0.0, 0.25, 0.5, 0.9, 0.95, 0.99, 1.0])
def test_ddsketch_answer_is_within_alpha_of_the_exact_rank_value(alpha: float, q: float) -> None:
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.lognormal(3.0, 1.5, 3_000), -rng.exponential(20.0, 500), np.zeros(40)])
    slot = SketchSlot.of("v", "ddsketch", alpha=alpha)
    got = dd_quantile(dd_decode(_one_group(slot, x)), q, alpha)
    exact = exact_rank_value(x.tolist(), q)
    assert got is not None and exact is not None
    assert abs(got - exact) <= alpha * abs(exact) + 1e-12
    ddsketch = pytest.importorskip("ddsketch")
    reference = ddsketch.DDSketch(relative_accuracy=alpha)
    for value in x.tolist():
        reference.add(value)
    # The library ranks q * (count - 1) too; both answers sit within alpha of the data.
    lib = reference.get_quantile_value(q)
    assert lib is not None
    below = exact_rank_value(x.tolist(), max(q - 1e-3, 0.0))
    above = exact_rank_value(x.tolist(), min(q + 1e-3, 1.0))
    assert below is not None and above is not None
    lo, hi = sorted((below, above))
    assert lo - alpha * abs(lo) - 1e-9 <= lib <= hi + alpha * abs(hi) + 1e-9


def test_ddsketch_state_is_bounded_and_merges_in_any_order() -> None:
    slot = SketchSlot.of("v", "ddsketch", alpha=0.01)
    wide = np.geomspace(1e-200, 1e200, 5_000)
    state = dd_decode(_one_group(slot, wide))
    assert len(state.positive.counts) <= 2048
    assert state.total == len(wide)
    a, b, c = (_one_group(slot, part) for part in np.array_split(wide, 3))
    kind = slot.implementation
    assert kind.merge(slot, kind.merge(slot, a, b), c) == kind.merge(slot, a, kind.merge(slot, c, b))
    assert kind.merge(slot, kind.merge(slot, a, b), c) == _one_group(slot, wide)


@settings(max_examples=40, deadline=None)
@given(
    events=st.lists(
        st.fixed_dictionaries(
            {
                "e": st.integers(0, 20 * G),
                "value": st.sampled_from(["a", "b", "c", "d", "e", "f", "g", "h"]),
                "x": st.floats(-1e6, 1e6, allow_nan=False),
            }
        ),
        min_size=1,
        max_size=60,
    ),
    cuts=st.lists(st.integers(0, 60), max_size=3),
    extra=st.integers(0, 3 * G),
)
def test_training_sets_answer_what_the_tiles_answer(events: list[dict[str, Any]], cuts: list[int], extra: int) -> None:
    """Event-level training sets build each window's blob from its events with the
    kernel's build: the same state, so the same answers as the merged tiles."""
    from engine.offline.event_windows import evaluate_windows

    spec = ViewSpec(
        G,
        ("v", "x"),
        (
            AggregationSpec("cd", "v", "count_distinct", W, params=(("max_distinct", 4),)),
            AggregationSpec("hll", "v", "count_distinct_approx", W, params=(("precision", 6),)),
            AggregationSpec("p90", "x", "percentile", W, params=(("q", 0.9),)),
            AggregationSpec("med", "x", "median", 2 * W),
        ),
        4 * W,
    )
    layout = spec.layout
    events = sorted(events, key=lambda e: e["e"])
    ts = np.array([e["e"] for e in events], dtype=np.int64)
    raw = {"v": np.array([e["value"] for e in events], dtype=object), "x": np.array([e["x"] for e in events])}
    pos = np.arange(len(events), dtype=np.int64)
    codes = np.zeros(len(events), dtype=np.int64)
    bounds = sorted({0, len(events), *[min(c, len(events)) for c in cuts]})
    flat = decode_many(layout, [None])
    for a, b in itertools.pairwise(bounds):
        values = np.stack([np.zeros(b - a), raw["x"][a:b]], axis=1)
        _, tiles, partials = aggregate_batch(layout, codes[a:b], ts[a:b] // G, ts[a:b], pos[a:b], values)
        blobs = aggregate_sketches(
            layout, codes[a:b], ts[a:b] // G, ts[a:b], pos[a:b], {k: v[a:b] for k, v in raw.items()}
        )
        flat = merge_flat(
            layout,
            flat,
            FlatTiles(np.zeros(len(tiles), dtype=np.int64), tiles, partials, np.array([int(ts[a:b].max())]), blobs),
        )
    t = int(ts.max()) + extra
    online = evaluate(spec, flat.tiles, flat.partials, t, flat.sketches)
    offline = evaluate_windows(
        codes,
        ts,
        {"x": raw["x"]},
        np.zeros(1, dtype=np.int64),
        np.array([t]),
        G,
        spec.aggregations,
        None,
        raw,
        pos,
    )
    for name in ("cd", "hll", "p90", "med"):
        want = online.values[name]
        # A non-finite kernel value (a percentile whose rank lies in a folded bucket: the values
        # span over gamma**2048) is non-finite offline too: served null with the status INVALID,
        # and null in a training set once its transforms have seen it (engine/offline/training.py).
        if isinstance(want, float) and not math.isfinite(want):
            got = offline[name].to_list()[0]
            assert isinstance(got, float) and math.isnan(got) == math.isnan(want), (name, got, want)
            continue
        assert offline[name].to_list() == [want], name
