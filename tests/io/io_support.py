"""Shared builders for the io tests: sources, raw batches and a brute-force watermark oracle."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from engine.io.batches import RawBatch, dlq_topic_for

#: The ``kafka_topic`` fixture: ``kafka_topic(partitions=3) -> topic name``.
TopicFactory = Callable[..., str]

TOPIC = "transactions"
BASE_TS = 1_764_000_000_000  # 2025-11-24, well inside the accepted range
NOW_MS = BASE_TS + 10_000_000

SCHEMA = {
    "user_id": "string",
    "amount": "float",
    "items": "int",
    "card_present": "bool",
    "currency": "string",
}


@dataclass(frozen=True)
class FakeSource:
    """Duck-typed stand-in with the EventSource attributes the io layer reads."""

    name: str = "tx"
    topic: str = TOPIC
    timestamp_field: str = "ts"
    timestamp_format: str = "epoch_millis"
    schema: dict[str, Any] = field(default_factory=lambda: dict(SCHEMA))
    allowed_lateness_ms: int = 0
    max_payload_bytes: int = 65536
    max_future_skew_ms: int = 86_400_000
    watermark_outliers: int = 0
    constraints: dict[str, Any] = field(default_factory=dict)

    @property
    def dlq_topic(self) -> str:
        return dlq_topic_for(self.topic)


def good_event(i: int, ts: int | None = None) -> dict[str, Any]:
    return {
        "user_id": f"u{i % 97}",
        "amount": round(1.5 + (i % 50) * 0.25, 2),
        "items": i % 7 + 1,
        "card_present": i % 3 == 0,
        "currency": "EUR",
        "ts": BASE_TS + i * 10 if ts is None else ts,
    }


def raw_batch(
    values: Sequence[bytes | None],
    *,
    partition: int = 0,
    first_offset: int = 0,
    keys: Sequence[bytes | None] | None = None,
    topic: str = TOPIC,
) -> RawBatch:
    n = len(values)
    return RawBatch(
        topic=topic,
        partition=partition,
        offsets=np.arange(first_offset, first_offset + n, dtype=np.int64),
        keys=list(keys) if keys is not None else [f"k{first_offset + i}".encode() for i in range(n)],
        values=list(values),
    )


def dumps(obj: object) -> bytes:
    return orjson.dumps(obj)


def brute_force_late(event_times: Sequence[int | None], allowed_lateness_ms: int, outliers: int = 0) -> list[bool]:
    """Late flags straight from docs/semantics.md section 5 (None = record invalid for another
    reason): late when below the (outliers + 1)-th largest earlier valid time minus the lateness."""
    late: list[bool] = []
    seen: list[int] = []
    for e in event_times:
        if e is None:
            late.append(False)
            continue
        ranked = sorted(seen, reverse=True)
        late.append(len(ranked) > outliers and e < ranked[outliers] - allowed_lateness_ms)
        seen.append(e)
    return late
