"""Where the freshness lag goes, stage by stage (opt-in; not in `benchmarks.run`).

The same setup as `benchmarks.bench_freshness` (a tailing `streamfeat run` and a
`streamfeat serve`, background events at each rate, one probe every 0.2 s), with both
processes started through `benchmarks.freshness_hooks`, which records when each probe
record was read from Kafka, decoded and committed by the shard of `user_spend` (the view
whose `amount_count_15m` the probe polls), and when the server's secondary caught that
shard up. The producer's delivery report gives the broker's acknowledgement. Per probe:

    produced -> acked -> read -> decoded -> committed -> caught up -> answered

The commit time is taken when the shard's apply returns, after its WriteBatch and its
log-roll check, so a catch-up that started in between is not the one matched: then
"caught up" is late and "to_answer" negative; their sum (commit -> answer) is exact.

Also per rate: shard commits per second, their CPU (fixed part and per row, a least
squares line) and the rows they carry, and the catch-up rounds that found changes.

    .venv/bin/python -m benchmarks.freshness_stages [RATES] [PROBES]   (default 1000,10000 60)
"""

from __future__ import annotations

import http.client
import itertools
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from confluent_kafka import KafkaError, Message, Producer

from benchmarks.bench_freshness import BACKGROUND_USERS, POLL_TIMEOUT_S, PROBE_EVERY_S, Background, _count, _event
from benchmarks.common import PY, bootstrap, copy_repo, delete_topic, new_topic, streamfeat_cli
from benchmarks.servers import server
from engine.clock import wall_clock_ms
from engine.ports import free_port

PROBED_VIEW = "user_spend"  # holds amount_count_15m, which the probe polls
STAGES = ("producer_and_broker", "to_read", "decode", "to_commit", "to_catch_up", "to_answer", "total")


def _probe(producer: Producer, topic: str, conn: http.client.HTTPConnection, i: int) -> dict[str, Any]:
    user = f"probe-{uuid.uuid4().hex[:10]}"
    probe: dict[str, Any] = {"user": user}

    def delivered(err: KafkaError | None, msg: Message) -> None:
        probe["acked"] = time.time()

    started = time.perf_counter()
    probe["produced"] = time.time()
    while True:
        try:
            producer.produce(topic, _event(user, wall_clock_ms(), 10**9 + i), key=user.encode(), on_delivery=delivered)
            break
        except BufferError:
            producer.poll(0.005)
    producer.poll(0)
    while _count(conn, user) < 1:
        if time.perf_counter() - started > POLL_TIMEOUT_S:
            return probe
        producer.poll(0)  # serves the delivery report
        time.sleep(0.002)
    probe["answered"] = time.time()
    producer.poll(0)
    return probe


def _measure(servers: str, topic: str, port: int, rate: int, probes: int) -> list[dict[str, Any]]:
    producer = Producer({"bootstrap.servers": servers, "log_level": 0, "linger.ms": 1, "enable.idempotence": True})
    background = Background(producer, topic, rate, BACKGROUND_USERS)
    background.start()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    done: list[dict[str, Any]] = []
    try:
        time.sleep(1.0)
        for i in range(probes):
            started = time.perf_counter()
            done.append(_probe(producer, topic, conn, i))
            time.sleep(max(0.0, PROBE_EVERY_S - (time.perf_counter() - started)))
    finally:
        background.stop_flag.set()
        background.join()
        producer.flush(30)
        conn.close()
    return done


def _stages(probe: dict[str, Any], flow: list[dict[str, Any]], catch_ups: list[dict[str, Any]]) -> list[float] | None:
    user = probe["user"]
    read = next((e["t"] for e in flow if e["ev"] == "read" and user in e["probes"]), None)
    decoded = next((e["t"] for e in flow if e["ev"] == "decoded" and user in e["probes"]), None)
    commit = next((e for e in flow if e["ev"] == "applied" and [user, PROBED_VIEW] in e["probes"]), None)
    if read is None or decoded is None or commit is None or "acked" not in probe or "answered" not in probe:
        return None
    caught = next((c["t"] for c in catch_ups if c["started"] >= commit["t"] and commit["shard"] in c["shards"]), None)
    if caught is None:
        return None
    points = [probe["produced"], probe["acked"], read, decoded, commit["t"], caught, probe["answered"]]
    return [(b - a) * 1000 for a, b in itertools.pairwise(points)] + [(points[-1] - points[0]) * 1000]


