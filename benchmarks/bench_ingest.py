"""Ingest throughput from one pre-filled Kafka topic, each system in its own child process,
one after the other: (a) streamfeat's dataflow with the example fraud views, one worker;
(b) a bare Bytewax flow counting per key; (c) Quix Streams hopping-window sum and count
with its RocksDB state (own virtualenv, pinned version). Then streamfeat alone on a second
topic whose events go to many distinct users (users drawn uniformly), for peak RSS while
the state holds about a million entities.

    .venv/bin/python -m benchmarks.bench_ingest [smoke|full]
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import (
    PY,
    BenchError,
    bootstrap,
    check_size,
    delete_topic,
    new_topic,
    run_child,
    summarize,
)
from benchmarks.peers import install
from engine.generate import GeneratorConfig, produce_events

SIZES: dict[str, tuple[int, int, int]] = {  # events, users, runs
    "smoke": (20_000, 2_000, 3),
    "small": (200_000, 20_000, 3),
    "full": (1_000_000, 100_000, 3),
}
# Many distinct users: events, users drawn uniformly. At full size 2M draws over 2M users
# name ~1.26M distinct users, ~1.1M of them with a purchase (stored by user_spend).
MANY_USERS_SIZES: dict[str, tuple[int, int]] = {
    "smoke": (20_000, 20_000),
    "small": (200_000, 200_000),
    "full": (2_000_000, 2_000_000),
}
PEER_SCRIPT = Path(__file__).resolve().parent / "peers" / "quix_ingest.py"
TARGETS = {
    "streamfeat_events_per_s": 400_000,
    "ratio_vs_bytewax_bare": 3.5,
    "ratio_vs_quix": 20.0,
    "many_users_peak_rss_mb": 1024,
    "many_users_entities": 1_000_000,
}
DECODE_LIMIT_BATCH = 5_000  # records per parser call in the decode-limit child


def _once(system: str, bootstrap_servers: str, topic: str, events: int, work: Path) -> dict[str, Any]:
    if system == "streamfeat":
        cmd = [PY, "-m", "benchmarks.peers.ours_ingest", bootstrap_servers, topic, str(work)]
    elif system == "bytewax_bare":
        cmd = [PY, "-m", "benchmarks.peers.bytewax_bare", bootstrap_servers, topic, str(events)]
    else:
        peer = install.ensure("quix")
        cmd = [str(peer.python), str(PEER_SCRIPT), bootstrap_servers, topic, str(events), str(work / "quix")]
    result = run_child(cmd, timeout=1800)
    if result["events"] < events:
        raise BenchError(f"ingest {system}: consumed {result['events']} of {events} events")
    return result


def run(size: str) -> dict[str, Any]:
    check_size("bench_ingest", SIZES, size)
    events, users, runs = SIZES[size]
    servers, stop = bootstrap()
    topic = new_topic(servers, "bench-ingest")
    systems: dict[str, Any] = {}
    try:
        config = GeneratorConfig(events=events, users=users, merchants=1_000, seed=7, rate=200.0)
        produce_events(config, topic, servers)
        decode_limit = _decode_limit(servers, topic, events)
        for system in ("streamfeat", "bytewax_bare", "quix"):
            rows: list[dict[str, Any]] = []
            try:
                for _ in range(runs):
                    work = Path(tempfile.mkdtemp(prefix=f"bench_ingest_{system}_"))
                    try:
                        rows.append(_once(system, servers, topic, events, work))
                    finally:
                        shutil.rmtree(work, ignore_errors=True)
            except (BenchError, install.PeerInstallError) as exc:
                systems[system] = {"error": str(exc)}
                continue
            systems[system] = {
                "events_per_s": summarize([r["events"] / r["seconds"] for r in rows]),
                "peak_rss_mb": summarize([r["peak_rss_kb"] / 1024 for r in rows]),
                "runs": rows,
            }
            if system == "streamfeat":
                systems[system]["stage_us_per_event"] = _stage_summary(rows)
                systems[system]["events_per_decoded_batch"] = summarize([r["events_per_decoded_batch"] for r in rows])
            if system == "quix":
                systems[system]["events_per_s_first_to_last"] = summarize(
                    [r["events"] / r["first_to_last_seconds"] for r in rows]
                )
                systems[system]["version"] = install.installed_version(install.PEERS["quix"])
        many_users = _many_users(size, servers)
    finally:
        delete_topic(servers, topic)
        stop()
    return {
        "benchmark": "ingest",
        "size": size,
        "events": events,
        "users": users,
        "partitions": 3,
        "systems": systems,
        "ratios": _ratios(systems),
        "many_users": many_users,
        "targets": TARGETS,
        "decode_limit": decode_limit,
    }


def _decode_limit(servers: str, topic: str, events: int) -> dict[str, Any]:
    """CPU per record of plain parsers and of our decoder over the same records (own child)."""
    cmd = [PY, "-m", "benchmarks.peers.decode_limit", servers, topic, str(events), str(DECODE_LIMIT_BATCH)]
    try:
        return run_child(cmd, timeout=1800)
    except BenchError as exc:
        return {"error": str(exc)}


def _stage_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per stage: median (min - max) CPU microseconds per event over the runs."""
    stages = rows[0]["stage_us_per_event"]
    return {stage: summarize([r["stage_us_per_event"][stage] for r in rows]) for stage in stages}


def _many_users(size: str, servers: str) -> dict[str, Any]:
    """streamfeat once over events of uniformly drawn users: peak RSS against the entity count."""
    events, users = MANY_USERS_SIZES[size]
    topic = new_topic(servers, "bench-ingest-users")
    work = Path(tempfile.mkdtemp(prefix="bench_ingest_users_"))
    try:
        config = GeneratorConfig(events=events, users=users, merchants=1_000, seed=7, rate=200.0, user_skew=0.0)
        produce_events(config, topic, servers)
        run = _once("streamfeat", servers, topic, events, work)
    except BenchError as exc:
        return {"error": str(exc)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
        delete_topic(servers, topic)
    return {
        "events": events,
        "users_drawn_from": users,
        "user_skew": 0.0,
        "entities": run["entities"],
        "events_per_s": run["events"] / run["seconds"],
        "peak_rss_mb": run["peak_rss_kb"] / 1024,
        "run": run,
    }


def _median(systems: dict[str, Any], name: str, key: str = "events_per_s") -> float | None:
    entry = systems.get(name, {})
    return entry[key]["median"] if key in entry else None


def _ratios(systems: dict[str, Any]) -> dict[str, float | None]:
    ours = _median(systems, "streamfeat")
    bare = _median(systems, "bytewax_bare")
    quix = _median(systems, "quix")
    return {
        "ratio_vs_bytewax_bare": round(ours / bare, 3) if ours and bare else None,
        "ratio_vs_quix": round(ours / quix, 3) if ours and quix else None,
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(sys.argv[1] if len(sys.argv) > 1 else "smoke"), indent=1))
