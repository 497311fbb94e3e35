"""Parquet-history backfill without a broker: values, log, resume, bad files, handoff skip."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.apply import ShardApplier
from engine.definitions import Constraint
from engine.io.log_reader import read_log
from engine.offline.backfill import BackfillTarget, backfill_parquet, history_topic
from engine.offline.exceptions import BackfillError, HistoryFileError
from engine.offline.history_slices import TIME_BITS, entity_buckets, index_history
from engine.routing import route
from engine.state.records import decode_handoff, handoff_key
from engine.state.rocksdb_store import RocksDBStore
from engine.state.secondary import resume_positions
from engine.timefmt import iso_utc
from tests.backfill.backfill_support import (
    SHARDS,
    START_MS,
    compare_state,
    compare_training_set,
    history_reference,
    random_events,
    run_backfill,
    views_by_name,
    write_history,
)
from tests.engine.streaming_support import example_views, transactions_batch

HOUR = 3_600_000


def _history(tmp_path: Path, seed: int, n: int = 3000) -> tuple[list[dict[str, object]], list[Path]]:
    rng = np.random.default_rng(seed)
    events = random_events(rng, n, users=40, merchants=8, start_ms=START_MS, span_ms=6 * HOUR)
    # Two files; the second one's rows interleave in time with the first's.
    files = [
        write_history(events[::2], tmp_path / "h" / "a.parquet"),
        write_history(events[1::2], tmp_path / "h" / "b.parquet"),
    ]
    ordered = events[::2] + events[1::2]  # file order, as the backfill reads them
    return ordered, files


def _all_records(state_dir: Path) -> dict[bytes, bytes]:
    store = RocksDBStore(state_dir, SHARDS)
    try:
        out: dict[bytes, bytes] = {}
        for view in views_by_name().values():
            for part in store.partitions:
                out.update({view.fingerprint + k: v for k, v in part.iter_view(view.fingerprint)})
        return out
    finally:
        store.close()


def test_backfill_state_and_log_match_reference(tmp_path: Path) -> None:
    events, files = _history(tmp_path, seed=1)
    end = START_MS + 5 * HOUR  # rows after the end stay out
    report = run_backfill(tmp_path / "bf", files, START_MS - HOUR, end, chunk_rows=700)
    applied = history_reference(events, START_MS - HOUR, end)
    assert report.complete and report.rows_total == len(applied) < len(events)
    # Every row is replayed once per family of views (views sharing their first join key).
    families = len({v.join_keys[0] for v in views_by_name().values()})
    assert families == 2 and report.positions_total == families * len(applied)
    # One slice per family (the default slice is larger than the history), in chunks of 700.
    assert report.batches == families * -(-len(applied) // 700)
    # Online state holds whole tiles: it is exact as of t once no applied event is newer.
    last = max(int(e["e"]) for e in applied)
    times = [last, end + 7 * 60_000, last + HOUR + 30_001]
    assert compare_state(tmp_path / "bf" / "state", SHARDS, tmp_path / "sec", applied, times) > 100
    rng = np.random.default_rng(5)
    spine = [
        (str(e["entity"]), str(e["merchant"]), int(e["e"]) + int(rng.integers(-90_000, 90_000)))
        for e in applied[:: max(1, len(applied) // 150)]
    ]
    compare_training_set(tmp_path / "bf" / "log", applied, spine)


def test_backfill_in_small_slices_matches_one_slice(tmp_path: Path) -> None:
    """History read in slices of a few rows (ties at equal times, several row groups per
    file, files interleaved in time) gives the same log rows (same positions) and the
    reference state, and resumes across slice boundaries with another slice size."""
    rng = np.random.default_rng(21)
    events = random_events(rng, 1500, users=30, merchants=6, start_ms=START_MS, span_ms=4 * HOUR)
    for event in events[::3]:  # many rows share an event time
        event["ts"] = int(event["ts"]) // 600_000 * 600_000
    files = [
        write_history(events[::2], tmp_path / "h" / "a.parquet", row_group_size=97),
        write_history(events[1::2], tmp_path / "h" / "b.parquet", row_group_size=130),
    ]
    start, end = START_MS - HOUR, START_MS + 4 * HOUR
    whole = run_backfill(tmp_path / "whole", files, start, end, chunk_rows=400)
    sliced = run_backfill(tmp_path / "sliced", files, start, end, chunk_rows=60, commit_rows=170, max_batches=7)
    assert not sliced.complete
    # Positions do not depend on the slice size: the resume may cut other slices.
    resumed = run_backfill(tmp_path / "sliced", files, start, end, chunk_rows=60, commit_rows=230)
    assert resumed.complete and resumed.rows_total == whole.rows_total
    assert resumed.positions_resumed_from + resumed.positions_replayed == whole.positions_total
    # Same entities; values equal the reference (a tile cut by a commit merges its float
    # partials in another order: docs/semantics.md allows the last bits to differ).
    assert _all_records(tmp_path / "sliced" / "state").keys() == _all_records(tmp_path / "whole" / "state").keys()
    for view in views_by_name().values():
        ours = read_log(str(tmp_path / "sliced" / "log"), view.name, view.fingerprint_hex)
        theirs = read_log(str(tmp_path / "whole" / "log"), view.name, view.fingerprint_hex)
        assert ours.height > 0 and ours.equals(theirs)
    applied = history_reference(events[::2] + events[1::2], start, end)
    assert compare_state(tmp_path / "sliced" / "state", SHARDS, tmp_path / "sec", applied, [end + 10]) > 0


def test_interrupted_backfill_resumes_to_the_same_state(tmp_path: Path) -> None:
    _, files = _history(tmp_path, seed=2, n=2000)
    start, end = START_MS - HOUR, START_MS + 7 * HOUR
    # One chunk per commit in both runs: float partials (sum, m2) of a tile merged in
    # other groupings may differ in the last bits (docs/semantics.md section 3), and the
    # hour tiles of user_amount_profile gather events of many chunks; byte equality of
    # the records holds for the same groupings, which is what a resume must reproduce.
    whole = run_backfill(tmp_path / "whole", files, start, end, chunk_rows=300, commit_rows=300)
    first = run_backfill(tmp_path / "cut", files, start, end, chunk_rows=300, commit_rows=300, max_batches=3)
    assert not first.complete and first.batches == 3
    topic = first.topic
    # No handoff before the run completes: streaming would otherwise skip history's range.
    store = RocksDBStore(tmp_path / "cut" / "state", SHARDS)
    try:
        fps = [v.fingerprint for v in views_by_name().values()]
        for part in store.partitions:
            assert part.get_many([handoff_key(fp) for fp in fps]) == [None] * len(fps)
    finally:
        store.close()
    # Slices of at most 300 rows hold whole entity buckets, so each is one chunk: three
    # batches are the first three slices of the replay order.
    source, views = example_views("transactions")
    index = index_history([str(f) for f in files], source, views, start, end, slice_rows=300)
    assert all(piece.rows <= 300 for piece in index.slices)
    after_three = index.slices[2].end_offset
    assert first.positions_replayed == after_three
    recorded = resume_positions(tmp_path / "cut" / "state", SHARDS, topic)
    assert [p.next_offset for p in recorded.values()] == [after_three]
    second = run_backfill(tmp_path / "cut", files, start, end, chunk_rows=300, commit_rows=300)
    assert second.complete and second.positions_resumed_from == after_three
    assert second.positions_replayed == whole.positions_total - after_three
    assert _all_records(tmp_path / "cut" / "state") == _all_records(tmp_path / "whole" / "state")
    # A third run finds everything applied and only re-confirms the handoff.
    third = run_backfill(tmp_path / "cut", files, start, end, chunk_rows=300)
    assert third.positions_replayed == 0 and third.batches == 0


def test_second_backfill_with_another_range_is_refused(tmp_path: Path) -> None:
    _, files = _history(tmp_path, seed=3, n=300)
    run_backfill(tmp_path / "bf", files, START_MS - HOUR, START_MS + HOUR)
    with pytest.raises(BackfillError, match="already has a history backfill") as refused:
        run_backfill(tmp_path / "bf", files, START_MS - HOUR, START_MS + 2 * HOUR)
    # The range it names reads as dates, as the --start/--end flags are written.
    assert f"[{iso_utc(START_MS - HOUR)} ({START_MS - HOUR} ms), {iso_utc(START_MS + HOUR)}" in str(refused.value)


def _nothing_written(state_dir: Path) -> None:
    if not state_dir.exists():
        return
    assert _all_records(state_dir) == {}


def test_corrupt_file_is_named_and_nothing_is_written(tmp_path: Path) -> None:
    _, files = _history(tmp_path, seed=4, n=200)
    bad = tmp_path / "h" / "c.parquet"
    bad.write_bytes(b"PAR1 this is not parquet at all")
    with pytest.raises(HistoryFileError, match=r"c\.parquet.*not a readable Parquet file"):
        run_backfill(tmp_path / "bf", [*files, bad], START_MS - HOUR, START_MS + 9 * HOUR)
    _nothing_written(tmp_path / "bf" / "state")


def test_truncated_file_is_named(tmp_path: Path) -> None:
    _, files = _history(tmp_path, seed=4, n=200)
    data = files[1].read_bytes()
    files[1].write_bytes(data[: len(data) // 2] + data[-12:])  # footer intact, pages cut
    with pytest.raises(HistoryFileError, match=r"b\.parquet"):
        run_backfill(tmp_path / "bf", files, START_MS - HOUR, START_MS + 9 * HOUR)
    _nothing_written(tmp_path / "bf" / "state")


def test_missing_and_mistyped_columns_are_named(tmp_path: Path) -> None:
    _, files = _history(tmp_path, seed=5, n=100)
    table = pq.read_table(files[0])
    pq.write_table(table.drop_columns(["merchant_id"]), files[0])
    with pytest.raises(HistoryFileError, match=r"a\.parquet: column 'merchant_id' is missing"):
        run_backfill(tmp_path / "bf", files, START_MS - HOUR, START_MS + 9 * HOUR)
    _nothing_written(tmp_path / "bf" / "state")
    pq.write_table(
        table.set_column(
            table.schema.get_field_index("amount"),
            "amount",
            pa.array([str(a) for a in table.column("amount").to_pylist()]),
        ),
        files[0],
    )
    with pytest.raises(HistoryFileError, match=r"a\.parquet: column 'amount': expected float, got string"):
        run_backfill(tmp_path / "bf", files, START_MS - HOUR, START_MS + 9 * HOUR)
    _nothing_written(tmp_path / "bf" / "state")


def test_streaming_applier_skips_events_before_the_handoff(tmp_path: Path) -> None:
    """After a history backfill up to T, a Kafka batch's events with e < T are not applied."""
    _, files = _history(tmp_path, seed=6, n=400)
    handoff = START_MS + 3 * HOUR
    run_backfill(tmp_path / "bf", files, START_MS - HOUR, handoff)
    _source, views = example_views("transactions")
    ts = np.array([handoff - 1, handoff, handoff + 5], dtype=np.int64)
    batch = transactions_batch(
        ts, ["new"] * 3, merchant="mnew", amounts=np.array([100.0, 1.0, 2.0]), cards=["cnew1", "cnew2", "cnew1"]
    )
    store = RocksDBStore(tmp_path / "bf" / "state", SHARDS)
    try:
        appliers = {s: ShardApplier(store.partition(s), views, "transactions") for s in range(SHARDS)}
        for fp in (v.fingerprint for v in views):
            assert {a.handoffs[fp] for a in appliers.values()} == {handoff}
            assert decode_handoff(store.partition(0).get_many([handoff_key(fp)])[0] or b"") == handoff
        for _, shard_batch in route(batch, views, SHARDS):
            appliers[shard_batch.shard].apply([shard_batch])
        assert sum(a.stats.rows_skipped_handoff for a in appliers.values()) == len(views)  # one per view
        assert sum(a.stats.rows_applied for a in appliers.values()) == 2 * len(views)
    finally:
        store.close()
    applied = [
        {
            "entity": "new",
            "merchant": "mnew",
            "pair": ("new", "mnew"),
            "e": int(t),
            "partition": 0,
            "offset": i,
            "value": v,
            "merchant_id": "mnew",
            "card_id": card,
            "event_type": "PURCHASE",
            "valid": True,
        }
        for i, (t, v, card) in enumerate(zip(ts.tolist(), [100.0, 1.0, 2.0], ["cnew1", "cnew2", "cnew1"], strict=True))
        if t >= handoff
    ]
    compare_state(tmp_path / "bf" / "state", SHARDS, tmp_path / "sec", applied, [handoff + 10])
    assert history_topic("transactions", [v.fingerprint for v in views]).startswith("transactions#history-")


