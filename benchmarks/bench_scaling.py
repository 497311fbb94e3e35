"""Scaling: ingest throughput of `streamfeat run --until-caught-up` with 1 and 2 processes
(wall time of the command, start-up included), and state size on disk plus peak RSS of a
Parquet backfill for growing entity counts (10k, 100k, and 1M users at full size).

CPU per event (issue #18): CPU seconds per million events summed over all processes of
`streamfeat run --processes N` (broker excluded) at N = 1, 2 and 4 on the same input, and
bytes the processes sent each other per event (benchmarks/process_cost.py). Start-up is
taken out: each run is paired with the same command over an empty topic, and the paired
difference is divided by the event count. On a machine with fewer cores than processes
this measures work per event, not speed: equal CPU per event at 4 processes means
throughput would grow with cores.

    .venv/bin/python -m benchmarks.bench_scaling [smoke|small|full] [cpu]
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.common import (
    PY,
    BenchError,
    bootstrap,
    check_size,
    copy_repo,
    delete_topic,
    dir_size_mb,
    new_topic,
    run_sampled,
    streamfeat_cli,
    summarize,
)
from engine.generate import GeneratorConfig, produce_events, write_parquet

SIZES: dict[str, dict[str, Any]] = {
    "smoke": {"events": 20_000, "users": 2_000, "runs": 1, "entity_counts": (2_000, 10_000)},
    "small": {"events": 200_000, "users": 20_000, "runs": 3, "entity_counts": (10_000, 100_000)},
    "full": {"events": 1_000_000, "users": 100_000, "runs": 3, "entity_counts": (10_000, 100_000, 1_000_000)},
}
CPU_PROCESSES = (1, 2, 4)
EVENTS_PER_USER = 5


def _processes(work: Path, servers: str, events: int, users: int, runs: int) -> dict[str, Any]:
    topic = new_topic(servers, "bench-scaling", partitions=4)
    out: dict[str, Any] = {}
    try:
        produce_events(GeneratorConfig(events=events, users=users, seed=9, rate=200.0), topic, servers)
        repo = copy_repo(work, topic)
        for processes in (1, 2):
            rows = []
            for i in range(runs):
                data = work / f"data-{processes}-{i}"
                streamfeat_cli("apply", "--repo", str(repo), "--data-dir", str(data), "--shards", "8")
                seconds, rss, _ = run_sampled(
                    [
                        PY,
                        "-m",
                        "cli",
                        "run",
                        "--repo",
                        str(repo),
                        "--data-dir",
                        str(data),
                        "--bootstrap",
                        servers,
                        "--until-caught-up",
                        "--processes",
                        str(processes),
                    ],
                    timeout=1800,
                )
                rows.append({"seconds": seconds, "events_per_s": events / seconds, "peak_rss_mb": rss / 1024})
                shutil.rmtree(data, ignore_errors=True)
            out[f"processes_{processes}"] = {
                "events_per_s": summarize([r["events_per_s"] for r in rows]),
                "peak_rss_mb": summarize([r["peak_rss_mb"] for r in rows]),
                "runs": rows,
            }
    finally:
        delete_topic(servers, topic)
    one, two = out.get("processes_1"), out.get("processes_2")
    if one and two:
        out["speedup_2_vs_1"] = round(two["events_per_s"]["median"] / one["events_per_s"]["median"], 3)
    return out


def _run_cmd(repo: Path, data: Path, servers: str, processes: int) -> list[str]:
    streamfeat_cli("apply", "--repo", str(repo), "--data-dir", str(data), "--shards", "8")
    return [PY, "-m", "cli", "run", "--repo", str(repo), "--data-dir", str(data), "--bootstrap", servers]


def _cpu_per_event(work: Path, servers: str, events: int, users: int, runs: int) -> dict[str, Any]:
    """CPU seconds per million events and peer bytes per event at 1, 2 and 4 processes."""
    from benchmarks.process_cost import run_costed

    topic = new_topic(servers, "bench-cpu", partitions=4)
    empty = new_topic(servers, "bench-cpu-empty", partitions=4)
    broker_port = int(servers.split(",")[0].rsplit(":", 1)[1])
    out: dict[str, Any] = {}
    try:
        produce_events(GeneratorConfig(events=events, users=users, seed=9, rate=200.0), topic, servers)
        repos = {"full": copy_repo(work, topic), "idle": copy_repo(work, empty)}
        for processes in CPU_PROCESSES:
            rows = []
            for i in range(runs):
                cost = {}
                for kind, repo in repos.items():  # the pair runs back to back, under the same load
                    data = work / f"cpu-{kind}-{processes}-{i}"
                    cmd = _run_cmd(repo, data, servers, processes)
                    cmd += ["--until-caught-up", "--processes", str(processes)]
                    cost[kind] = run_costed(cmd, timeout=1800, broker_port=broker_port)
                    shutil.rmtree(data, ignore_errors=True)
                full, idle = cost["full"], cost["idle"]
                rows.append(
                    {
                        "cpu_s": round(full["cpu_s"], 3),
                        "idle_cpu_s": round(idle["cpu_s"], 3),
                        "wall_s": round(full["seconds"], 3),
                        "cpu_s_per_million_events": round((full["cpu_s"] - idle["cpu_s"]) / events * 1e6, 3),
                        "peer_bytes_per_event": round((full["peer_bytes"] - idle["peer_bytes"]) / events, 2),
                    }
                )
            out[f"processes_{processes}"] = {
                "cpu_s_per_million_events": summarize([r["cpu_s_per_million_events"] for r in rows]),
                "peer_bytes_per_event": summarize([r["peer_bytes_per_event"] for r in rows]),
                "wall_s": summarize([r["wall_s"] for r in rows]),
                "runs": rows,
            }
    finally:
        delete_topic(servers, topic)
        delete_topic(servers, empty)
    base = out["processes_1"]["cpu_s_per_million_events"]["median"]
    for processes in CPU_PROCESSES[1:]:
        ratio = out[f"processes_{processes}"]["cpu_s_per_million_events"]["median"] / base
        out[f"cpu_per_event_{processes}_vs_1"] = round(ratio, 3)
    return out


def _entities(work: Path, users: int) -> dict[str, Any]:
    events = users * EVENTS_PER_USER
    config = GeneratorConfig(events=events, users=users, merchants=1_000, seed=5, rate=500.0, user_skew=0.0)
    history = work / f"history-{users}"
    write_parquet(config, history)
    data = work / f"data-entities-{users}"
    streamfeat_cli("apply", "--data-dir", str(data), "--shards", "8")
    handoff = datetime.fromtimestamp((config.end_ms // 1000 + 1), UTC).isoformat()
    seconds, rss, _ = run_sampled(
        [
            PY,
            "-m",
            "cli",
            "backfill",
            "--data-dir",
            str(data),
            "--source",
            "transactions",
            "--from",
            str(history),
            "--end",
            handoff,
            "--quiet",
        ],
        timeout=3600,
    )
    result = {
        "users": users,
        "events": events,
        "backfill_seconds": round(seconds, 2),
        "backfill_peak_rss_mb": round(rss / 1024, 1),
        "state_mb": dir_size_mb(data / "state"),
        "log_mb": dir_size_mb(data / "log") if (data / "log").exists() else 0.0,
    }
    shutil.rmtree(history, ignore_errors=True)
    shutil.rmtree(data, ignore_errors=True)
    return result


def run_cpu(size: str) -> dict[str, Any]:
    """Only the CPU-per-event section (the figures of issue #18)."""
    check_size("bench_scaling", SIZES, size)
    cfg = SIZES[size]
    work = Path(tempfile.mkdtemp(prefix="bench_scaling_cpu_"))
    servers, stop = bootstrap()
    try:
        cpu = _cpu_per_event(work, servers, cfg["events"], cfg["users"], cfg["runs"])
    finally:
        stop()
        shutil.rmtree(work, ignore_errors=True)
    return {"benchmark": "scaling_cpu", "size": size, "events": cfg["events"], "partitions": 4, "cpu": cpu}


def run(size: str) -> dict[str, Any]:
    check_size("bench_scaling", SIZES, size)
    cfg = SIZES[size]
    work = Path(tempfile.mkdtemp(prefix="bench_scaling_"))
    servers, stop = bootstrap()
    try:
        try:
            processes = _processes(work, servers, cfg["events"], cfg["users"], cfg["runs"])
        except BenchError as exc:
            processes = {"error": str(exc)}
        entities = [_entities(work, n) for n in cfg["entity_counts"]]
    finally:
        stop()
        shutil.rmtree(work, ignore_errors=True)
    return {
        "benchmark": "scaling",
        "size": size,
        "events": cfg["events"],
        "users": cfg["users"],
        "partitions": 4,
        "processes": processes,
        "entities": entities,
    }


if __name__ == "__main__":
    import json

    size = sys.argv[1] if len(sys.argv) > 1 else "smoke"
    print(json.dumps(run_cpu(size) if sys.argv[2:3] == ["cpu"] else run(size), indent=1))
