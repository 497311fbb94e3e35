"""Scale-out: `streamfeat run --processes 2 --online redis`; Redis values equal the reference."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from engine.definitions import load_repo
from engine.generate import generate
from engine.state.online_redis import RedisOnlineTable
from tests.engine.streaming_support import (
    applied_events,
    check_online_values,
    read_topic,
    reference_events,
    streamfeat,
)
from tests.ops.ops_support import make_pipeline, produce

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow]


def test_two_processes_write_redis_values_equal_to_the_reference(
    tmp_path: Path, kafka_bootstrap: str, kafka_topic: Callable[..., str], redis_server: str
) -> None:
    topic = kafka_topic(partitions=3)
    p = make_pipeline(tmp_path, kafka_bootstrap, topic, shards=4)
    config = produce(p, 20_000, seed=41)
    streamfeat(
        "run",
        *p.common,
        "--until-caught-up",
        "--processes",
        "2",
        "--online",
        "redis",
        "--redis-url",
        redis_server,
        "--batch-size",
        "2000",
        timeout=600,
    )
    # Both processes did work: each owns two of the four shards on disk.
    shard_dirs = sorted((p.data / "state").glob("shard-*"))
    assert len(shard_dirs) == 4

    views = {v.name: v for v in load_repo(p.repo).views}
    applied = applied_events(reference_events(read_topic(kafka_bootstrap, topic, 3), generate(config)), 300_000)
    table = RedisOnlineTable(redis_server)
    try:
        checked = check_online_values(table, views, applied)
    finally:
        table.close()
    assert checked > 300
