"""Scale-out: `streamfeat run --processes 2 --online redis`; Redis values equal the reference."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.definitions import StreamFeatureView, load_repo
from engine.generate import generate
from engine.kernel import ViewSpec, decode_tiles, evaluate
from engine.state.keys import entity_key
from engine.state.online_redis import RedisOnlineTable
from tests.engine.streaming_support import (
    applied_events,
    assert_close,
    expected_values,
    read_topic,
    reference_events,
    streamfeat,
)
from tests.ops.ops_support import make_pipeline, produce

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow]


def _redis_values(table: RedisOnlineTable, view: StreamFeatureView, key: str, t: int) -> dict[str, Any] | None:
    record = table.read(view.fingerprint, [entity_key([key])])[0]
    if record is None:
        return None
    tiles, partials, _ = decode_tiles(record)
    return dict(evaluate(ViewSpec.from_view(view), tiles, partials, t).values)


def test_two_processes_write_redis_values_equal_to_the_reference(
    tmp_path: Path, kafka_bootstrap: str, kafka_topic: Callable[..., str], redis_server: str
) -> None:
    topic = kafka_topic(partitions=3)
    p = make_pipeline(tmp_path, kafka_bootstrap, topic, shards=4)
    config = produce(p, 20_000, seed=41)
    streamfeat(
        "run", *p.common, "--until-caught-up", "--processes", "2", "--online", "redis",
        "--redis-url", redis_server, "--batch-size", "2000", timeout=600,
    )  # fmt: skip
    # Both processes did work: each owns two of the four shards on disk.
    shard_dirs = sorted((p.data / "state").glob("shard-*"))
    assert len(shard_dirs) == 4

    views = {v.name: v for v in load_repo(p.repo).views}
    applied = applied_events(reference_events(read_topic(kafka_bootstrap, topic, 3), generate(config)), 300_000)
    t_end = max(e["e"] for e in applied)
    table = RedisOnlineTable(redis_server)
    checked = 0
    try:
        for view_name, key_field in (("user_spend", "entity"), ("merchant_activity", "merchant")):
            view = views[view_name]
            by_key: dict[str, list[dict[str, Any]]] = {}
            for e in applied:
                by_key.setdefault(str(e[key_field]), []).append(e)
            for key, mine in by_key.items():
                got = _redis_values(table, view, key, t_end)
                if got is None:
                    assert not any(e["event_type"] == "PURCHASE" for e in mine), f"{view_name} {key} missing"
                    continue
                want = expected_values(view, mine, key, t_end, key_field=key_field)
                assert_close(got, want, f"{view_name} {key}")
                checked += 1
    finally:
        table.close()
    assert checked > 300
