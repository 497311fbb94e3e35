"""CPU of one streaming cycle's shard commits: one apply per shard (each paying the kernel's
fixed cost per call) against one :func:`engine.apply.apply_shards` call for all the shards
(what a streaming worker runs for its group of shards), same process, alternating rounds.

A cycle is what the Kafka source hands over every 20 ms at a given rate: one decoded batch
per source partition (3), routed to the 8 state shards of the example repo's views. The
state is warmed first (the first half of the events, in batches of 1,000), copied for each
round, and every round applies the same cycles; only the applies are timed (CPU time),
routing is not. RocksDB and the Parquet log are real (the log's rolls are not reached).

    .venv/bin/python -m benchmarks.bench_shard_commits [smoke|small] [--rounds=N] [--rates=10000,1000]
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import emit
from engine.apply import ShardApplier, apply_shards
from engine.definitions.repo import load_repo
from engine.generate import GeneratorConfig, generate
from engine.io.batches import DecodedBatch
from engine.routing import ShardBatch, route
from engine.state.rocksdb_store import RocksDBStore

SIZES = {"smoke": (20_000, 2_000), "small": (200_000, 20_000)}  # events, users
SHARDS = 8
PARTITIONS = 3
CYCLE_S = 0.02  # the Kafka source's grid (engine/io/kafka_source.py)
MEASURED_CYCLES = 150
ROOT = Path(__file__).resolve().parent.parent
TOPIC = "transactions"


def _views() -> tuple[Any, ...]:  # Any: the repo's StreamFeatureView objects, passed through
    repo = load_repo(ROOT / "feature_defs")
    return tuple(repo.views_for_source(TOPIC))


def _batches(columns: dict[str, Any], lo: int, hi: int, per_batch: int) -> list[DecodedBatch]:
    """Events ``lo .. hi`` as decoded batches of ``per_batch`` events, partitions in turn
    (offsets per partition follow on)."""
    out = []
    next_offset = dict.fromkeys(range(PARTITIONS), 0)
    for i, start in enumerate(range(0, hi, per_batch)):
        partition = i % PARTITIONS
        stop = min(start + per_batch, hi)
        n = stop - start
        first = next_offset[partition]
        next_offset[partition] += n
        if stop <= lo:
            continue
        ts = np.asarray(columns["ts"][start:stop], dtype=np.int64)
        out.append(
            DecodedBatch(
                topic=TOPIC,
                partition=partition,
                first_offset=first,
                last_offset=first + n - 1,
                top_ts_after=(int(ts.max()),),
                offsets=np.arange(first, first + n, dtype=np.int64),
                event_ts=ts,
                columns={
                    c: np.asarray(columns[c][start:stop], dtype=object)
                    for c in ("user_id", "merchant_id", "card_id", "event_type")
                }
                | {"amount": np.asarray(columns["amount"][start:stop], dtype=np.float64)},
                dead_letters=(),
            )
        )
    return out


def _routed(batches: Sequence[DecodedBatch], views: tuple[Any, ...]) -> list[list[ShardBatch]]:
    """Per shard, its items of ``batches`` in order."""
    per_shard: list[list[ShardBatch]] = [[] for _ in range(SHARDS)]
    for batch in batches:
        for _, item in route(batch, views, SHARDS):
            per_shard[item.shard].append(item)
    return per_shard


def _open(state: Path, views: tuple[Any, ...], log: Path) -> tuple[RocksDBStore, list[ShardApplier]]:
    store = RocksDBStore(state, SHARDS)
    appliers = [ShardApplier(store.partition(s), views, TOPIC, log_root=str(log)) for s in range(SHARDS)]
    return store, appliers


def _run_mode(mode: str, warm: Path, work: Path, views: tuple[Any, ...], cycles: list[list[list[ShardBatch]]]) -> float:
    """CPU seconds of every cycle's applies in ``mode`` (state copied from ``warm``)."""
    state = work / f"state-{mode}"
    shutil.rmtree(state, ignore_errors=True)
    shutil.copytree(warm, state)
    store, appliers = _open(state, views, work / f"log-{mode}")
    try:
        started = time.process_time()
        for per_shard in cycles:
            if mode == "per_shard":
                for applier, items in zip(appliers, per_shard, strict=True):
                    applier.apply(items)
            else:
                apply_shards(list(zip(appliers, per_shard, strict=True)))
        return time.process_time() - started
    finally:
        store.close()
        shutil.rmtree(state, ignore_errors=True)


def run(size: str = "small", rounds: int = 3, rates: Sequence[int] = (10_000, 1_000)) -> dict[str, Any]:
    n, users = SIZES[size]
    columns = generate(GeneratorConfig(events=n, users=users, merchants=1_000, seed=7, rate=200.0)).columns
    views = _views()
    half = n // 2
    out: dict[str, Any] = {"bench": "shard_commits", "size": size, "shards": SHARDS, "partitions": PARTITIONS}
    with tempfile.TemporaryDirectory(prefix="bench-shard-commits-") as tmp:
        work = Path(tmp)
        warm = work / "warm"
        store, appliers = _open(warm, views, work / "log-warm")
        try:
            for per_shard in (_routed([b], views) for b in _batches(columns, 0, half, 1_000)):
                apply_shards(list(zip(appliers, per_shard, strict=True)))
        finally:
            for applier in appliers:
                applier.close()
            store.close()
        for rate in rates:
            per_batch = max(1, round(rate * CYCLE_S / PARTITIONS))
            count = min(MEASURED_CYCLES, (n - half) // (per_batch * PARTITIONS))
            batches = _batches(columns, half, half + per_batch * PARTITIONS * count, per_batch)
            cycles = [_routed(batches[i : i + PARTITIONS], views) for i in range(0, len(batches), PARTITIONS)]
            seconds: dict[str, list[float]] = {"per_shard": [], "grouped": []}
            for _ in range(rounds):
                for mode in seconds:
                    seconds[mode].append(_run_mode(mode, warm, work, views, cycles))
            ms = {m: [round(1e3 * s / len(cycles), 3) for s in runs] for m, runs in seconds.items()}
            out[str(rate)] = {
                "events_per_cycle": per_batch * PARTITIONS,
                "events_per_shard_commit": round(per_batch * PARTITIONS / SHARDS, 1),
                "cycles": len(cycles),
                "cpu_ms_per_cycle_runs": ms,
                "cpu_ms_per_cycle_median": {m: float(np.median(v)) for m, v in ms.items()},
                "speedup_runs": [round(a / b, 3) for a, b in zip(ms["per_shard"], ms["grouped"], strict=True)],
                "speedup_median": round(
                    float(np.median([a / b for a, b in zip(ms["per_shard"], ms["grouped"], strict=True)])), 3
                ),
            }
    return out


def _main(argv: Sequence[str]) -> None:
    size = next((a for a in argv if a in SIZES), "smoke")
    rounds = int(next((a.split("=", 1)[1] for a in argv if a.startswith("--rounds=")), "3"))
    rates = next((a.split("=", 1)[1] for a in argv if a.startswith("--rates=")), "10000,1000")
    emit(run(size, rounds, [int(r) for r in rates.split(",")]))


if __name__ == "__main__":
    _main(sys.argv[1:])
