"""The one-entity window cache never answers other than a fresh evaluation.

Records change with every write (the write path of sketch views, batch by batch); each
step evaluates every entity at several times through the cache and without it, and the
two must be identical: values (type included), empty flags and newest event time.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.kernel.window_plan import WindowPlan
from serving.evaluate import evaluate_view
from serving.registry import CompiledView
from serving.window_cache import CachedWindows, WindowCache, evaluate_record
from tests.kernel.kernel_support import stream_sketch_records
from tests.kernel.sketch_view_support import ENTITIES, PLAN, SPEC, G, dense_events, events, make_batch


def _same(got: CachedWindows, want: CachedWindows) -> None:
    assert got.empty == want.empty and got.max_event_ts == want.max_event_ts
    for name, a, b in zip(SPEC.output_names, got.values, want.values, strict=True):
        assert type(a) is type(b), name
        assert a == b or (a != a and b != b), (name, a, b)  # NaN equals NaN here


@settings(max_examples=60, deadline=None)
@given(
    writes=st.lists(st.one_of(events, dense_events), min_size=1, max_size=4),
    offsets=st.lists(st.integers(-2 * G, 3 * G), min_size=1, max_size=4),
    max_bytes=st.sampled_from([10**9, 8_000]),  # 8,000: a record or two, evictions on the way
)
def test_cached_equals_uncached_across_writes(
    writes: list[list[dict[str, Any]]], offsets: list[int], max_bytes: int
) -> None:
    cache = WindowCache(max_bytes)
    batches = []
    pos = 0
    for write in writes:
        batches.append(make_batch(write, pos))
        pos += len(write)
        records = stream_sketch_records(SPEC, ENTITIES, batches)  # the state after this write
        newest = max(int(b["e"].max()) for b in batches)
        for offset in offsets:
            t = newest + offset
            for entity, record in enumerate(records):
                key = (b"view", bytes([entity]))
                want = evaluate_record(PLAN, record, t)
                _same(evaluate_record(PLAN, record, t, cache, key), want)
                _same(evaluate_record(PLAN, record, t, cache, key), want)  # a hit when it fits
                _same(evaluate_record(PLAN, record, t + 1, cache, key), evaluate_record(PLAN, record, t + 1))
    assert cache.size_bytes <= max_bytes
    if max_bytes == 10**9:
        assert cache.hits > 0  # the cached path was taken, not only fresh evaluations


def test_a_hit_needs_the_same_bytes_and_the_same_current_tile() -> None:
    batch = make_batch([{"entity": 0, "e": 3 * G + 5, "amount": 7.0, "merchant": "m1"}], 0)
    record = stream_sketch_records(SPEC, 1, [batch])[0]
    assert record is not None
    cache = WindowCache()
    key = (b"view", b"e")
    evaluate_record(PLAN, record, 3 * G + 10, cache, key)
    assert (cache.hits, cache.misses) == (0, 1)
    later = evaluate_record(PLAN, record, 4 * G - 1, cache, key)  # same tile: a hit
    assert (cache.hits, cache.misses) == (1, 1)
    assert later.values[SPEC.output_names.index("since")] == 4 * G - 1 - (3 * G + 5)
    evaluate_record(PLAN, record, 4 * G, cache, key)  # the next tile: windows move
    assert (cache.hits, cache.misses) == (1, 2)
    evaluate_record(PLAN, bytes(bytearray(record)), 4 * G + 1, cache, key)  # equal bytes, another object
    assert (cache.hits, cache.misses) == (2, 2)
    write = make_batch([{"entity": 0, "e": 4 * G, "amount": 1.0, "merchant": "m2"}], 1)
    other = stream_sketch_records(SPEC, 1, [batch, write])[0]  # the record after a write
    assert other is not None and other != record
    fresh = evaluate_record(PLAN, other, 4 * G + 1, cache, key)
    assert (cache.hits, cache.misses) == (2, 3)
    _same(fresh, evaluate_record(PLAN, other, 4 * G + 1))


def test_lists_handed_out_are_the_callers_own() -> None:
    batch = make_batch([{"entity": 0, "e": 5, "amount": 7.0, "merchant": "m1"}], 0)
    record = stream_sketch_records(SPEC, 1, [batch])[0]
    cache = WindowCache()
    index = SPEC.output_names.index("last3")
    first = evaluate_record(PLAN, record, 10, cache, (b"v", b"e"))
    first.values[index].append("changed")  # type: ignore[union-attr]
    again = evaluate_record(PLAN, record, 10, cache, (b"v", b"e"))
    assert cache.hits == 1 and again.values[index] == ["m1"]


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        WindowCache(-1)


def test_closed_tile_merges_are_reused_after_a_write_to_the_current_tile() -> None:
    """A write to the current tile changes the record (a miss), but the long windows'
    closed tiles hold the same blobs: their stored merge is reused, and the answer is
    the fresh evaluation's."""
    old = [{"entity": 0, "e": k * G + 7, "amount": float(k), "merchant": f"m{k % 5}"} for k in range(12)]
    first = make_batch(old, 0)
    now = 12 * G + 30
    before = stream_sketch_records(SPEC, 1, [first])[0]
    cache = WindowCache()
    key = (b"view", b"e")
    evaluate_record(PLAN, before, now, cache, key)
    memo = dict(cache.closed_merges(key))
    assert memo, "the long windows kept their closed-tile merges"
    write = make_batch([{"entity": 0, "e": 12 * G + 1, "amount": 99.0, "merchant": "m9"}], len(old))
    after = stream_sketch_records(SPEC, 1, [first, write])[0]
    got = evaluate_record(PLAN, after, now, cache, key)
    assert cache.misses == 2
    _same(got, evaluate_record(PLAN, after, now))
    for memo_key, (blobs, merged) in cache.closed_merges(key).items():
        assert merged is memo[memo_key][1] and blobs == memo[memo_key][0]  # reused, not re-merged


