"""Deterministic demo events for the fraud domain (``streamfeat generate``): the events
(``events``), produced to Kafka (``produce``) or written as Parquet history (``parquet``)."""

from engine.generate.events import (
    CARDS_PER_USER,
    CHUNK_SIZE,
    CURRENCIES,
    DAY_MS,
    DEFAULT_START_MS,
    EVENT_TYPES,
    EXPECTED_DLQ_REASON,
    FIELDS,
    MALFORMED_KINDS,
    EventBatch,
    EventGenerator,
    GeneratorConfig,
    MalformedKind,
    generate,
)
from engine.generate.parquet import PARQUET_SCHEMA, ParquetReport, day_partition, write_parquet
from engine.generate.produce import DEFAULT_PRODUCER_CONFIG, ProduceReport, produce_events, produce_live

__all__ = [
    "CARDS_PER_USER",
    "CHUNK_SIZE",
    "CURRENCIES",
    "DAY_MS",
    "DEFAULT_PRODUCER_CONFIG",
    "DEFAULT_START_MS",
    "EVENT_TYPES",
    "EXPECTED_DLQ_REASON",
    "FIELDS",
    "MALFORMED_KINDS",
    "PARQUET_SCHEMA",
    "EventBatch",
    "EventGenerator",
    "GeneratorConfig",
    "MalformedKind",
    "ParquetReport",
    "ProduceReport",
    "day_partition",
    "generate",
    "produce_events",
    "produce_live",
    "write_parquet",
]