def test_history_batches_gather_strings_like_the_decoder(tmp_path: Path) -> None:
    """String columns gathered from per-column distinct values equal the plain per-row
    conversion, chunk by chunk; ``columns`` keeps only what routing reads."""
    from engine.offline.history_batches import (
        factorize_key_columns,
        history_batches,
        routed_columns,
    )
    from engine.offline.history_files import needed_columns
    from engine.offline.history_slices import load_history

    _, files = _history(tmp_path, seed=11, n=2500)
    views = list(views_by_name().values())
    source = views[0].source
    history = load_history([str(f) for f in files], source, views, 0, 2**53)
    factorized = factorize_key_columns(history, views)
    wanted = routed_columns(views, factorized)
    assert set(factorized) == {"user_id", "merchant_id"}
    assert "event_type" in wanted and "amount" in wanted
    single_key = [v for v in views if len(v.join_keys) == 1]
    # Their join keys are not routed raw, except a key column a view aggregates
    # (user_spend's distinct count and last_n of merchant_id read its values).
    aggregated = {c for v in single_key for c in v.columns}
    assert {"user_id", "merchant_id"} & routed_columns(single_key, factorized) == {
        "user_id",
        "merchant_id",
    } & aggregated
    assert "merchant_id" in aggregated and "user_id" not in aggregated
    assert {"user_id", "merchant_id"} <= wanted  # the user x merchant view keys on both, raw
    seen = 0
    for batch in history_batches(history, source, "t", 100, 700, wanted):
        chunk = history.slice(batch.first_offset, len(batch.offsets))
        assert set(batch.columns) == wanted & set(needed_columns(source, views))
        for name, values in batch.columns.items():
            plain = chunk.get_column(name)
            if plain.dtype == pl.String:
                assert values.dtype == object
                assert values.tolist() == plain.to_list()
            else:
                assert np.array_equal(values, plain.to_numpy())
        assert np.array_equal(batch.event_ts, chunk.get_column("__e").to_numpy())
        seen += len(batch.offsets)
    assert seen == history.height - 100