def test_a_late_event_in_a_closed_tile_is_merged_afresh() -> None:
    old = [{"entity": 0, "e": k * G + 7, "amount": float(k), "merchant": f"m{k % 5}"} for k in range(12)]
    first = make_batch(old, 0)
    now = 12 * G + 30
    cache = WindowCache()
    key = (b"view", b"e")
    evaluate_record(PLAN, stream_sketch_records(SPEC, 1, [first])[0], now, cache, key)
    assert cache.closed_merges(key)
    late = make_batch([{"entity": 0, "e": 6 * G + 1, "amount": 1e4, "merchant": "m8"}], len(old))
    after = stream_sketch_records(SPEC, 1, [first, late])[0]
    _same(evaluate_record(PLAN, after, now, cache, key), evaluate_record(PLAN, after, now))


def _compiled(spec: Any) -> CompiledView:
    """A compiled view over ``spec`` (evaluation reads only its spec, plan and names)."""
    return CompiledView(
        name="v",
        spec=spec,
        fingerprint=b"fp",
        join_keys=("k",),
        join_key_types={},
        feature_names=spec.output_names,
        feature_types={},
        expected_freshness_ms=0,
        plan=WindowPlan(spec),
        definition=None,  # type: ignore[arg-type]  # not read by evaluation
    )


