"""Child program: the decode limit over the ingest benchmark's own records.

    python -m benchmarks.peers.decode_limit BOOTSTRAP TOPIC EVENTS [BATCH]

Reads the topic once into memory (not timed), cuts it into batches of BATCH records per
partition, then measures CPU microseconds per record, interleaved and repeated, for:

- ``orjson``: one ``orjson.loads`` per record (the floor of per-record parsing);
- ``polars_ndjson``: polars' NDJSON reader over each batch joined by newlines;
- ``pyarrow_json``: pyarrow's JSON reader over the same joined batch;
- ``msgspec``: ``msgspec.json.Decoder().decode_lines`` (untyped) over each joined batch;
- ``streamfeat_decoder``: streamfeat's own ``Decoder.decode`` (typed batch path + schema
  checks + event-time parsing + watermark) on the same batches, outside the dataflow;
- ``streamfeat_decoder_orjson``: the same with ``typed_path=False`` (one orjson parse and
  per-field checks per record: the decoder before the typed path).

Prints {"events", "batch", "us_per_record": {parser: summary}} as JSON.
"""

from __future__ import annotations

import dataclasses
import io
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import orjson
import polars as pl
import pyarrow.json as pa_json
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from benchmarks.common import emit, summarize
from engine.definitions import load_repo
from engine.io.batches import RawBatch
from engine.io.decoder import Decoder
from engine.io.kafka_source import list_topic_partitions
from engine.io.watermarks import PartitionWatermarks

REPO = Path(__file__).resolve().parents[2] / "feature_defs"
REPEATS = 3


def _read_topic(bootstrap: str, topic: str, events: int) -> dict[int, list[Any]]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "decode-limit", "enable.auto.commit": False, "log_level": 0}
    )
    partitions = list_topic_partitions(bootstrap, topic)
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    by_partition: dict[int, list[Any]] = {p: [] for p in partitions}
    seen = 0
    deadline = time.monotonic() + 300
    while seen < events and time.monotonic() < deadline:
        for m in consumer.consume(num_messages=10_000, timeout=1.0):
            partition = m.partition()
            if m.error() is None and partition is not None:
                by_partition[partition].append(m)
                seen += 1
    consumer.close()
    if seen < events:
        raise SystemExit(f"decode_limit: read {seen} of {events} records from {topic}")
    return by_partition


def _batches(by_partition: dict[int, list[Any]], batch: int, topic: str) -> list[RawBatch]:
    out = []
    for partition, messages in by_partition.items():
        for start in range(0, len(messages), batch):
            chunk = messages[start : start + batch]
            out.append(
                RawBatch(
                    topic=topic,
                    partition=partition,
                    offsets=np.array([m.offset() for m in chunk], dtype=np.int64),
                    keys=[m.key() for m in chunk],
                    values=[m.value() for m in chunk],
                )
            )
    return out


def _parsers(batches: list[RawBatch], topic: str) -> dict[str, Callable[[], object]]:
    joined = [b"\n".join(b.values) for b in batches]  # type: ignore[arg-type]
    repo = load_repo(REPO)
    source = dataclasses.replace(repo.source("transactions"), topic=topic)
    # The wall clock as of the newest record: no record counts as "in the future".
    decoder = Decoder(source)
    orjson_decoder = Decoder(source, typed_path=False)

    def ours() -> None:
        marks = PartitionWatermarks()
        for b in batches:
            decoder.decode(b, marks)

    def ours_orjson() -> None:
        marks = PartitionWatermarks()
        for b in batches:
            orjson_decoder.decode(b, marks)

    parsers: dict[str, Callable[[], object]] = {
        "orjson": lambda: [list(map(orjson.loads, b.values)) for b in batches],  # type: ignore[arg-type]
        "polars_ndjson": lambda: [pl.read_ndjson(io.BytesIO(j)) for j in joined],
        "pyarrow_json": lambda: [pa_json.read_json(io.BytesIO(j)) for j in joined],
        "streamfeat_decoder": ours,
        "streamfeat_decoder_orjson": ours_orjson,
    }
    lines = msgspec.json.Decoder().decode_lines  # untyped: dicts, like orjson
    parsers["msgspec"] = lambda: [lines(j) for j in joined]
    return parsers


def main(bootstrap: str, topic: str, events: int, batch: int) -> None:
    batches = _batches(_read_topic(bootstrap, topic, events), batch, topic)
    parsers = _parsers(batches, topic)
    samples: dict[str, list[float]] = {name: [] for name in parsers}
    for _ in range(REPEATS):  # interleaved: every parser sees the same machine load
        for name, parse in parsers.items():
            started = time.process_time()
            parse()
            samples[name].append((time.process_time() - started) * 1e6 / events)
    emit(
        {
            "events": events,
            "batch": batch,
            "us_per_record": {name: summarize(values) for name, values in samples.items()},
        }
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 1000)