def test_history_rows_breaking_a_declared_constraint_are_named(tmp_path: Path) -> None:
    # The stream refuses such records (value_out_of_range / invalid_string); history must not
    # apply them either, or backfilled and streamed values would differ.
    _, files = _history(tmp_path, seed=6, n=100)
    source, views = example_views("transactions")
    constrained = dataclasses.replace(
        source,
        constraints={
            "amount": Constraint(min=0, max=100.0),
            "user_id": Constraint(max_length=64, allowed_characters="a-z0-9"),
        },
    )
    target = BackfillTarget(tmp_path / "bf" / "state", SHARDS, str(tmp_path / "bf" / "log"))
    with pytest.raises(HistoryFileError, match=r"a\.parquet: column 'amount': expected values within \[0, 100.0\]"):
        backfill_parquet(target, constrained, views, [str(f) for f in files], START_MS - HOUR, START_MS + 9 * HOUR)
    _nothing_written(tmp_path / "bf" / "state")
    strict = dataclasses.replace(source, constraints={"user_id": Constraint(allowed_characters="x")})
    with pytest.raises(HistoryFileError, match=r"column 'user_id': expected strings within"):
        backfill_parquet(target, strict, views, [str(f) for f in files], START_MS - HOUR, START_MS + 9 * HOUR)
    fine = dataclasses.replace(source, constraints={"amount": Constraint(min=0)})
    report = backfill_parquet(target, fine, views, [str(f) for f in files], START_MS - HOUR, START_MS + 9 * HOUR)
    assert report.rows_total == 100  # every amount is >= 0: the whole history is applied


