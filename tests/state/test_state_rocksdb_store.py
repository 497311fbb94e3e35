from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.state.exceptions import (
    ShardCountMismatchError,
    StateValueError,
    StoreClosedError,
    TransactionClosedError,
)
from engine.state.keys import entity_key, shard_for
from engine.state.offsets import OffsetRecord
from engine.state.protocols import Store, StorePartition, Transaction
from engine.state.records import offset_key, tile_key
from engine.state.rocksdb_store import RocksDBStore

FP = b"\x01" * 8
FP2 = b"\x02" * 8


def test_creates_shards_and_meta(tmp_path: Path) -> None:
    with RocksDBStore(tmp_path / "state", 3) as store:
        assert isinstance(store, Store)
        assert isinstance(store.partition(0), StorePartition)
        assert isinstance(store.partition(0).begin(), Transaction)
    names = sorted(p.name for p in (tmp_path / "state").iterdir())
    assert names == ["meta.json", "shard-000", "shard-001", "shard-002"]
    meta = json.loads((tmp_path / "state" / "meta.json").read_text())
    assert meta["n_shards"] == 3


def test_refuses_other_shard_count(tmp_path: Path) -> None:
    RocksDBStore(tmp_path, 4).close()
    with pytest.raises(ShardCountMismatchError, match="expected 4") as info:
        RocksDBStore(tmp_path, 8)
    assert info.value.hint is not None and "rescale" in info.value.hint
    # the failed open left nothing locked: the right count still opens
    RocksDBStore(tmp_path, 4).close()


def test_partition_index_validated(tmp_path: Path) -> None:
    with RocksDBStore(tmp_path, 2) as store, pytest.raises(StateValueError, match=r"0\.\.1"):
        store.partition(2)


def test_commit_then_read(tmp_path: Path) -> None:
    with RocksDBStore(tmp_path, 1) as store:
        part = store.partition(0)
        tx = part.begin()
        tx.put(tile_key(FP, b"a"), b"value-a")
        tx.put(tile_key(FP, b"b"), b"value-b")
        tx.set_offset("events", 0, OffsetRecord(10, (100,), 10, (100,)))
        tx.commit()
        assert part.get_many([tile_key(FP, b"a"), tile_key(FP, b"zz"), tile_key(FP, b"b")]) == [
            b"value-a",
            None,
            b"value-b",
        ]
        assert part.read_offsets("events") == {0: OffsetRecord(10, (100,), 10, (100,))}


def test_uncommitted_transaction_leaves_nothing(tmp_path: Path) -> None:
    with RocksDBStore(tmp_path, 1) as store:
        part = store.partition(0)
        base = part.begin()
        base.put(tile_key(FP, b"keep"), b"old")
        base.commit()

        tx = part.begin()
        tx.put(tile_key(FP, b"new"), b"x")
        tx.put(tile_key(FP, b"keep"), b"changed")
        tx.delete(tile_key(FP, b"keep"))
        tx.set_offset("events", 3, OffsetRecord(5, (5,), 5, (5,)))
        tx.abort()
        assert part.get_many([tile_key(FP, b"new"), tile_key(FP, b"keep")]) == [None, b"old"]
        assert part.read_offsets("events") == {}

        forgotten = part.begin()
        forgotten.put(tile_key(FP, b"new"), b"y")
        forgotten.set_offset("events", 3, OffsetRecord(6, (6,), 6, (6,)))
    # a transaction dropped without commit is gone after reopening too
    with RocksDBStore(tmp_path, 1) as store:
        part = store.partition(0)
        assert part.get_many([tile_key(FP, b"new"), tile_key(FP, b"keep")]) == [None, b"old"]
        assert part.read_offsets("events") == {}


def test_read_your_writes_inside_transaction(tmp_path: Path) -> None:
    with RocksDBStore(tmp_path, 1) as store:
        part = store.partition(0)
        setup = part.begin()
        setup.put(b"Tk1", b"stored-1")
        setup.put(b"Tk2", b"stored-2")
        setup.commit()

        tx = part.begin()
        tx.put(b"Tk1", b"pending-1")
        tx.delete(b"Tk2")
        tx.put(b"Tk3", b"pending-3")
        assert tx.get_many([b"Tk3", b"Tk2", b"Tk1", b"Tk4"]) == [
            b"pending-3",
            None,
            b"pending-1",
            None,
        ]
        # the store itself does not see them before commit
        assert part.get_many([b"Tk1", b"Tk2", b"Tk3"]) == [b"stored-1", b"stored-2", None]
        tx.put(b"Tk1", b"pending-1b")  # last write wins
        tx.commit()
        assert part.get_many([b"Tk1", b"Tk2", b"Tk3"]) == [b"pending-1b", None, b"pending-3"]


def test_transaction_closed_after_commit_or_abort(tmp_path: Path) -> None:
    with RocksDBStore(tmp_path, 1) as store:
        tx = store.partition(0).begin()
        tx.commit()
        with pytest.raises(TransactionClosedError):
            tx.put(b"Tk", b"v")
        with pytest.raises(TransactionClosedError):
            tx.commit()
        aborted = store.partition(0).begin()
        aborted.abort()
        with pytest.raises(TransactionClosedError):
            aborted.get_many([b"Tk"])


