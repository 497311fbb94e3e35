"""Checks a finished `streamfeat run` against the brute-force reference: online values,
the deduplicated Parquet log, and the dead-letter topic (every refused record, once)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine.definitions import load_repo
from engine.io.batches import dlq_topic_for
from engine.io.dead_letters import dlq_record_count, read_dead_letters
from engine.io.log_reader import read_log
from engine.state.online_rocksdb import RocksDBOnlineTable
from tests.engine.streaming_support import EXAMPLE_VIEW_KEYS, check_online_values
from tests.reference import apply_watermark

LATENESS_MS = 300_000


def applied_linear(events: Sequence[dict[str, Any]], lateness_ms: int = LATENESS_MS) -> list[dict[str, Any]]:
    """The applied events in (partition, offset) order, by tests/reference.apply_watermark."""
    return apply_watermark(sorted(events, key=lambda e: (e["partition"], e["offset"])), lateness_ms)


def check_against_reference(
    repo: Path,
    data_dir: Path,
    bootstrap: str,
    topic: str,
    events: Sequence[dict[str, Any]],
    secondary: Path,
    *,
    shards: int = 4,
    check_dlq: bool = True,
) -> dict[str, int]:
    """Assert state, log and DLQ equal the reference; return counts for the report."""
    views = {v.name: v for v in load_repo(repo).views}
    applied = applied_linear(events)
    table = RocksDBOnlineTable(data_dir / "state", shards, secondary, background=False)
    try:
        checked = check_online_values(table, views, applied)
        for view_name, _key_field in EXAMPLE_VIEW_KEYS:
            log = read_log(str(data_dir / "log"), view_name)
            purchases = {(e["partition"], e["offset"]) for e in applied if e["event_type"] == "PURCHASE"}
            logged = set(zip(log["partition"].to_list(), log["offset"].to_list(), strict=True))
            assert logged == purchases, f"{view_name}: log rows differ from applied purchases"
    finally:
        table.close()
    dead = 0
    if check_dlq:
        letters = read_dead_letters(bootstrap, dlq_topic_for(topic))
        refused = {(e["partition"], e["offset"]) for e in events} - {(e["partition"], e["offset"]) for e in applied}
        assert {(d.partition, d.offset) for d in letters} == refused, "DLQ differs from the refused records"
        assert all(d.reason for d in letters)
        dead = len(letters)
        # Exactly one letter per bad record, so `streamfeat status` (which counts the topic's
        # records) reports distinct bad records, also after kill -9 and restarts.
        assert dlq_record_count(bootstrap, dlq_topic_for(topic)) == dead, "dead letters repeated"
    return {"events": len(events), "applied": len(applied), "entities_checked": checked, "dead_letters": dead}
