from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.state.exceptions import (
    CorruptRecordError,
    ShardCountMismatchError,
    StateTypeError,
    StateValueError,
)
from engine.state.offsets import (
    INT64_MIN,
    OffsetRecord,
    ResumePoint,
    combine_resume_points,
)
from engine.state.rocksdb_store import RocksDBStore
from engine.state.secondary import read_offset_records, resume_positions
from tests.reference import legacy_offset_record, offset_record_bytes


def test_offset_record_pack_round_trip() -> None:
    record = OffsetRecord(123, (1_700_000_000_000, 1_699_999_999_500), 120, (1_699_999_999_000,))
    packed = record.pack()
    assert packed == offset_record_bytes(123, 120, (1_700_000_000_000, 1_699_999_999_500), (1_699_999_999_000,))
    assert OffsetRecord.unpack(packed) == record
    empty = OffsetRecord(-1, (), -1, ())
    assert OffsetRecord.unpack(empty.pack()) == empty


def test_offset_record_of_the_previous_version_still_reads() -> None:
    legacy = legacy_offset_record(123, 1_700_000_000_000, 120, INT64_MIN)
    assert OffsetRecord.unpack(legacy) == OffsetRecord(123, (1_700_000_000_000,), 120, ())


def test_offset_record_validation() -> None:
    with pytest.raises(StateTypeError, match="applied_offset"):
        OffsetRecord(True, (0,), 0, (0,))
    with pytest.raises(StateValueError, match="log_offset"):
        OffsetRecord(0, (0,), -2, (0,))
    with pytest.raises(StateValueError, match="top_ts_at_log"):
        OffsetRecord(0, (0,), 0, (2**63,))
    with pytest.raises(StateValueError, match="descending"):
        OffsetRecord(0, (1, 2), 0, ())
    with pytest.raises(CorruptRecordError, match="32 bytes"):
        OffsetRecord.unpack(b"\x00" * 31)
    with pytest.raises(CorruptRecordError, match="descending"):
        OffsetRecord.unpack(offset_record_bytes(1, 1, (1, 2), ()))


def test_combine_takes_smallest_of_shards_and_of_applied_and_log() -> None:
    shard0 = {0: OffsetRecord(100, (1000,), 90, (900,)), 1: OffsetRecord(50, (500,), 50, (500,))}
    shard1 = {0: OffsetRecord(95, (950,), 95, (950,)), 1: OffsetRecord(60, (600,), 45, (450,))}
    resume = combine_resume_points([shard0, shard1], n_shards=2)
    assert resume == {0: ResumePoint(91, (900,)), 1: ResumePoint(46, (450,))}


def test_combine_replays_partitions_a_shard_has_not_recorded() -> None:
    shard0 = {0: OffsetRecord(10, (1,), 10, (1,)), 1: OffsetRecord(10, (1,), 10, (1,))}
    shard1 = {0: OffsetRecord(12, (2,), 12, (2,))}
    assert combine_resume_points([shard0, shard1], n_shards=2) == {0: ResumePoint(11, (1,))}
    # a missing shard has applied nothing of any partition
    assert combine_resume_points([shard0], n_shards=2) == {}
    # nothing applied yet (-1) means read from the beginning
    assert combine_resume_points([{0: OffsetRecord(-1, (), -1, ())}], 1) == {}


def test_resume_positions_of_missing_directory(tmp_path: Path) -> None:
    assert resume_positions(tmp_path / "nothing-here", 4, "events") == {}


def test_resume_positions_reads_committed_offsets(tmp_path: Path) -> None:
    with RocksDBStore(tmp_path, 3) as store:
        for shard in range(3):
            tx = store.partition(shard).begin()
            tx.set_offset("events", 0, OffsetRecord(200 + shard, (2000 + shard,), 150, (1500,)))
            tx.set_offset("events", 1, OffsetRecord(7 - shard, (70 - shard,), 9, (90,)))
            tx.set_offset("other", 0, OffsetRecord(1, (1,), 1, (1,)))
            tx.commit()
        # works while the writer still holds the shards open
        expected = {0: ResumePoint(151, (1500,)), 1: ResumePoint(6, (68,))}
        assert resume_positions(tmp_path, 3, "events") == expected
        # an uncommitted transaction does not count
        store.partition(0).begin().set_offset("events", 0, OffsetRecord(1, (1,), 1, (1,)))
        assert resume_positions(tmp_path, 3, "events") == expected
    assert resume_positions(tmp_path, 3, "events") == expected
    assert resume_positions(tmp_path, 3, "other") == {0: ResumePoint(2, (1,))}
    assert resume_positions(tmp_path, 3, "unknown") == {}


