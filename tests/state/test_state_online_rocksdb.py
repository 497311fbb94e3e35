"""Behaviour specific to the RocksDB secondary-instance online table."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.state.exceptions import (
    OnlineTableUnavailable,
    ShardCountMismatchError,
    StoreClosedError,
)
from engine.state.keys import entity_key, shard_for
from engine.state.layout import shard_path
from engine.state.online_rocksdb import RocksDBOnlineTable
from engine.state.records import Freshness, encode_meta, freshest, meta_key, tile_key
from engine.state.rocksdb_store import RocksDBStore

FP = bytes.fromhex("0102030405060708")


def put(store: RocksDBStore, items: dict[bytes, bytes]) -> None:
    txs = [part.begin() for part in store.partitions]
    for key, value in items.items():
        txs[shard_for(FP, key, store.n_shards)].put(tile_key(FP, key), value)
    for tx in txs:
        tx.commit()


def test_secondary_sees_commits_only_after_catch_up(tmp_path: Path) -> None:
    key = entity_key(["u1"])
    with RocksDBStore(tmp_path / "state", 2) as store:
        put(store, {key: b"v1"})
        with RocksDBOnlineTable(tmp_path / "state", 2, tmp_path / "sec", background=False) as table:
            assert table.read(FP, [key]) == [b"v1"]
            put(store, {key: b"v2"})
            assert table.read(FP, [key]) == [b"v1"]  # frozen until catch-up
            table.catch_up()
            assert table.read(FP, [key]) == [b"v2"]


def test_background_thread_catches_up(tmp_path: Path) -> None:
    key = entity_key(["u1"])
    with (
        RocksDBStore(tmp_path / "state", 2) as store,
        RocksDBOnlineTable(tmp_path / "state", 2, tmp_path / "sec", 0.02) as table,
    ):
        put(store, {key: b"fresh"})
        deadline = time.monotonic() + 5
        while table.read(FP, [key]) != [b"fresh"]:
            assert time.monotonic() < deadline, "background catch-up never showed the write"
            time.sleep(0.01)
        health = table.health()
        assert health.ready
        assert health.last_refresh_age_s is not None and health.last_refresh_age_s < 5


def test_not_ready_until_writer_creates_shards(tmp_path: Path) -> None:
    key = entity_key(["u1"])
    table = RocksDBOnlineTable(tmp_path / "state", 3, tmp_path / "sec", background=False)
    try:
        health = table.health()
        assert not health.ready
        assert "3 of 3 shards" in health.detail
        with pytest.raises(OnlineTableUnavailable, match="not created yet"):
            table.read(FP, [key])
        with RocksDBStore(tmp_path / "state", 3) as store:
            put(store, {key: b"v"})
            table.catch_up()
            assert table.health().ready
            assert table.read(FP, [key]) == [b"v"]
    finally:
        table.close()


def test_refuses_other_shard_count(tmp_path: Path) -> None:
    RocksDBStore(tmp_path / "state", 2).close()
    with pytest.raises(ShardCountMismatchError):
        RocksDBOnlineTable(tmp_path / "state", 4, tmp_path / "sec", background=False)


def test_close_stops_reads_and_removes_private_dir(tmp_path: Path) -> None:
    RocksDBStore(tmp_path / "state", 1).close()
    table = RocksDBOnlineTable(tmp_path / "state", 1, tmp_path / "sec")
    assert any((tmp_path / "sec").iterdir())
    table.close()
    table.close()  # idempotent
    assert list((tmp_path / "sec").iterdir()) == []
    with pytest.raises(StoreClosedError):
        table.read(FP, [b"k"])
    assert not table.health().ready


WRITER = """
import sys
from engine.state.keys import entity_key, shard_for
from engine.state.records import tile_key
from engine.state.offsets import OffsetRecord
from engine.state.rocksdb_store import RocksDBStore

FP = bytes.fromhex("0102030405060708")
state_dir, n = sys.argv[1], int(sys.argv[2])
with RocksDBStore(state_dir, n) as store:
    for step in (1, 2):
        txs = [p.begin() for p in store.partitions]
        for i in range(2000 * step):
            key = entity_key([f"user-{i}"])
            txs[shard_for(FP, key, n)].put(tile_key(FP, key), f"step{step}".encode())
        for tx in txs:
            tx.set_offset("events", 0, OffsetRecord(step, (step,), step, (step,)))
            tx.commit()
        print(step, flush=True)
        sys.stdin.readline()
