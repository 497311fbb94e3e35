"""CPU of one streaming cycle's shard commits: one apply per shard (each paying the kernel's
fixed cost per call) against one :func:`engine.apply.apply_shards` call for all the shards
(what a streaming worker runs for its group of shards), same process, alternating rounds.

A cycle is what the Kafka source hands over every 20 ms at a given rate: one decoded batch
per source partition (3), routed to the 8 state shards of the example repo's views. The
state is warmed first (the first half of the events, in batches of 1,000), copied for each
round, and every round applies the same cycles; only the applies are timed (CPU time),
routing is not. RocksDB and the Parquet log are real (the log's rolls are not reached).

    .venv/bin/python -m benchmarks.bench_shard_commits [smoke|small] [--rounds=N] [--rates=10000,1000]
    .venv/bin/python -m benchmarks.bench_shard_commits --with-history [--rounds=N] [--cycles=N] [--profile=PATH]

``--with-history`` measures what a state with history costs the write path instead: the
same cycles (one grouped call each, as streaming runs them) applied once onto empty state
and once onto a state holding one day of generated history (the events of `streamfeat
generate`: 172,800 events of 10,000 users, applied in batches of 1,000), the cycles
starting ``HISTORY_GAP_MS`` after its last event, so an entity's first touch trims its
expired tiles and folds those of the lifetime view. Its cycles are the generator's events
of the same users at the rate, or with ``--live=freshness`` the background events of
``bench_freshness`` (10,000 users of their own, so without history, at one event a second
each, 500 of the history's merchants, every event a purchase), after ``FRESHNESS_WARM_S``
of them unmeasured, as in its run at 10k events/s with ``--with-history``.

``--lead-in=S`` applies S seconds of the live events first, unmeasured, so the measured
cycles are not every entity's first touch after the gap (which trims and folds its
expired tiles: with cold parts, engine/view_merge.py, the touches that rewrite them).

``--profile=PATH`` writes a cProfile of one more history run there; ``--only=empty|history``
runs one of the two; ``--states=DIR`` keeps the two warm states in DIR and reuses them when
there (runs under callgrind then count the cycles, not the day of history: the difference
of ``--cycles=N`` and ``--cycles=0``). The malloc environment of docs/deploy.md
(``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``) shows in the page faults per cycle
it reports.
"""

from __future__ import annotations

import cProfile
import resource
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
from engine.generate import DAY_MS, GeneratorConfig, generate
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
HISTORY = GeneratorConfig(events=172_800, users=10_000, merchants=1_000, seed=0, rate=2.0)  # `streamfeat generate`
HISTORY_GAP_MS = 10 * 60_000  # catching up, then live: past the lifetime view's 6-minute retention
FRESHNESS_WARM_S = 10  # bench_freshness's background events applied before the measured cycles


def _views() -> tuple[Any, ...]:  # Any: the repo's StreamFeatureView objects, passed through
    repo = load_repo(ROOT / "feature_defs")
    return tuple(repo.views_for_source(TOPIC))


def _batches(columns: dict[str, Any], lo: int, hi: int, per_batch: int, first_offset: int = 0) -> list[DecodedBatch]:
    """Events ``lo .. hi`` as decoded batches of ``per_batch`` events, partitions in turn
    (offsets per partition follow on from ``first_offset``)."""
    out = []
    next_offset = dict.fromkeys(range(PARTITIONS), first_offset)
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


def _warm(warm: Path, work: Path, views: tuple[Any, ...], batches: Sequence[DecodedBatch]) -> None:
    """Apply ``batches`` (one grouped call each) to a new state at ``warm``."""
    store, appliers = _open(warm, views, work / f"log-{warm.name}")
    try:
        for per_shard in (_routed([b], views) for b in batches):
            apply_shards(list(zip(appliers, per_shard, strict=True)))
    finally:
        for applier in appliers:
            applier.close()
        store.close()


def _run_mode(
    mode: str,
    warm: Path,
    work: Path,
    views: tuple[Any, ...],
    cycles: list[list[list[ShardBatch]]],
    profile: cProfile.Profile | None = None,
    faults: list[int] | None = None,
) -> float:
    """CPU seconds of every cycle's applies in ``mode`` (state copied from ``warm``);
    the process's minor page faults during them are appended to ``faults``."""
    state = work / f"state-{mode}"
    shutil.rmtree(state, ignore_errors=True)
    shutil.copytree(warm, state)
    store, appliers = _open(state, views, work / f"log-{mode}")
    try:
        if profile is not None:
            profile.enable()
        faulted = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        started = time.process_time()
        for per_shard in cycles:
            if mode == "per_shard":
                for applier, items in zip(appliers, per_shard, strict=True):
                    applier.apply(items)
            else:
                apply_shards(list(zip(appliers, per_shard, strict=True)))
        spent = time.process_time() - started
        if faults is not None:
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faulted)
        if profile is not None:
            profile.disable()
        return spent
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
        _warm(warm, work, views, _batches(columns, 0, half, 1_000))
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


