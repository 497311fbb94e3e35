"""Per-stage CPU time of the ingest dataflow, for the ingest benchmark's breakdown.

Wraps the functions each stage runs (poll, decode, route, kernel, state write, log) with a
per-thread CPU clock (``time.thread_time_ns``). Times are exclusive: a stage called inside
another (a RocksDB commit inside the log's offset record, a kernel function inside the
applier) is counted once, in the inner stage. Wrappers run once per batch or per shard
write, not per event, so they cost nothing measurable at 1,000-event batches.

Installed in the benchmark child only (``benchmarks.peers.ours_ingest``); a wrapped name
that no longer exists fails loudly instead of reporting a zero.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any

# stage -> (module, attribute path) of every function whose own CPU time is that stage's.
STAGES: dict[str, tuple[tuple[str, str], ...]] = {
    "poll": (("engine.io.kafka_source", "KafkaBatchPartition.next_batch"),),
    "decode": (("dataflows.stream", "_DecodeStep.__call__"),),
    "route": (("dataflows.stream", "route"),),
    "kernel": (
        ("engine.apply", "_write_views_many"),
        ("engine.apply", "ShardApplier.apply"),  # replay/handoff masks, offset records (backfill)
        ("dataflows.stream", "apply_shards"),  # the same, streaming (a worker's shards together)
    ),
    "state_write": (
        ("engine.state.rocksdb_store", "RocksDBTransaction.get_many"),
        ("engine.state.rocksdb_store", "RocksDBTransaction.put_many"),
        ("engine.state.rocksdb_store", "RocksDBTransaction.put"),
        ("engine.state.rocksdb_store", "RocksDBTransaction.set_offset"),
        ("engine.state.rocksdb_store", "RocksDBTransaction.commit"),
    ),
    "log": (
        ("engine.log_staging", "StagedLogRows.add"),
        ("engine.apply", "ShardApplier.maybe_publish_log"),
        ("engine.apply", "write_cuts"),  # the publisher thread (engine.log_rolls, called by this name)
    ),
}


class StageClock:
    """Exclusive CPU nanoseconds per stage, summed over all threads."""

    def __init__(self) -> None:
        self.ns: dict[str, int] = dict.fromkeys(STAGES, 0)
        self.calls: dict[str, int] = dict.fromkeys(STAGES, 0)
        self._lock = threading.Lock()
        self._local = threading.local()

    def wrap(self, stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        clock = time.thread_time_ns

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            stack: list[int] = self._local.__dict__.setdefault("children", [])
            stack.append(0)
            started = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                spent = clock() - started
                inner = stack.pop()
                if stack:
                    stack[-1] += spent
                with self._lock:
                    self.ns[stage] += spent - inner
                    self.calls[stage] += 1

        return timed

    def install(self) -> None:
        import importlib

        for stage, targets in STAGES.items():
            for module_name, path in targets:
                owner: Any = importlib.import_module(module_name)
                *outer, name = path.split(".")
                for part in outer:
                    owner = getattr(owner, part)
                original = owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name, None)
                if original is None:
                    raise RuntimeError(
                        f"stage profile: {module_name}.{path} no longer exists; update "
                        "benchmarks/stage_profile.py STAGES to where that stage's code lives"
                    )
                setattr(owner, name, self.wrap(stage, original))

    def per_event_us(self, events: int, total_cpu_s: float) -> dict[str, float]:
        """Microseconds of CPU per event for each stage, plus ``other`` (Bytewax, GC, the
        rest) = the process's CPU time minus the stages, and ``total``."""
        out = {stage: ns / 1000 / max(events, 1) for stage, ns in self.ns.items()}
        total_us = total_cpu_s * 1e6 / max(events, 1)
        out["other"] = total_us - sum(out.values())
        out["total"] = total_us
        return {k: round(v, 3) for k, v in out.items()}
