"""The write path's kernel with and without sketch aggregations, side by side.

Same events (users, merchants, amounts as the demo generator draws them), same batches:
aggregate each batch into tiles, merge into the stored records of its entities, apply
retention, encode (what ``ShardApplier`` does per view, without RocksDB and Kafka).
View A has the fraud repo's float64 aggregations of ``amount``; view B adds
count_distinct (B=500) and count_distinct_approx of ``merchant_id`` and p95/median of
``amount``. Reports events/s of each, their ratio (issue 16 target: B costs at most 30%
of ingest, i.e. ratio >= 0.7 measured end to end; this is the kernel's share only) and
state bytes per entity. Not a timed test: a measurement.

    .venv/bin/python -m benchmarks.bench_sketch_kernel [smoke|full]
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np

from benchmarks.common import emit
from engine.kernel.aggregate import aggregate_batch, aggregate_sketches
from engine.kernel.batch_merge import FlatTiles, decode_many, encode_many, merge_flat, retain
from engine.kernel.layout import AggregationSpec, encode_positions
from engine.kernel.view_spec import ViewSpec

SIZES = {"smoke": (50_000, 2_000, 500), "full": (1_000_000, 20_000, 2_000)}  # events, users, batch
MINUTE, HOUR = 60_000, 3_600_000


def _specs() -> tuple[ViewSpec, ViewSpec]:
    plain = (
        AggregationSpec("n_1h", "amount", "count", HOUR),
        AggregationSpec("sum_1h", "amount", "sum", HOUR),
        AggregationSpec("max_1h", "amount", "max", HOUR),
        AggregationSpec("std_1h", "amount", "stddev", HOUR),
    )
    sketches = (
        AggregationSpec("m_cd_1h", "merchant_id", "count_distinct", HOUR, params=(("max_distinct", 500),)),
        AggregationSpec("m_hll_1h", "merchant_id", "count_distinct_approx", HOUR, params=(("precision", 12),)),
        AggregationSpec("p95_1h", "amount", "percentile", HOUR, params=(("alpha", 0.01), ("q", 0.95))),
        AggregationSpec("med_1h", "amount", "median", HOUR, params=(("alpha", 0.01),)),
    )
    return (
        ViewSpec(MINUTE, ("amount",), plain, 2 * HOUR),
        ViewSpec(MINUTE, ("amount", "merchant_id"), plain + sketches, 2 * HOUR),
    )


def _ingest(spec: ViewSpec, events: dict[str, Any], batch: int, users: int) -> tuple[float, int]:
    layout = spec.layout
    records: list[bytes | None] = [None] * users
    n = len(events["ts"])
    started = time.perf_counter()
    for a in range(0, n, batch):
        sl = slice(a, a + batch)
        user = events["user"][sl]
        keys, codes = np.unique(user, return_inverse=True)
        ts = events["ts"][sl]
        pos = encode_positions(np.zeros(len(ts), dtype=np.int64), np.arange(a, a + len(ts)))
        values = np.stack([events["amount"][sl]] + [np.zeros(len(ts))] * (len(spec.columns) - 1), axis=1)
        codes_u, tiles_u, partials = aggregate_batch(layout, codes, ts // MINUTE, ts, pos, values)
        blobs = None
        if layout.sketch_slots:
            raw = {"merchant_id": events["merchant"][sl], "amount": events["amount"][sl]}
            blobs = aggregate_sketches(layout, codes, ts // MINUTE, ts, pos, raw)
        newest = np.full(len(keys), int(ts.max()), dtype=np.int64)
        stored = decode_many(layout, [records[k] for k in keys.tolist()])
        merged = retain(
            merge_flat(layout, stored, FlatTiles(codes_u, tiles_u, partials, newest, blobs)),
            spec.retention_ms,
            spec.interval_ms,
        )
        for k, record in zip(keys.tolist(), encode_many(layout, merged, len(keys)), strict=True):
            records[k] = record
    seconds = time.perf_counter() - started
    return n / seconds, sum(len(r) for r in records if r is not None) // max(1, sum(r is not None for r in records))


def run(size: str = "smoke") -> dict[str, Any]:
    n, users, batch = SIZES[size]
    rng = np.random.default_rng(16)
    events = {
        "user": rng.integers(0, users, n),
        "ts": np.sort(rng.integers(0, 3 * HOUR, n)).astype(np.int64),
        "merchant": np.array([f"merchant_{m:05d}" for m in rng.zipf(1.3, n) % 5_000], dtype=object),
        "amount": np.round(rng.lognormal(3.5, 1.2, n), 2),
    }
    plain, with_sketches = _specs()
    plain_rate, plain_bytes = _ingest(plain, events, batch, users)
    sketch_rate, sketch_bytes = _ingest(with_sketches, events, batch, users)
    return {
        "bench": "sketch_kernel",
        "size": size,
        "events": n,
        "plain_events_per_s": round(plain_rate),
        "sketch_events_per_s": round(sketch_rate),
        "ratio_sketch_vs_plain": round(sketch_rate / plain_rate, 3),
        "plain_state_bytes_per_entity": plain_bytes,
        "sketch_state_bytes_per_entity": sketch_bytes,
    }


if __name__ == "__main__":
    emit(run(sys.argv[1] if len(sys.argv) > 1 else "smoke"))