def test_resume_positions_refuses_other_shard_count(tmp_path: Path) -> None:
    RocksDBStore(tmp_path, 2).close()
    with pytest.raises(ShardCountMismatchError, match="expected 2"):
        resume_positions(tmp_path, 3, "events")


# A shard with three flushed, overlapping L0 files and a fourth round in its WAL: the
# writer that opens it flushes the WAL to a fourth L0 file, which starts a compaction
# that rewrites all four and deletes them. The process ends without closing the shard,
# as a killed run does.
_SHARD_ABOUT_TO_COMPACT = """
import os, sys
import rocksdict
from engine.state.layout import shard_path, write_meta, writer_options
from engine.state.offsets import OffsetRecord
from engine.state.records import offset_key
from pathlib import Path
root = Path(sys.argv[1])
write_meta(root, 1)
db = rocksdict.Rdict(str(shard_path(root, 0)), writer_options())
db[offset_key("events", 0)] = OffsetRecord(41, (4100,), 41, (4100,)).pack()
for round_ in range(4):
    for i in range(90_000):
        db[b"bulk-%07d" % i] = b"%03d" % round_ * 33
    if round_ < 3:
        db.flush()
os._exit(0)
"""


def test_offsets_are_read_while_the_writer_compacts(tmp_path: Path) -> None:
    """A read-only open failed here now and then ("Corruption: Can't access ....sst")
    when the compaction deleted a file between the open's MANIFEST read and its table
    opens; a secondary must read every time (the window is narrow: this test passes
    with read-only opens too, most of the time, so it guards the contract, not the
    old failure)."""
    subprocess.run([sys.executable, "-c", _SHARD_ABOUT_TO_COMPACT, str(tmp_path)], check=True, timeout=120)
    shard = tmp_path / "shard-000"
    before = {p.name for p in shard.glob("*.sst")}
    assert len(before) == 3
    expected = [{0: OffsetRecord(41, (4100,), 41, (4100,))}]
    reads_during_compaction = 0
    with RocksDBStore(tmp_path, 1) as store:
        store.partition(0)  # the writer opens: WAL flushed, compaction started
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            compacting = before <= {p.name for p in shard.glob("*.sst")}
            assert read_offset_records(tmp_path, 1, "events") == expected
            reads_during_compaction += compacting
            if not compacting:
                break
        assert not before & {p.name for p in shard.glob("*.sst")}, "the compaction never ended"
    assert reads_during_compaction > 0


def test_a_secondary_that_missed_a_write_is_reopened_before_a_refusal(tmp_path: Path) -> None:
    """A long-running server refused `as_of` rows the Parquet log covered, for good, while
    a server started later answered them: its secondary showed older offset records than
    the writer's. `reopen_if_behind` compares with a fresh open and re-opens what shows
    less. The stale secondary is made here by opening it on a copy of the shard taken
    before the writer's last commit (no catch-up can reach that commit)."""
    import shutil

    from engine.state.layout import open_secondary, shard_path
    from engine.state.online_rocksdb import RocksDBOnlineTable

    state = tmp_path / "state"
    old, new = OffsetRecord(10, (1000,), 5, (500,)), OffsetRecord(10, (1000,), 10, (1000,))
    with RocksDBStore(state, 2) as store:
        for shard in range(2):
            tx = store.partition(shard).begin()
            tx.set_offset("events", 0, old)
            tx.commit()
        store.flush_wal()
        table = RocksDBOnlineTable(state, 2, tmp_path / "secondary", background=False)
        try:
            assert table.reopen_if_behind("events") is False  # current: nothing re-opened
            frozen = tmp_path / "frozen-shard-1"
            shutil.copytree(shard_path(state, 1), frozen)
            tx = store.partition(1).begin()
            tx.set_offset("events", 0, new)  # the log is published through offset 10
            tx.commit()
            store.flush_wal()
            stale = open_secondary(frozen, tmp_path / "frozen-own")
            table._dbs[1], held = stale, table._dbs[1]
            assert held is not None
            held.close()
            table.catch_up()
            assert table.read_offsets("events")[1] == {0: old}  # what the stale server saw
            assert table.reopen_if_behind("events") is True
            assert table.read_offsets("events") == [{0: old}, {0: new}]
            assert table.reopen_if_behind("events") is False
        finally:
            table.close()