"""


def test_secondary_follows_a_writer_in_another_process(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with subprocess.Popen(
        [sys.executable, "-c", WRITER, str(state), "3"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdin is not None and child.stdout is not None
        try:
            assert child.stdout.readline().strip() == "1"
            first = [entity_key([f"user-{i}"]) for i in range(2000)]
            later = [entity_key([f"user-{i}"]) for i in range(2000, 4000)]
            with RocksDBOnlineTable(state, 3, tmp_path / "sec", background=False) as table:
                assert table.read(FP, first) == [b"step1"] * 2000
                assert table.read(FP, later) == [None] * 2000
                child.stdin.write("go\n")
                child.stdin.flush()
                assert child.stdout.readline().strip() == "2"
                table.catch_up()
                assert table.read(FP, first + later) == [b"step2"] * 4000
            child.stdin.write("go\n")
            child.stdin.flush()
            assert child.wait(timeout=60) == 0
        finally:
            if child.poll() is None:
                child.kill()


def test_reads_do_not_wait_for_a_catch_up_in_progress(tmp_path: Path) -> None:
    """A catch-up holds the table's catch-up lock for milliseconds per shard; a read
    (on serving's event loop) must not queue behind it. Holding that lock here stands in
    for a long catch-up: the reads finish anyway, with the values catch-ups made visible."""
    key = entity_key(["u1"])
    meta = meta_key(FP)
    with RocksDBStore(tmp_path / "state", 2) as store:
        put(store, {key: b"v1"})
        for part in store.partitions:
            tx = part.begin()
            tx.put(meta, encode_meta(100 + part.shard, 7))
            tx.commit()
        with RocksDBOnlineTable(tmp_path / "state", 2, tmp_path / "sec", background=False) as table:
            table.catch_up()
            results: list[object] = []

            def read() -> None:
                results.append(table.read(FP, [key]))
                results.append(table.read(FP, [key, entity_key(["nobody"])]))
                results.append(table.read_meta(FP))

            with table._lock:  # a catch-up in progress
                reader = threading.Thread(target=read)
                reader.start()
                reader.join(timeout=30)
                finished = not reader.is_alive()
            reader.join()
            assert finished, "a read waited for the catch-up lock"
            assert results[0] == [b"v1"] and results[1] == [b"v1", None]
            assert results[2] == Freshness(101, 7)  # the freshest shard wins


def test_close_waits_for_reads_and_reads_after_close_fail(tmp_path: Path) -> None:
    key = entity_key(["u1"])
    with RocksDBStore(tmp_path / "state", 2) as store:
        put(store, {key: b"v1"})
    table = RocksDBOnlineTable(tmp_path / "state", 2, tmp_path / "sec", background=False)
    assert table.read(FP, [key]) == [b"v1"]
    table.close()
    for call in (lambda: table.read(FP, [key]), lambda: table.read(FP, [key, key]), lambda: table.read_meta(FP)):
        with pytest.raises(StoreClosedError):
            call()


def _settle(state: Path, shards: int, seconds_ago: float = 10.0) -> None:
    """Date every shard directory back, as after a quiet spell with no files created."""
    old = time.time() - seconds_ago
    for shard in range(shards):
        os.utime(shard_path(state, shard), (old, old))


def test_settled_shards_are_checked_by_their_newest_log_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = entity_key(["u1"])
    state = tmp_path / "state"
    with RocksDBStore(state, 2) as store:
        put(store, {key: b"v1"})
        with RocksDBOnlineTable(state, 2, tmp_path / "sec", background=False) as table:
            _settle(state, 2)
            table.catch_up()  # lists the settled directories once
            listings: list[object] = []
            real_scandir = os.scandir

            def counting_scandir(path: Any) -> Any:
                listings.append(path)
                return real_scandir(path)

            monkeypatch.setattr(os, "scandir", counting_scandir)  # the module calls os.scandir
            table.catch_up()  # nothing written: no listing, nothing to see
            put(store, {key: b"v2"})  # a WAL append: the directory itself does not change
            table.catch_up()
            assert table.read(FP, [key]) == [b"v2"]
            assert listings == []
            # A directory changed just now is listed again (its mtime may hide more).
            os.utime(shard_path(state, shard_for(FP, key, 2)))
            put(store, {key: b"v3"})
            table.catch_up()
            assert table.read(FP, [key]) == [b"v3"]
            assert len(listings) == 1


def _fresh_meta(table: RocksDBOnlineTable) -> Freshness:
    """The view's freshness read from every shard now, past the table's cache."""
    return freshest(None if db is None else db.get(meta_key(FP)) for db in table._dbs)


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("write"), st.integers(0, 1), st.integers(0, 10**6)),
            st.tuples(st.just("catch_up"), st.just(0), st.just(0)),
            st.tuples(st.just("read"), st.just(0), st.just(0)),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_cached_meta_equals_a_fresh_read_across_writes_and_catch_ups(ops: list[tuple[str, int, int]]) -> None:
    """read_meta reuses its last answer until a catch-up starts: whatever the writer did,
    the answer is the one reading every shard now gives."""
    with (
        tempfile.TemporaryDirectory() as tmp,
        RocksDBStore(Path(tmp) / "state", 2) as store,
        RocksDBOnlineTable(Path(tmp) / "state", 2, Path(tmp) / "sec", background=False) as table,
    ):
        for op, shard, newest in ops:
            if op == "write":
                tx = store.partitions[shard].begin()
                tx.put(meta_key(FP), encode_meta(newest, 7))
                tx.commit()
            elif op == "catch_up":
                table.catch_up()
            assert table.read_meta(FP) == _fresh_meta(table)
            assert table.read_meta(FP) == _fresh_meta(table)  # the cached answer too


def test_meta_read_while_a_catch_up_runs_is_not_reused(tmp_path: Path) -> None:
    with RocksDBStore(tmp_path / "state", 2) as store:
        tx = store.partitions[0].begin()
        tx.put(meta_key(FP), encode_meta(100, 7))
        tx.commit()
        with RocksDBOnlineTable(tmp_path / "state", 2, tmp_path / "sec", background=False) as table:
            table._changes_started += 1  # a catch-up has started and not finished
            assert table.read_meta(FP) == Freshness(100, 7)
            tx = store.partitions[1].begin()
            tx.put(meta_key(FP), encode_meta(200, 8))
            tx.commit()
            table._dbs[1].try_catch_up_with_primary()  # type: ignore[union-attr]  # it shows the write
            table._changes_done += 1  # and ends
            assert table.read_meta(FP) == Freshness(200, 8)  # the read made meanwhile was not kept
