"""Read every shard of a state directory as it is now, while a writer may be running.

Secondary instances, never read-only opens: a read-only open does not see what a running
writer has written since its last memtable flush, and it fails outright ("Corruption:
Can't access ....sst") when the writer's compaction deletes a file between the open's
reading of the MANIFEST and its opening of the table files. A secondary tolerates both. Each shard is a
:class:`SecondaryPartition`, the read side of the ``StorePartition`` protocol, so tools
(``streamfeat status``) read records through the same calls the writer uses.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import rocksdict

from engine.state.layout import check_meta_shards, iter_prefix, multi_get, open_secondary, shard_exists, shard_path
from engine.state.offsets import OffsetRecord, ResumePoint, combine_resume_points, scan_offsets


class SecondaryPartition:
    """One shard opened as a caught-up secondary (reads only)."""

    def __init__(self, shard: int, db: rocksdict.Rdict) -> None:
        self._shard = shard
        self._db = db

    @property
    def shard(self) -> int:
        return self._shard

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        return multi_get(self._db, list(keys))

    def read_offsets(self, topic: str) -> dict[int, OffsetRecord]:
        return scan_offsets(self._db, topic)

    def scan_prefix(self, prefix: bytes, from_key: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        return iter_prefix(self._db, prefix, from_key)


@contextmanager
def secondary_shards(state_dir: Path, n_shards: int) -> Iterator[list[SecondaryPartition | None]]:
    """Every shard as a caught-up secondary (None where the shard does not exist yet);
    closed, and their private files removed, on exit."""
    own_root = Path(tempfile.mkdtemp(prefix="streamfeat-secondary-"))
    dbs: list[rocksdict.Rdict] = []
    try:
        parts: list[SecondaryPartition | None] = []
        for shard in range(n_shards):
            path = shard_path(state_dir, shard)
            if not shard_exists(path):
                parts.append(None)
                continue
            db = open_secondary(path, own_root / f"shard-{shard}")
            dbs.append(db)
            db.try_catch_up_with_primary()
            parts.append(SecondaryPartition(shard, db))
        yield parts
    finally:
        for db in dbs:
            db.close()
        shutil.rmtree(own_root, ignore_errors=True)


def read_offset_records(state_dir: str | Path, n_shards: int, topic: str) -> list[dict[int, OffsetRecord]]:
    """The offset records of ``topic`` of every existing shard, safe to call while a
    writer (in this process or another) has the shards open."""
    root = Path(state_dir)
    check_meta_shards(root, n_shards)
    with secondary_shards(root, n_shards) as parts:
        return [part.read_offsets(topic) for part in parts if part is not None]


def resume_positions(state_dir: str | Path, n_shards: int, topic: str) -> dict[int, ResumePoint]:
    """Where the source must resume each partition of ``topic``.

    Partitions absent from the result are read from the beginning (logged when a shard
    had applied some of them already, with the reason).
    """
    return combine_resume_points(read_offset_records(state_dir, n_shards, topic), n_shards)