@pytest.mark.parametrize("column", ["user_id", "merchant_id"])
def test_history_join_keys_holding_the_key_separator_are_named(tmp_path: Path, column: str) -> None:
    # The stream refuses such ids (invalid_string): ("a\x1fb", "c") and ("a", "b\x1fc") would
    # be one user x merchant entity. History must not apply them either.
    rng = np.random.default_rng(8)
    events = random_events(rng, 50, users=5, merchants=3, start_ms=START_MS, span_ms=HOUR)
    events[17][column] = "a\x1fb"
    files = [write_history(events, tmp_path / "h" / "a.parquet")]
    source, views = example_views("transactions")
    target = BackfillTarget(tmp_path / "bf" / "state", SHARDS, str(tmp_path / "bf" / "log"))
    with pytest.raises(HistoryFileError, match=rf"a\.parquet: column '{column}': row 17: .*compound entity key"):
        backfill_parquet(target, source, views, [str(f) for f in files], START_MS - HOUR, START_MS + 2 * HOUR)
    _nothing_written(tmp_path / "bf" / "state")
    events[17][column] = "a\x00b"  # NUL is an ordinary character of an id
    files = [write_history(events, tmp_path / "h" / "a.parquet")]
    report = backfill_parquet(target, source, views, [str(f) for f in files], START_MS - HOUR, START_MS + 2 * HOUR)
    assert report.rows_total == 50


