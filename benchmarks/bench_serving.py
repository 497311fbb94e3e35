"""Serving throughput and latency, one uvicorn process each, loopback, 16 keep-alive
connections from a separate load-generator process (wrk, or the Python fallback):

- streamfeat (`streamfeat serve`) over state backfilled from generated history, reading
  the RocksDB shards and then Redis (`online: redis`);
- a bare FastAPI constant endpoint (the ceiling of the framework);
- Feast's Python feature server (own virtualenv, SQLite online store, six user features
  and the spend-velocity ratio as a python-mode on-demand view).

Scenarios: 1 entity per request (fraud_scoring) and 100 entities per request
(batch_review for streamfeat; the same Feast service with 100 users).

    .venv/bin/python -m benchmarks.bench_serving [smoke|full]
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import polars as pl

from benchmarks.common import PY, ROOT, BenchError, check_size, run_child, streamfeat_cli, summarize
from benchmarks.peers import install
from benchmarks.servers import cpu_seconds, load, peak_rss_kb, redis_server, server
from engine.generate import GeneratorConfig, write_parquet
from engine.ports import free_port

SIZES: dict[str, tuple[int, int, float, int]] = {  # events, users, seconds per run, runs
    "smoke": (20_000, 2_000, 1.0, 3),
    "small": (200_000, 20_000, 5.0, 3),
    "full": (1_000_000, 100_000, 10.0, 3),
}
REPO = ROOT / "feature_defs"
# Client-cache measurement: FeatureClient calls per variant (uncached, cache hits), hot users.
CLIENT_CALLS = {"smoke": 100, "small": 2_000, "full": 5_000}
HOT_USERS = {"smoke": 20, "small": 100, "full": 100}
TARGETS = {  # issue #19, item 3
    "one_entity_requests_per_s": 5_000,
    "one_entity_p99_ms": 3.0,
    "ratio_vs_bare": 0.8,
    "hundred_entities_p99_ms": 10.0,
    "hundred_entity_rows_per_s": 100_000,
    "ratio_vs_feast": 5.0,
    "cache_hit_p99_us": 100.0,
}
# The 100-entity targets are judged at 16 connections (issue #19); 1 and 4 connections
# (the latency of a request rather than of a queue) are reported beside them.
LOW_CONNECTIONS = (1, 4)
PEER_DIR = Path(__file__).resolve().parent / "peers"


def _history(work: Path, events: int, users: int) -> tuple[GeneratorConfig, pl.DataFrame]:
    config = GeneratorConfig(events=events, users=users, merchants=1_000, seed=3, rate=200.0)
    write_parquet(config, work / "history")
    frame = pl.read_parquet(str(work / "history" / "**" / "*.parquet"))
    return config, frame


def _feast_features(frame: pl.DataFrame, as_of: int, path: Path) -> None:
    """The six user features at ``as_of`` (purchases in the last 15 min / 1 h / 1 d) for Feast."""
    buys = frame.filter((pl.col("event_type") == "PURCHASE") & (pl.col("ts") < as_of))

    def window(ms: int, suffix: str) -> pl.DataFrame:
        return (
            buys.filter(pl.col("ts") >= as_of - ms)
            .group_by("user_id")
            .agg(
                pl.col("amount").sum().alias(f"amount_sum_{suffix}"),
                pl.len().cast(pl.Int64).alias(f"amount_count_{suffix}"),
                pl.col("amount").mean().alias(f"amount_mean_{suffix}"),
            )
        )

    users = frame.select(pl.col("user_id").unique())
    out = users
    for ms, suffix in ((900_000, "15m"), (3_600_000, "1h"), (86_400_000, "1d")):
        out = out.join(window(ms, suffix), on="user_id", how="left")
    out = (
        out.select(
            "user_id",
            "amount_sum_15m",
            "amount_count_15m",
            "amount_mean_15m",
            "amount_sum_1h",
            "amount_count_1h",
            "amount_sum_1d",
        )
        .fill_null(0)
        .with_columns(pl.lit(as_of).cast(pl.Datetime("ms")).alias("event_timestamp"))
    )
    out.write_parquet(path)


def _bodies(frame: pl.DataFrame, as_of: int, rows: int, kind: str, count: int = 2_000) -> list[bytes]:
    rng = np.random.default_rng(11)
    users = frame["user_id"].unique().sort().to_numpy()
    merchants = frame["merchant_id"].unique().sort().to_numpy()
    out = []
    for _ in range(count):
        u = [str(x) for x in rng.choice(users, rows)]
        amounts = [round(float(a), 2) for a in rng.uniform(1, 500, rows)]
        if kind == "feast":
            doc: dict[str, Any] = {"feature_service": "fraud_scoring", "entities": {"user_id": u, "amount": amounts}}
        elif rows == 1:
            doc = {
                "entities": {"user_id": u, "merchant_id": [str(rng.choice(merchants))]},
                "request_data": {"amount": amounts},
                "as_of": as_of,
            }
        else:
            doc = {"entities": {"user_id": u}, "request_data": {"amount": amounts}, "as_of": as_of}
        out.append(orjson.dumps(doc))
    return out


def _check(port: int, path: str, body: bytes, expect: Callable[[Any], bool], name: str) -> None:
    """One request answered correctly before load: a benchmark of errors is worthless."""
    import urllib.request

    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        doc = orjson.loads(resp.read())
    if not expect(doc):
        raise BenchError(f"{name}: unexpected answer {str(doc)[:400]}")


def _measure(
    port: int, path: str, bodies: list[bytes], seconds: float, runs: int, *, pid: int, connections: int = 16
) -> dict[str, Any]:
    """``runs`` load runs; besides latency, the server's own CPU time per request (user +
    system of every thread of ``pid``), which other load on a shared machine disturbs
    much less than throughput."""
    if seconds >= 2:  # warm-up, discarded (skipped at smoke size, where runs are 1 s)
        load(port, path, bodies, seconds=2.0, connections=connections)
    rows = []
    for _ in range(runs):
        before = cpu_seconds(pid)
        row = load(port, path, bodies, seconds=seconds, connections=connections)
        row["server_cpu_us_per_request"] = (cpu_seconds(pid) - before) / max(row["requests"], 1) * 1e6
        rows.append(row)
    bad = sum(r["errors"] + r["non_2xx"] for r in rows)
    if bad:
        raise BenchError(f"{path}: {bad} failed requests under load")
    return {
        "connections": connections,
        "requests_per_s": summarize([r["requests_per_s"] for r in rows]),
        "p50_ms": summarize([r["p50_ms"] for r in rows]),
        "p90_ms": summarize([r["p90_ms"] for r in rows]),
        "p99_ms": summarize([r["p99_ms"] for r in rows]),
        "server_cpu_us_per_request": summarize([r["server_cpu_us_per_request"] for r in rows]),
        "tool": rows[0]["tool"],
        "runs": rows,
    }


def run(size: str, *, with_peers: bool | None = None) -> dict[str, Any]:
    """``with_peers`` None: Feast at every size but smoke (its server alone needs ~10 s to start)."""
    check_size("bench_serving", SIZES, size)
    events, users, seconds, runs = SIZES[size]
    work = Path(tempfile.mkdtemp(prefix="bench_serving_"))
    systems: dict[str, Any] = {}
    try:
        config, frame = _history(work, events, users)
        as_of = (config.end_ms // 1000 + 1) * 1000  # the handoff time T: history holds every e < T
        handoff = datetime.fromtimestamp(as_of / 1000, UTC).isoformat()
        data = work / "data"
        streamfeat_cli("apply", "--repo", str(REPO), "--data-dir", str(data), "--shards", "8")
        backfill: tuple[str, ...] = ("backfill", "--repo", str(REPO), "--data-dir", str(data))
        backfill += ("--source", "transactions", "--from", str(work / "history"), "--end", handoff, "--quiet")
        streamfeat_cli(*backfill)
        ours_1 = _bodies(frame, as_of, 1, "ours")
        ours_100 = _bodies(frame, as_of, 100, "ours", count=300)

        port = free_port()
        cmd = [PY, "-m", "cli", "serve", "--repo", str(REPO), "--port", str(port)]
        with server(cmd, "/readyz", port=port, env={"STREAMFEAT_DATA_DIR": str(data)}) as proc:
            _check(
                port,
                "/v1/features/fraud_scoring",
                ours_1[0],
                lambda d: d["features"][0]["amount_count_1d"] is not None,
                "streamfeat fraud_scoring",
            )
            systems["streamfeat"] = {
                "one_entity": _measure(port, "/v1/features/fraud_scoring", ours_1, seconds, runs, pid=proc.pid),
                "hundred_entities": _measure(port, "/v1/features/batch_review", ours_100, seconds, runs, pid=proc.pid),
                # The issue names no concurrency for 100 entities: at 16 connections p99 is
                # mostly queueing behind 15 other requests, so fewer connections are measured too.
                **{
                    f"hundred_entities_c{c}": _measure(
                        port, "/v1/features/batch_review", ours_100, seconds, runs, pid=proc.pid, connections=c
                    )
                    for c in LOW_CONNECTIONS
                },
                "service_one": "fraud_scoring (15 features, 2 views, 2 python on-demand views)",
                "service_hundred": "batch_review (3 features + batch-mode z-score) x 100 users",
            }
            systems["streamfeat"]["peak_rss_mb"] = round(peak_rss_kb(proc.pid) / 1024, 1)
            hot_users = [str(u) for u in frame["user_id"].unique().sort().to_list()[: HOT_USERS[size]]]
            systems["streamfeat"]["client_cache"] = run_child(
                [PY, "-m", "benchmarks.client_cache_child", str(port), str(CLIENT_CALLS[size]), *hot_users], timeout=600
            )

        systems["streamfeat_redis"] = _redis_mode(work, backfill, ours_1, ours_100, seconds, runs)

        port = free_port()
        with server([PY, "-m", "benchmarks.peers.bare_fastapi", str(port)], "/healthz", port=port) as proc:
            systems["fastapi_bare"] = {
                "one_entity": _measure(port, "/v1/features/fraud_scoring", ours_1, seconds, runs, pid=proc.pid),
                "peak_rss_mb": round(peak_rss_kb(proc.pid) / 1024, 1),
            }

        systems["feast"] = _feast(work, frame, as_of, seconds, runs, size, with_peers)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "benchmark": "serving",
        "size": size,
        "events": events,
        "users": users,
        "seconds_per_run": seconds,
        "systems": systems,
        "ratios": _ratios(systems),
        "targets": TARGETS,
    }


def _redis_mode(
    work: Path,
    backfill: tuple[str, ...],
    ours_1: list[bytes],
    ours_100: list[bytes],
    seconds: float,
    runs: int,
) -> dict[str, Any]:
    """The same state and requests with Redis as the online table (`online: redis`, the
    layout for several serving replicas): the backfill run again with Redis finds nothing
    to replay and copies every shard to Redis, then a server reads Redis instead of the
    RocksDB secondaries. 16 connections, as the targets."""
    if shutil.which("redis-server") is None:
        return {"skipped": "redis-server is not installed (`make system-deps` installs it)"}
    with redis_server(work) as url:
        env = {"STREAMFEAT_ONLINE": "redis", "STREAMFEAT_REDIS_URL": url}
        streamfeat_cli(*backfill, env=env)
        port = free_port()
        cmd = [PY, "-m", "cli", "serve", "--repo", str(REPO), "--port", str(port)]
        data = backfill[backfill.index("--data-dir") + 1]
        with server(cmd, "/readyz", port=port, env={**env, "STREAMFEAT_DATA_DIR": data}) as proc:
            _check(
                port,
                "/v1/features/fraud_scoring",
                ours_1[0],
                lambda d: d["features"][0]["amount_count_1d"] is not None,
                "streamfeat over Redis, fraud_scoring",
            )
            out: dict[str, Any] = {
                "one_entity": _measure(port, "/v1/features/fraud_scoring", ours_1, seconds, runs, pid=proc.pid),
                "hundred_entities": _measure(port, "/v1/features/batch_review", ours_100, seconds, runs, pid=proc.pid),
            }
            out["peak_rss_mb"] = round(peak_rss_kb(proc.pid) / 1024, 1)
            return out


def _feast(
    work: Path, frame: pl.DataFrame, as_of: int, seconds: float, runs: int, size: str, with_peers: bool | None
) -> dict[str, Any]:
    if with_peers is False or (with_peers is None and size == "smoke"):
        return {"skipped": f"Feast is not run at size {size} (pass with_peers=True to include it)"}
    try:
        peer = install.ensure("feast")
        feats = work / "feast_features.parquet"
        _feast_features(frame, as_of, feats)
        repo = work / "feast_repo"
        done = subprocess.run(
            [str(peer.python), str(PEER_DIR / "feast_repo.py"), str(repo), str(feats)],
            capture_output=True,
            text=True,
            timeout=1800,
        )
        if done.returncode != 0:
            raise BenchError(f"feast repo setup failed: {done.stderr[-2000:]}")
        setup = orjson.loads(done.stdout.strip().splitlines()[-1])
        port = free_port()
        cmd = [
            str(peer.venv / "bin" / "feast"),
            "-c",
            str(repo),
            "serve",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "--no-access-log",
            "--workers",
            "1",
            "--max-requests",
            "100000000",
        ]
        f1 = _bodies(frame, as_of, 1, "feast")
        f100 = _bodies(frame, as_of, 100, "feast", count=300)
        with server(cmd, "/health", port=port, cwd=repo) as proc:
            _check(
                port,
                "/get-online-features",
                f1[0],
                lambda d: len(d["results"]) >= 8 and d["results"][-1]["values"][0] is not None,
                "feast",
            )
            out = {
                "one_entity": _measure(port, "/get-online-features", f1, seconds, runs, pid=proc.pid),
                "hundred_entities": _measure(port, "/get-online-features", f100, seconds, runs, pid=proc.pid),
                "setup": setup,
                "version": setup["feast_version"],
                "service": "fraud_scoring: 6 user features (SQLite) + python-mode on-demand ratio",
            }
            out["peak_rss_mb"] = round(peak_rss_kb(proc.pid) / 1024, 1)
            return out
    except (BenchError, install.PeerInstallError, subprocess.TimeoutExpired, OSError) as exc:
        return {"error": str(exc)}


def _ratios(systems: dict[str, Any]) -> dict[str, float | None]:
    def med(name: str, scenario: str, key: str = "requests_per_s") -> float | None:
        entry = systems.get(name, {}).get(scenario)
        return float(entry[key]["median"]) if entry else None

    ours, bare, feast = med("streamfeat", "one_entity"), med("fastapi_bare", "one_entity"), med("feast", "one_entity")
    ours100, feast100 = med("streamfeat", "hundred_entities"), med("feast", "hundred_entities")
    return {
        "ratio_vs_bare": round(ours / bare, 3) if ours and bare else None,
        "ratio_vs_feast": round(ours / feast, 3) if ours and feast else None,
        "ratio_vs_feast_hundred": round(ours100 / feast100, 3) if ours100 and feast100 else None,
    }


if __name__ == "__main__":
    print(orjson.dumps(run(sys.argv[1] if len(sys.argv) > 1 else "smoke"), option=orjson.OPT_INDENT_2).decode())