def _freshness_events(events: int, start_ms: int, rate: int) -> dict[str, Any]:
    """Columns of ``bench_freshness``'s background events (its ``_event``), ``rate`` a second."""
    i = np.arange(events)
    users = np.array([f"bg{u:05d}" for u in range(10_000)], dtype=object)[i % 10_000]
    return {
        "user_id": users,
        "merchant_id": np.array([f"m{m:04d}" for m in range(500)], dtype=object)[i % 500],
        "card_id": users + "-c0",
        "event_type": np.full(events, "PURCHASE", dtype=object),
        "amount": np.full(events, 12.5),
        "ts": start_ms + i * 1000 // rate,
    }


def run_with_history(
    rounds: int = 3,
    rate: int = 10_000,
    cycles: int = MEASURED_CYCLES,
    profile_path: str | None = None,
    live: str = "generator",
    states_dir: str | None = None,
    only: str | None = None,
    lead_in_s: int = 0,
) -> dict[str, Any]:
    """CPU per cycle of the same cycles onto empty state and onto a day of history,
    alternating rounds (one grouped call per cycle); ``lead_in_s`` seconds of the same
    live events are applied first, unmeasured (``FRESHNESS_WARM_S`` by default for
    ``freshness``)."""
    views = _views()
    per_batch = max(1, round(rate * CYCLE_S / PARTITIONS))
    measured = per_batch * PARTITIONS * cycles
    start_ms = HISTORY.end_ms + HISTORY_GAP_MS
    warm_events = lead_in_s * rate
    if live == "freshness":
        warm_events = (lead_in_s or FRESHNESS_WARM_S) * rate
        columns = _freshness_events(warm_events + measured, start_ms, rate)
    else:
        config = GeneratorConfig(
            events=warm_events + measured,
            users=HISTORY.users,
            merchants=HISTORY.merchants,
            seed=1,
            start_ms=start_ms,
            rate=float(rate),
        )
        columns = generate(config).columns
    lead_in = _batches(columns, 0, warm_events, 1_000, first_offset=HISTORY.events)
    batches = _batches(columns, warm_events, warm_events + measured, per_batch, first_offset=HISTORY.events)
    routed = [_routed(batches[i : i + PARTITIONS], views) for i in range(0, len(batches), PARTITIONS)]
    out: dict[str, Any] = {
        "bench": "shard_commits_with_history",
        "live": live,
        "shards": SHARDS,
        "partitions": PARTITIONS,
        "history_events": HISTORY.events,
        "history_days": round((HISTORY.end_ms - HISTORY.start_ms) / DAY_MS, 3),
        "gap_ms": HISTORY_GAP_MS,
        "rate": rate,
        "events_per_cycle": per_batch * PARTITIONS,
        "cycles": len(routed),
        "lead_in_events": warm_events,
    }
    with tempfile.TemporaryDirectory(prefix="bench-shard-commits-") as tmp:
        work = Path(tmp)
        kept = Path(states_dir) if states_dir else work
        tag = f"{live}-{rate}" + (f"-lead{lead_in_s}" if lead_in_s else "")
        states = {"empty": kept / f"warm-empty-{tag}", "history": kept / f"warm-history-{tag}"}
        if not states["history"].exists():
            _warm(states["empty"], work, views, lead_in)
            started = time.process_time()
            history = _batches(generate(HISTORY).columns, 0, HISTORY.events, 1_000)
            _warm(states["history"], work, views, history + lead_in)
            out["history_apply_cpu_s"] = round(time.process_time() - started, 2)
        seconds: dict[str, list[float]] = {name: [] for name in states}
        faults: dict[str, list[int]] = {name: [] for name in states}
        for _ in range(rounds):
            for name, warm in states.items():
                if only not in (None, name):
                    continue
                seconds[name].append(_run_mode("grouped", warm, work, views, routed, faults=faults[name]))
        ms = {name: [round(1e3 * s / max(len(routed), 1), 3) for s in runs] for name, runs in seconds.items()}
        out["cpu_ms_per_cycle_runs"] = ms
        out["cpu_ms_per_cycle_median"] = {name: float(np.median(v)) for name, v in ms.items() if v}
        out["minor_faults_per_cycle_runs"] = {n: [round(f / max(len(routed), 1)) for f in v] for n, v in faults.items()}
        if profile_path is not None:
            profile = cProfile.Profile()
            _run_mode("grouped", states["history"], work, views, routed, profile)
            profile.dump_stats(profile_path)
    return out


def _flag(argv: Sequence[str], name: str, default: str) -> str:
    return next((a.split("=", 1)[1] for a in argv if a.startswith(f"--{name}=")), default)


def _main(argv: Sequence[str]) -> None:
    rounds = int(_flag(argv, "rounds", "3"))
    if "--with-history" in argv:
        cycles = int(_flag(argv, "cycles", str(MEASURED_CYCLES)))
        rate = int(_flag(argv, "rates", "10000"))
        live = _flag(argv, "live", "generator")
        profile, states = _flag(argv, "profile", "") or None, _flag(argv, "states", "") or None
        only, lead_in = _flag(argv, "only", "") or None, int(_flag(argv, "lead-in", "0"))
        emit(run_with_history(rounds, rate, cycles, profile, live, states, only, lead_in))
        return
    size = next((a for a in argv if a in SIZES), "smoke")
    rates = _flag(argv, "rates", "10000,1000")
    emit(run(size, rounds, [int(r) for r in rates.split(",")]))


if __name__ == "__main__":
    _main(sys.argv[1:])