def _tied_history(tmp_path: Path, seed: int, busy: bool) -> tuple[list[dict[str, object]], list[Path]]:
    rng = np.random.default_rng(seed)
    events = random_events(rng, 1200, users=60, merchants=9, start_ms=START_MS, span_ms=3 * HOUR)
    if busy:
        for event in events[::4]:  # one busy user: a quarter of all rows, more than a slice
            event["user_id"] = "busy"
    for event in events[::5]:  # ties at equal event times
        event["ts"] = int(event["ts"]) // 900_000 * 900_000
    files = [
        write_history(events[::2], tmp_path / "h" / "a.parquet", row_group_size=101),
        write_history(events[1::2], tmp_path / "h" / "b.parquet", row_group_size=77),
    ]
    return events[::2] + events[1::2], files


def test_slices_hold_whole_entities_so_each_record_is_written_once(tmp_path: Path) -> None:
    """Several slices, and still one write per entity record: a slice holds every row of
    its entities. Values equal the reference (ties at equal times in file order)."""
    ordered, files = _tied_history(tmp_path, seed=31, busy=False)
    start, end = START_MS - HOUR, START_MS + 4 * HOUR
    source, views = example_views("transactions")
    index = index_history([str(f) for f in files], source, views, start, end, slice_rows=200)
    assert len(index.slices) >= 3 * len(index.families)
    assert all(piece.rows <= 200 for piece in index.slices)
    report = run_backfill(tmp_path / "bf", files, start, end, chunk_rows=50, commit_rows=200)
    assert report.complete
    assert report.records_written == len(_all_records(tmp_path / "bf" / "state"))
    applied = history_reference(ordered, start, end)
    assert compare_state(tmp_path / "bf" / "state", SHARDS, tmp_path / "sec", applied, [end + 10, end + HOUR]) > 100


def test_an_entity_larger_than_a_slice_is_cut_by_event_time(tmp_path: Path) -> None:
    """A bucket with more rows than a slice (one busy user) spans several slices cut at
    event-time boundaries; state and training set still equal the reference."""
    ordered, files = _tied_history(tmp_path, seed=32, busy=True)
    start, end = START_MS - HOUR, START_MS + 4 * HOUR
    source, views = example_views("transactions")
    index = index_history([str(f) for f in files], source, views, start, end, slice_rows=200)
    user_family = next(f for f, family in enumerate(index.families) if family.column == "user_id")
    busy_bucket = int(entity_buckets(pl.Series(["busy"]))[0])
    cut = [
        piece
        for piece in index.slices
        if piece.family == user_family and piece.lo >> TIME_BITS <= busy_bucket <= (piece.hi - 1) >> TIME_BITS
    ]
    busy_rows = sum(1 for e in ordered if e["user_id"] == "busy" and start <= int(str(e["ts"])) < end)
    assert busy_rows > 200 and len(cut) >= 2, "the busy user's bucket is cut into several slices"
    report = run_backfill(tmp_path / "bf", files, start, end, chunk_rows=50, commit_rows=200)
    assert report.complete
    assert report.records_written > len(_all_records(tmp_path / "bf" / "state"))  # the cut bucket's, rewritten
    applied = history_reference(ordered, start, end)
    assert compare_state(tmp_path / "bf" / "state", SHARDS, tmp_path / "sec", applied, [end + 10, end + HOUR]) > 100
    rng = np.random.default_rng(7)
    spine = [
        (str(e["entity"]), str(e["merchant"]), int(e["e"]) + int(rng.integers(-90_000, 90_000)))
        for e in applied[:: max(1, len(applied) // 100)]
    ]
    compare_training_set(tmp_path / "bf" / "log", applied, spine)


def test_no_room_for_the_slice_files_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    _, files = _history(tmp_path, seed=8, n=100)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-dir"))
    with pytest.raises(BackfillError, match="temporary directory") as caught:
        run_backfill(tmp_path / "bf", files, START_MS - HOUR, START_MS + 9 * HOUR)
    assert "TMPDIR" in (caught.value.hint or "")
    _nothing_written(tmp_path / "bf" / "state")