@settings(max_examples=40, deadline=None)
@given(
    writes=st.lists(st.one_of(events, dense_events), min_size=1, max_size=3),
    rows=st.lists(st.integers(0, ENTITIES), min_size=2, max_size=6),  # ENTITIES: no record
    offsets=st.lists(st.integers(-2 * G, 3 * G), min_size=1, max_size=3),
    per_row=st.booleans(),
)
def test_many_rows_cached_equal_uncached_across_writes(
    writes: list[list[dict[str, Any]]], rows: list[int], offsets: list[int], per_row: bool
) -> None:
    cache = WindowCache()
    batches = []
    position = 0
    stored = False
    for projection in (SPEC, SPEC.project(["n", "s", "sd", "since", "first"])):  # with and without blobs
        view = _compiled(projection)
        for write in writes:
            batches.append(make_batch(write, position))
            position += len(write)
            records = [*stream_sketch_records(SPEC, ENTITIES, batches), None]
            newest = max(int(b["e"].max()) for b in batches)
            for offset in offsets:
                times: int | list[int] = (
                    [newest + offset + k * G // 2 for k in range(len(rows))] if per_row else newest + offset
                )
                recs = [records[i] for i in rows]
                stored = stored or any(r is not None for r in recs)
                keys = [bytes([i]) for i in rows]
                want = evaluate_view(view, recs, times)
                # A one-row answer of the same entity is cached too; it never stands in for
                # the many-row kernel's (tile sums added in another order).
                evaluate_view(view, recs[:1], times if isinstance(times, int) else times[:1], keys[:1], cache)
                for _ in range(2):  # the second time from the cache where it fits
                    got = evaluate_view(view, recs, times, keys, cache)
                    assert got.found == want.found and got.max_event_ts == want.max_event_ts
                    assert got.defaulted == want.defaulted
                    for name in projection.output_names:
                        for a, b in zip(got.columns[name], want.columns[name], strict=True):
                            assert type(a) is type(b) and (a == b or (a != a and b != b)), (name, a, b)
    assert cache.hits > 0 or not stored


def test_cache_prefixes_of_projections_and_paths_never_collide() -> None:
    names = SPEC.output_names
    views = [_compiled(SPEC.project(names[:k])) for k in range(1, len(names) + 1)]
    prefixes = [v.cache_prefix for v in views] + [v.many_cache_prefix for v in views]
    assert len(set(prefixes)) == len(prefixes)
    assert not any(a != b and b.startswith(a) for a in prefixes for b in prefixes)


def _changed(value: Any) -> Any:
    if isinstance(value, int | float):
        return value + 1000
    return [*value, "poison"] if isinstance(value, list) else 7


def _poison(cache: WindowCache, key: tuple[bytes, bytes], record: bytes, t: int) -> list[Any]:
    """Store values under ``key`` that no evaluation of ``record`` gives (each a value of
    the right type, changed), so a read of that entry shows in the answer."""
    real = evaluate_record(PLAN, record, t)
    wrong: list[Any] = [_changed(v) for v in real.values]
    cache.put(key, PLAN, record, t, wrong, [False] * len(wrong), 0 if real.max_event_ts is None else 1, {})
    assert cache.get(key, PLAN, record, t) is not None  # the poisoned entry would be a hit
    return wrong


def _records_and_time() -> tuple[list[bytes], int]:
    old = [{"entity": k % 2, "e": k * G + 7 * k, "amount": 0.1 * (k + 1), "merchant": f"m{k % 5}"} for k in range(12)]
    stored = stream_sketch_records(SPEC, ENTITIES, [make_batch(old, 0)])
    records = [r for r in stored if r is not None]
    assert len(records) == ENTITIES
    return records, 12 * G + 30


def test_many_row_answers_never_come_from_one_row_entries() -> None:
    """A one-row entry of the same entity, record and tile is not read by a many-row
    request (the two kernels may differ in the last bits): a wrong value stored there
    stays unseen, and the request misses."""
    view = _compiled(SPEC)
    records, t = _records_and_time()
    keys = [b"a", b"b"]
    cache = WindowCache()
    for key, record in zip(keys, records, strict=True):
        _poison(cache, (view.cache_prefix, key), record, t)
    hits = cache.hits
    got = evaluate_view(view, list(records), t, keys, cache)
    assert cache.hits == hits  # both rows evaluated, none answered by a one-row entry
    want = evaluate_view(view, list(records), t)
    assert got.columns == want.columns


def test_one_row_answers_never_come_from_many_row_entries() -> None:
    view = _compiled(SPEC)
    records, t = _records_and_time()
    cache = WindowCache()
    wrong = _poison(cache, (view.many_cache_prefix, b"a"), records[0], t)
    hits = cache.hits
    got = evaluate_view(view, [records[0]], t, [b"a"], cache)
    assert cache.hits == hits
    assert [got.columns[name][0] for name in SPEC.output_names] != wrong
    want = evaluate_view(view, [records[0]], t)
    assert got.columns == want.columns
    again = evaluate_view(view, [records[0]], t, [b"a"], cache)  # its own entry now: a hit
    assert cache.hits == hits + 1 and again.columns == want.columns
