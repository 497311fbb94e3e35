"""Run one `streamfeat` command with timing hooks for `benchmarks.freshness_stages`.

    python -m benchmarks.freshness_hooks flow|serve TRACE_FILE <streamfeat arguments...>

``flow`` wraps the Kafka partition read, the decode step and the shard apply; ``serve``
wraps the online table's catch-up. Each hook appends one JSON line (wall-clock ``t``)
to TRACE_FILE when a batch holds a probe record (a key starting with ``probe-``); catch-ups
are recorded whenever they caught a shard up. The hooks replace methods on the classes
of this process only, so the engine carries no timing code.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson

PROBE_PREFIX = b"probe-"
PROBE_ID_BYTES = len(PROBE_PREFIX) + 10  # benchmarks.freshness_stages names probes "probe-" + 10 hex


class Trace:
    def __init__(self, path: str) -> None:
        self._file = open(path, "ab", buffering=0)  # noqa: SIM115 (open for the process's life)
        self._lock = threading.Lock()

    def emit(self, **fields: object) -> None:
        fields["t"] = time.time()
        with self._lock:
            self._file.write(orjson.dumps(fields) + b"\n")


def probe_ids(keys: Iterable[bytes | None]) -> list[str]:
    """The probe ids among entity or record keys (a probe id may sit inside an entity key)."""
    found = []
    for key in keys:
        at = key.find(PROBE_PREFIX) if key else -1
        if key and at >= 0:
            found.append(key[at : at + PROBE_ID_BYTES].decode(errors="replace"))
    return found


def _replace(cls: object, name: str, make: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    setattr(cls, name, make(getattr(cls, name)))


def hook_flow(trace: Trace) -> None:
    from dataflows import stream
    from engine import apply
    from engine.io import kafka_source

    def read(original: Callable[..., Any]) -> Callable[..., Any]:
        def next_batch(self: kafka_source.KafkaBatchPartition) -> Any:
            batches = original(self)
            for batch in batches:
                if found := probe_ids(batch.keys):
                    trace.emit(ev="read", partition=self.partition, records=len(batch.offsets), probes=found)
            return batches

        return next_batch

    def decode(original: Callable[..., Any]) -> Callable[..., Any]:
        def call(self: Any, raw: Any) -> Any:
            decoded = original(self, raw)
            if found := probe_ids(raw.keys):
                trace.emit(ev="decoded", partition=raw.partition, probes=found)
            return decoded

        return call

    def applied(applier: apply.ShardApplier, batches: list[Any], started: float, cpu_ms: float) -> None:
        per_view = sorted(
            {
                (probe, applier.views[fp].view.name)
                for batch in batches
                for fp, rows in batch.views.items()
                for probe in probe_ids(rows.keys)
            }
        )
        rows = sum(batch.row_count for batch in batches)
        shard = applier.partition.shard
        trace.emit(ev="applied", shard=shard, started=started, cpu_ms=cpu_ms, rows=rows, probes=per_view)

    def commit(original: Callable[..., Any]) -> Callable[..., Any]:
        def apply_batches(self: apply.ShardApplier, batches: Iterable[Any], **options: Any) -> None:
            batches = list(batches)
            started, cpu = time.time(), time.thread_time()
            original(self, batches, **options)
            applied(self, batches, started, (time.thread_time() - cpu) * 1000)

        return apply_batches

    def commit_group(original: Callable[..., Any]) -> Callable[..., Any]:
        # Streaming commits a worker's shards together (engine.apply.apply_shards): every
        # shard's commit is stamped when the group's call returns, with the group's CPU.
        def apply_group(work: Any) -> None:
            work = [(applier, list(batches)) for applier, batches in work]
            started, cpu = time.time(), time.thread_time()
            original(work)
            cpu_ms = (time.thread_time() - cpu) * 1000
            for applier, batches in work:
                applied(applier, batches, started, cpu_ms)

        return apply_group

    _replace(stream, "apply_shards", commit_group)
    _replace(kafka_source.KafkaBatchPartition, "next_batch", read)
    _replace(stream._DecodeStep, "__call__", decode)
    _replace(apply.ShardApplier, "apply", commit)


def hook_serve(trace: Trace) -> None:
    from engine.state import online_rocksdb

    def catch_up(original: Callable[..., Any]) -> Callable[..., Any]:
        def run(self: online_rocksdb.RocksDBOnlineTable) -> None:
            before = list(self._seen_files)
            started = time.time()
            original(self)
            caught = [
                shard for shard, (old, new) in enumerate(zip(before, self._seen_files, strict=True)) if old is not new
            ]
            if caught:
                trace.emit(ev="catch_up", started=started, shards=caught)

        return run

    _replace(online_rocksdb.RocksDBOnlineTable, "catch_up", catch_up)


def main(argv: list[str]) -> int:
    role, trace_path, command = argv[0], argv[1], argv[2:]
    trace = Trace(trace_path)
    if role == "flow":
        hook_flow(trace)
    elif role == "serve":
        hook_serve(trace)
    else:
        raise SystemExit(f"freshness_hooks: role: expected 'flow' or 'serve', got {role!r}")
    from cli import main as streamfeat

    return streamfeat(command)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
