"""Durable shards: the changelog written with every commit restores a lost shard exactly."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from engine.state.changelog import ShardChangelog, ShardRestorer, changelog_topic, ensure_changelog_topic
from engine.state.offsets import OffsetRecord
from engine.state.progress import read_progress
from engine.state.records import (
    CHANGELOG_IDENTITY_KEY,
    CHANGELOG_POSITION_KEY,
    OFFSET_PREFIX,
    TILE_PREFIX,
    decode_changelog_position,
    encode_changelog_position,
)
from engine.state.restore import restore_shards
from engine.state.rocksdb_store import ChangelogTarget, RocksDBStore
from engine.state.secondary import read_offset_records
from tests.fixtures.kafka import TopicFactory

pytestmark = [pytest.mark.kafka]

SHARDS = 2


def _contents(state_dir: Path) -> list[dict[bytes, bytes]]:
    store = RocksDBStore(state_dir, SHARDS)
    try:
        return [dict(p.scan_prefix(b"")) for p in store.partitions]
    finally:
        store.close()


def _write_batches(store: RocksDBStore, topic: str) -> None:
    for step in range(5):
        for shard in range(SHARDS):
            txn = store.partition(shard).begin()
            keys = [TILE_PREFIX + bytes([shard, step, i]) for i in range(50)]
            txn.put_many(keys, [bytes([step]) * 8 for _ in keys])
            if step == 3:
                txn.delete(TILE_PREFIX + bytes([shard, 1, 7]))  # a tombstone must restore as a delete
            txn.set_offset(topic, shard, OffsetRecord(step * 100 + shard, (step,), step * 100, (step,)))
            txn.commit()


def _logged_state(bootstrap: str, topic: str, state: Path) -> None:
    """Five committed batches per shard with the changelog on."""
    ensure_changelog_topic(bootstrap, topic, SHARDS)
    with RocksDBStore(state, SHARDS, ChangelogTarget(bootstrap, topic)) as store:
        _write_batches(store, topic)


def test_lost_shard_directory_restores_exactly(kafka_bootstrap: str, kafka_topic: TopicFactory, tmp_path: Path) -> None:
    topic = kafka_topic(SHARDS, prefix="changelog")
    state = tmp_path / "state"
    _logged_state(kafka_bootstrap, topic, state)
    before = _contents(state)
    assert all(CHANGELOG_POSITION_KEY in shard for shard in before)
    assert all(TILE_PREFIX + bytes([s, 1, 7]) not in before[s] for s in range(SHARDS))

    shutil.rmtree(state)  # the host and its disk are gone
    stats = restore_shards(kafka_bootstrap, topic, state, SHARDS)
    assert [s.records > 0 for s in stats] == [True] * SHARDS
    assert _contents(state) == before  # tiles, offsets and the changelog position


def test_changelog_ahead_of_local_copy_is_caught_up(
    kafka_bootstrap: str, kafka_topic: TopicFactory, tmp_path: Path
) -> None:
    """A crash after the Kafka transaction committed but before the WriteBatch landed."""
    topic = kafka_topic(SHARDS, prefix="changelog")
    state = tmp_path / "state"
    _logged_state(kafka_bootstrap, topic, state)
    writer = ShardChangelog(kafka_bootstrap, topic, 1)
    position = writer.publish({TILE_PREFIX + b"late": b"v", TILE_PREFIX + bytes([1, 0, 0]): None})
    writer.close()
    restore_shards(kafka_bootstrap, topic, state, SHARDS)
    shard1 = _contents(state)[1]
    assert shard1[TILE_PREFIX + b"late"] == b"v"
    assert TILE_PREFIX + bytes([1, 0, 0]) not in shard1
    assert decode_changelog_position(shard1[CHANGELOG_POSITION_KEY]) == position


def test_foreign_shard_directory_is_wiped_and_restored(
    kafka_bootstrap: str, kafka_topic: TopicFactory, tmp_path: Path
) -> None:
    """A copy ahead of the changelog (here: another deployment's, whose changelog is
    empty) is never served: it is wiped and restored from the changelog it now follows."""
    topic = kafka_topic(SHARDS, prefix="changelog")
    state = tmp_path / "state"
    _logged_state(kafka_bootstrap, topic, state)
    other = kafka_topic(SHARDS, prefix="changelog")  # an empty changelog: the copy is foreign
    restore_shards(kafka_bootstrap, other, state, SHARDS)
    for shard in _contents(state):
        assert not any(key.startswith((TILE_PREFIX, OFFSET_PREFIX, CHANGELOG_POSITION_KEY)) for key in shard), shard
        assert shard[CHANGELOG_IDENTITY_KEY].startswith(f"{changelog_topic(other)}#".encode())


def test_shard_directory_of_another_shard_is_detected_and_restored(
    kafka_bootstrap: str, kafka_topic: TopicFactory, tmp_path: Path
) -> None:
    """Shard 0's directory put in place of shard 1 (a hand copy gone wrong): its identity
    names the wrong changelog partition, so shard 1 is restored from its own."""
    topic = kafka_topic(SHARDS, prefix="changelog")
    state = tmp_path / "state"
    _logged_state(kafka_bootstrap, topic, state)
    before = _contents(state)
    shutil.rmtree(state / "shard-001")
    shutil.copytree(state / "shard-000", state / "shard-001")
    restorer = ShardRestorer(kafka_bootstrap, topic, 1)
    with RocksDBStore(state, SHARDS) as store:
        stats = store.partition(1).catch_up(restorer)
    assert restorer.wiped > 0 and stats.records > 0
    assert _contents(state) == before


def test_progress_topic_holds_every_shards_offsets(
    kafka_bootstrap: str, kafka_topic: TopicFactory, tmp_path: Path
) -> None:
    """The offsets a host reads for shards it does not open equal the shards' own."""
    topic = kafka_topic(SHARDS, prefix="changelog")
    state = tmp_path / "state"
    _logged_state(kafka_bootstrap, topic, state)
    local = read_offset_records(state, SHARDS, topic)
    assert len(local) == SHARDS and all(local)
    assert read_progress(kafka_bootstrap, topic, SHARDS) == local


def test_shard_copy_ahead_of_its_changelog_is_wiped_and_restored(
    kafka_bootstrap: str, kafka_topic: TopicFactory, tmp_path: Path
) -> None:
    """Same changelog partition, but a position past its end (a copy of state the changelog
    never held): not served, restored from the changelog instead."""
    topic = kafka_topic(SHARDS, prefix="changelog")
    state = tmp_path / "state"
    _logged_state(kafka_bootstrap, topic, state)
    before = _contents(state)
    with RocksDBStore(state, SHARDS) as store:
        txn = store.partition(0).begin()
        txn.put(b"Tstray", b"not in the changelog")
        txn.put(CHANGELOG_POSITION_KEY, encode_changelog_position(1_000_000))
        txn.commit()
    restorer = ShardRestorer(kafka_bootstrap, topic, 0)
    with RocksDBStore(state, SHARDS) as store:
        store.partition(0).catch_up(restorer)
    assert restorer.wiped > 0
    assert _contents(state) == before
