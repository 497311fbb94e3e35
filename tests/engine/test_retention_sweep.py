"""Quiet entities lose their expired tiles through the incremental sweep."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.kernel import (
    PartialLayout,
    aggregate_batch,
    decode_tiles,
    encode_positions,
    encode_tiles,
)
from engine.retention import sweep_view
from engine.state.records import encode_meta, meta_key, tile_key
from engine.state.rocksdb_store import RocksDBStore

FP = b"\x01" * 8
G = 60_000
RETENTION = 10 * G


def _record(layout: PartialLayout, times: list[int]) -> bytes:
    ts = np.array(times, dtype=np.int64)
    _, tiles, partials = aggregate_batch(
        layout,
        np.zeros(len(ts), dtype=np.int64),
        ts // G,
        ts,
        encode_positions(np.zeros(len(ts), dtype=np.int64), np.arange(len(ts))),
        np.ones((len(ts), 1)),
    )
    return encode_tiles(tiles, partials, int(ts.max()))


def test_sweep_deletes_quiet_entities_and_trims_old_tiles(tmp_path: Path) -> None:
    layout = PartialLayout(("amount",))
    newest = 100 * G
    with RocksDBStore(tmp_path, 1) as store:
        part = store.partition(0)
        txn = part.begin()
        txn.put(tile_key(FP, b"quiet"), _record(layout, [5 * G, 6 * G]))  # all expired
        txn.put(tile_key(FP, b"mixed"), _record(layout, [50 * G, 95 * G]))  # one expired tile
        txn.put(tile_key(FP, b"fresh"), _record(layout, [99 * G]))
        for i in range(30):
            txn.put(tile_key(FP, f"old{i:02d}".encode()), _record(layout, [i * G]))
        txn.put(meta_key(FP), encode_meta(newest, 0))
        txn.commit()

        cursor: bytes | None = None
        total_deleted = total_trimmed = calls = 0
        while True:
            result = sweep_view(part, FP, RETENTION, G, start_after=cursor, limit=7)
            total_deleted += result.deleted
            total_trimmed += result.trimmed
            calls += 1
            assert result.examined <= 7
            cursor = result.next_key
            if cursor is None:
                break
        assert calls >= 5  # incremental: 33 records in slices of 7
        assert (total_deleted, total_trimmed) == (31, 1)
        remaining = dict(part.iter_view(FP))
        assert set(remaining) == {b"mixed", b"fresh"}
        tiles, _, max_ts = decode_tiles(remaining[b"mixed"])
        assert tiles.tolist() == [95] and max_ts == 95 * G


def test_sweep_folds_a_lifetime_view_into_one_exact_compacted_partial(tmp_path: Path) -> None:
    """A view with a lifetime window loses nothing: every sweep folds the expired tiles
    into one compacted partial, whose count/sum/min/max/first_ts stay exact."""
    layout = PartialLayout(("amount",), tracks_first_event=True)
    quiet_times = [5 * G, 6 * G, 7 * G + 1, 20 * G]
    mixed_times = [50 * G, 51 * G, 95 * G]
    with RocksDBStore(tmp_path, 1) as store:
        part = store.partition(0)
        txn = part.begin()
        txn.put(tile_key(FP, b"quiet"), _record(layout, quiet_times))
        txn.put(tile_key(FP, b"mixed"), _record(layout, mixed_times))
        txn.put(meta_key(FP), encode_meta(100 * G, 0))
        txn.commit()
        for newest in (100 * G, 100 * G, 300 * G):  # the view moves on; quiet entities stay quiet
            txn = part.begin()
            txn.put(meta_key(FP), encode_meta(newest, 0))
            txn.commit()
            result = sweep_view(part, FP, RETENTION, G, compact_into=layout)
            assert result.deleted == 0
        records = dict(part.iter_view(FP))
        assert set(records) == {b"quiet", b"mixed"}
        for key, times in ((b"quiet", quiet_times), (b"mixed", mixed_times)):
            tiles, partials, max_ts = decode_tiles(records[key], expected_width=layout.width)
            assert len(tiles) == 1 and tiles[0] == max(times) // G  # one compacted partial
            row = partials[0]
            assert (row[0], row[1], row[3], row[4]) == (len(times), float(len(times)), 1.0, 1.0)
            assert row[5] == max(times) and row[layout.first_event_field] == min(times)
            assert max_ts == max(times)
        # Once compacted, a sweep has nothing to rewrite.
        assert sweep_view(part, FP, RETENTION, G, compact_into=layout).trimmed == 0


def test_a_sweep_past_its_deadline_stops_after_one_record_and_ends_as_an_unbounded_one(tmp_path: Path) -> None:
    """The dataflow gives each tick's sweep a time budget: a call whose deadline has passed
    still makes progress (one record), and slices cut by the deadline leave the same records
    as one call without it."""
    layout = PartialLayout(("amount",), tracks_first_event=True)
    histories = {f"e{i:02d}".encode(): [i * G, (i + 1) * G + 7, 40 * G + i] for i in range(12)}
    contents = []
    for bounded in (False, True):
        with RocksDBStore(tmp_path / str(bounded), 1) as store:
            part = store.partition(0)
            txn = part.begin()
            for key, times in histories.items():
                txn.put(tile_key(FP, key), _record(layout, times))
            txn.put(meta_key(FP), encode_meta(100 * G, 0))
            txn.commit()
            cursor: bytes | None = None
            calls = 0
            while True:
                result = sweep_view(
                    part, FP, RETENTION, G, compact_into=layout, start_after=cursor, deadline=0.0 if bounded else None
                )
                calls += 1
                assert result.examined == (1 if bounded else len(histories)), result
                cursor = result.next_key
                if cursor is None:
                    break
            assert calls == (len(histories) if bounded else 1)
            contents.append(dict(part.iter_view(FP)))
    assert contents[0] == contents[1] and len(contents[0]) == len(histories)
    assert all(len(decode_tiles(v)[0]) == 1 for v in contents[0].values())  # all folded