def test_offsets_round_trip_and_overwrite(tmp_path: Path) -> None:
    with RocksDBStore(tmp_path, 2) as store:
        part = store.partition(1)
        for offset in (10, 20, 30):
            tx = part.begin()
            tx.set_offset("events", 2, OffsetRecord(offset, (offset * 10,), offset - 5, (offset * 9,)))
            tx.set_offset("events", 0, OffsetRecord(offset + 1, (0,), offset + 1, (0,)))
            tx.set_offset("events.more", 2, OffsetRecord(1, (1,), 1, (1,)))
            tx.commit()
        # topic names that share a prefix stay apart (the \x00 terminator)
        assert part.read_offsets("events") == {
            0: OffsetRecord(31, (0,), 31, (0,)),
            2: OffsetRecord(30, (300,), 25, (270,)),
        }
        assert part.read_offsets("events.more") == {2: OffsetRecord(1, (1,), 1, (1,))}
        assert store.partition(0).read_offsets("events") == {}
        assert part.get_many([offset_key("events", 2)]) == [OffsetRecord(30, (300,), 25, (270,)).pack()]
    with RocksDBStore(tmp_path, 2) as reopened:
        assert reopened.partition(1).read_offsets("events")[2] == OffsetRecord(30, (300,), 25, (270,))


def test_same_directory_shares_handles_in_one_process(tmp_path: Path) -> None:
    first = RocksDBStore(tmp_path, 2)
    second = RocksDBStore(tmp_path, 2)  # rocksdict alone would refuse the second opener
    tx = first.partition(0).begin()
    tx.put(b"Tshared", b"1")
    tx.commit()
    assert second.partition(0).get_many([b"Tshared"]) == [b"1"]
    first.close()
    # the second store keeps working after the first one closed
    assert second.partition(0).get_many([b"Tshared"]) == [b"1"]
    second.close()
    with pytest.raises(StoreClosedError):
        second.partition(0)


def test_view_iteration_and_sizes(tmp_path: Path) -> None:
    with RocksDBStore(tmp_path, 4) as store:
        keys = [entity_key([f"user-{i}"]) for i in range(200)]
        for shard in range(4):
            tx = store.partition(shard).begin()
            for key in keys:
                if shard_for(FP, key, 4) == shard:
                    tx.put(tile_key(FP, key), b"x" * 10)
                if shard_for(FP2, key, 4) == shard:
                    tx.put(tile_key(FP2, key), b"y" * 3)
            tx.commit()
        seen = [k for part in store.partitions for k, _ in part.iter_view(FP)]
        assert sorted(seen) == sorted(keys)
        assert all(v == b"x" * 10 for part in store.partitions for _, v in part.iter_view(FP))
        expected = sum(9 + len(k) + 10 for k in keys)
        assert store.view_size_bytes(FP) == expected
        assert store.view_size_bytes(FP2) == sum(9 + len(k) + 3 for k in keys)
        store.flush_wal()
        assert store.state_size_bytes() > 0


def test_second_process_cannot_open_for_writing(tmp_path: Path) -> None:
    import subprocess
    import sys

    with RocksDBStore(tmp_path, 1) as store:
        store.partition(0)  # shards open on first use
        code = (
            "import sys\n"
            "from engine.state.rocksdb_store import RocksDBStore\n"
            "from engine.state.exceptions import StateError\n"
            "try:\n"
            f"    RocksDBStore({str(tmp_path)!r}, 1).partition(0)\n"
            "except StateError as exc:\n"
            "    print('refused:', exc)\n"
            "    sys.exit(3)\n"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stderr
    assert "cannot open for writing" in done.stdout


KILLED_WRITER = """
import sys, time
from engine.state.offsets import OffsetRecord
from engine.state.records import tile_key
from engine.state.rocksdb_store import RocksDBStore

store = RocksDBStore(sys.argv[1], 1)
part = store.partition(0)
for batch in range(1, 4):
    tx = part.begin()
    for i in range(1000):
        tx.put(tile_key(b"\\x01" * 8, f"e{i}".encode()), f"batch{batch}".encode())
    tx.set_offset("events", 0, OffsetRecord(batch * 1000 - 1, (batch,), batch * 1000 - 1, (batch,)))
    tx.commit()
tx = part.begin()
for i in range(1000):
    tx.put(tile_key(b"\\x01" * 8, f"e{i}".encode()), b"never-committed")
tx.set_offset("events", 0, OffsetRecord(3999, (4,), 3999, (4,)))
print("ready", flush=True)
time.sleep(60)
"""


def test_kill_9_keeps_commits_and_drops_the_open_transaction(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    from engine.state.offsets import ResumePoint
    from engine.state.secondary import resume_positions

    with subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    ) as child:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    assert resume_positions(tmp_path, 1, "events") == {0: ResumePoint(3000, (3,))}
    with RocksDBStore(tmp_path, 1) as store:
        values = store.partition(0).get_many([tile_key(FP, f"e{i}".encode()) for i in range(1000)])
        assert values == [b"batch3"] * 1000


def test_memtables_of_all_shards_are_charged_to_one_budget(tmp_path: Path) -> None:
    # Writer memory must not grow with the shard count: every shard's memtable counts
    # against the one process-wide budget (engine/state/layout.py).
    from engine.state import layout

    budget = layout._memtable_budget()
    assert budget.enabled()
    assert budget.get_buffer_size() == layout._MEMTABLE_BUDGET_BYTES
    value = bytes(range(256)) * 16  # 4 KB, below the memtable size: stays in memory
    with RocksDBStore(tmp_path / "state", 2) as store:
        before = budget.get_usage()
        for shard in (0, 1):
            txn = store.partition(shard).begin()
            txn.put_many([b"k%05d" % i for i in range(256)], [value] * 256)
            txn.commit()
        grown = budget.get_usage() - before
    # 2 shards x 1 MB of values; RocksDB charges memtable memory in arena blocks.
    assert grown >= 2 * 256 * len(value)