def _summary(
    rate: int, probes: list[dict[str, Any]], flow: list[dict[str, Any]], serve: list[dict[str, Any]]
) -> dict[str, Any]:
    answered = [p for p in probes if "answered" in p]
    start = min(p["produced"] for p in probes)
    end = max((p["answered"] for p in answered), default=start + 1)
    rows = [s for p in answered if (s := _stages(p, flow, serve)) is not None]
    table = np.array(rows) if rows else np.zeros((0, len(STAGES)))
    commits = [e for e in flow if e["ev"] == "applied" and start <= e["t"] <= end]
    rounds = [c for c in serve if start <= c["t"] <= end]
    summary: dict[str, Any] = {
        "rate_events_per_s": rate,
        "probes": len(probes),
        "answered": len(answered),
        "traced": len(rows),
        "stages_ms": {
            name: {q: round(float(np.percentile(table[:, i], int(q[1:]))), 1) for q in ("p50", "p90", "p99")}
            for i, name in enumerate(STAGES)
            if len(table)
        },
        "shard_commits_per_s": round(len(commits) / (end - start), 1),
        "catch_up_rounds_with_changes_per_s": round(len(rounds) / (end - start), 1),
    }
    if len(commits) > 2:
        cpu = np.array([e["cpu_ms"] for e in commits])
        n_rows = np.array([e["rows"] for e in commits])
        per_row, fixed = np.polyfit(n_rows, cpu, 1)
        summary["commit_cpu_ms"] = {
            "p50": round(float(np.median(cpu)), 2),
            "fixed": round(float(fixed), 2),
            "per_row_us": round(float(per_row) * 1000, 2),
            "rows_p50": int(np.median(n_rows)),
        }
    return summary


def _lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


def run(rates: list[int], probes: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="freshness_stages_"))
    servers, stop = bootstrap()
    topic = new_topic(servers, "bench-fresh-stages")
    measured: list[tuple[int, list[dict[str, Any]]]] = []
    try:
        repo = copy_repo(work, topic)
        data = work / "data"
        streamfeat_cli("apply", "--repo", str(repo), "--data-dir", str(data), "--shards", "8", timeout=300)
        port = free_port()
        hooks = [PY, "-m", "benchmarks.freshness_hooks"]
        flow = [*hooks, "flow", str(work / "flow.jsonl"), "run", "--repo", str(repo), "--data-dir", str(data)]
        serve = [*hooks, "serve", str(work / "serve.jsonl"), "serve", "--repo", str(repo), "--port", str(port)]
        with (
            server([*flow, "--bootstrap", servers], "", port=-1, wait=False),
            server(serve, "/readyz", port=port, env={"STREAMFEAT_DATA_DIR": str(data)}),
        ):
            for rate in rates:
                measured.append((rate, _measure(servers, topic, port, rate, probes)))
        flow_trace, serve_trace = _lines(work / "flow.jsonl"), _lines(work / "serve.jsonl")
    finally:
        delete_topic(servers, topic)
        stop()
        shutil.rmtree(work, ignore_errors=True)
    return {
        "benchmark": "freshness_stages",
        "probed_view": PROBED_VIEW,
        "rates": [_summary(rate, probes_, flow_trace, serve_trace) for rate, probes_ in measured],
    }


if __name__ == "__main__":
    rates = [int(r) for r in sys.argv[1].split(",")] if len(sys.argv) > 1 else [1_000, 10_000]
    print(orjson.dumps(run(rates, int(sys.argv[2]) if len(sys.argv) > 2 else 60), option=orjson.OPT_INDENT_2).decode())
