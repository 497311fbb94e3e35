"""Deterministic demo events for the fraud domain (``streamfeat generate``).

Each event is a JSON object::

    {"transaction_id": "t7-000000042", "user_id": "u000123", "merchant_id": "m0042",
     "card_id": "u000123-c1", "amount": 12.34, "currency": "USD",
     "event_type": "PURCHASE", "ts": 1767225600000}

Determinism: events are generated in fixed chunks of :data:`CHUNK_SIZE`; chunk ``c``
draws from ``numpy.random.default_rng([seed, c])``, and every random draw is made
whatever the options, so the same seed gives the same bytes (and the same users,
merchants and amounts whether or not jitter or malformed records are asked for).

Time: event ``i`` happens at ``start_ms + floor(i * 1000 / rate)``; with
``jitter_ms = J`` its timestamp moves back by a uniform 0..J ms, as if it arrived
late. Every event is then at most ``J`` ms behind the newest one before it, so a
source with ``allowed_lateness >= J`` sees no late event.

Malformed records (``malformed_fraction``) replace the value of a random subset of
events with one of :class:`MalformedKind`; :attr:`EventBatch.malformed` tells which
record is malformed and how (``-1`` = valid, else the kind's index), and
:data:`EXPECTED_DLQ_REASON` gives the dead-letter reason the decoder must assign.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from confluent_kafka import KafkaError, Message, Producer

from engine.clock import wall_clock_ms
from engine.exceptions import ConfigError, GenerateError
from engine.kafka_local import require_broker

CHUNK_SIZE = 65_536
DAY_MS = 86_400_000
DEFAULT_START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
FIELDS: tuple[str, ...] = (
    "transaction_id",
    "user_id",
    "merchant_id",
    "card_id",
    "amount",
    "currency",
    "event_type",
    "ts",
)
EVENT_TYPES: tuple[str, ...] = ("PURCHASE", "REFUND", "LOGIN")
_EVENT_TYPE_WEIGHTS = (0.80, 0.05, 0.15)
CURRENCIES: tuple[str, ...] = ("USD", "EUR", "GBP")
_CURRENCY_WEIGHTS = (0.70, 0.20, 0.10)
CARDS_PER_USER = 3
_LOGIN = EVENT_TYPES.index("LOGIN")

PARQUET_SCHEMA = pa.schema(
    [
        pa.field("transaction_id", pa.string(), nullable=False),
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("merchant_id", pa.string(), nullable=False),
        pa.field("card_id", pa.string(), nullable=False),
        pa.field("amount", pa.float64(), nullable=False),
        pa.field("currency", pa.string(), nullable=False),
        pa.field("event_type", pa.string(), nullable=False),
        pa.field("ts", pa.int64(), nullable=False),
    ]
)


class MalformedKind(StrEnum):
    """How a malformed record is broken (index in this order = code in ``EventBatch.malformed``)."""

    INVALID_JSON = "invalid_json"  # the valid document cut in half
    MISSING_FIELD = "missing_field"  # one of FIELDS removed
    WRONG_TYPE = "wrong_type"  # amount as a string, or user_id as a number
    TIMESTAMP_NOT_NUMERIC = "timestamp_not_numeric"  # ts is a non-numeric string
    TIMESTAMP_NEGATIVE = "timestamp_negative"  # ts below zero

    @property
    def code(self) -> int:
        return _KIND_CODES[self]


MALFORMED_KINDS: tuple[MalformedKind, ...] = tuple(MalformedKind)
_KIND_CODES = {kind: i for i, kind in enumerate(MALFORMED_KINDS)}

# The dead-letter reason (docs/semantics.md section 5) each kind must end up with.
EXPECTED_DLQ_REASON: Mapping[MalformedKind, str] = {
    MalformedKind.INVALID_JSON: "invalid_json",
    MalformedKind.MISSING_FIELD: "missing_field",
    MalformedKind.WRONG_TYPE: "wrong_type",
    MalformedKind.TIMESTAMP_NOT_NUMERIC: "invalid_timestamp",
    MalformedKind.TIMESTAMP_NEGATIVE: "timestamp_out_of_range",
}


@dataclass(frozen=True)
class GeneratorConfig:
    """What to generate. Same values -> same bytes."""

    events: int
    users: int = 10_000
    merchants: int = 1_000
    seed: int = 0
    start_ms: int = DEFAULT_START_MS
    rate: float = 1_000.0  # events per second of event time
    jitter_ms: int = 0
    malformed_fraction: float = 0.0
    user_skew: float = 1.1  # Zipf exponent over users
    merchant_skew: float = 1.2  # Zipf exponent over merchants

    def __post_init__(self) -> None:
        for name in ("events", "users", "merchants", "seed", "start_ms", "jitter_ms"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise TypeError(f"GeneratorConfig.{name}: expected an int, got {type(value).__name__}")
        minimums = {"events": 0, "users": 1, "merchants": 1, "seed": 0, "start_ms": 0, "jitter_ms": 0}
        for name, lowest in minimums.items():
            if getattr(self, name) < lowest:
                raise ValueError(f"GeneratorConfig.{name}: expected >= {lowest}, got {getattr(self, name)}")
        if not math.isfinite(self.rate) or self.rate <= 0:
            raise ValueError(f"GeneratorConfig.rate: expected events/s > 0, got {self.rate}")
        if not 0.0 <= self.malformed_fraction <= 1.0:
            raise ValueError(f"GeneratorConfig.malformed_fraction: expected 0..1, got {self.malformed_fraction}")
        for name in ("user_skew", "merchant_skew"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"GeneratorConfig.{name}: expected a Zipf exponent >= 0, got {value}")

    @property
    def chunks(self) -> int:
        return -(-self.events // CHUNK_SIZE)

    @property
    def end_ms(self) -> int:
        """Event time of the last event before jitter."""
        return self.start_ms + math.floor(max(self.events - 1, 0) * 1000 / self.rate)


@dataclass(frozen=True)
class EventBatch:
    """Events ``start_index .. start_index + len - 1``: Kafka records and typed columns.

    For malformed records the columns still hold the values the event had before it
    was broken; only ``values`` differs.
    """

    start_index: int
    keys: list[bytes]
    values: list[bytes]
    malformed: npt.NDArray[np.int8]  # -1 valid, else MalformedKind code
    columns: dict[str, Any] = field(repr=False)  # str fields: lists; amount/ts: numpy arrays

    def __len__(self) -> int:
        return len(self.values)

    @property
    def ts(self) -> npt.NDArray[np.int64]:
        ts: npt.NDArray[np.int64] = self.columns["ts"]
        return ts

    def malformed_kinds(self) -> list[MalformedKind | None]:
        return [None if code < 0 else MALFORMED_KINDS[code] for code in self.malformed.tolist()]


def _zipf_cdf(n: int, skew: float) -> npt.NDArray[np.float64]:
    weights = np.arange(1, n + 1, dtype=np.float64) ** -skew
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    return cdf


def _cdf(weights: tuple[float, ...]) -> npt.NDArray[np.float64]:
    cdf: npt.NDArray[np.float64] = np.cumsum(np.asarray(weights, dtype=np.float64))
    cdf /= cdf[-1]
    return cdf


def _sample(cdf: npt.NDArray[np.float64], uniform: npt.NDArray[np.float64]) -> npt.NDArray[np.intp]:
    # Inverse-CDF sampling; the clip guards the last bin against rounding of cdf[-1].
    return np.minimum(np.searchsorted(cdf, uniform, side="right"), len(cdf) - 1)


class _Tables:
    """Per-config lookup tables: id strings and sampling CDFs, built once."""

    def __init__(self, config: GeneratorConfig) -> None:
        width = max(6, len(str(config.users - 1)))
        mwidth = max(4, len(str(config.merchants - 1)))
        users = [f"u{i:0{width}d}" for i in range(config.users)]
        self.user_ids = np.array(users, dtype=object)
        self.user_keys = np.array([u.encode() for u in users], dtype=object)
        self.card_ids = np.array([[f"{u}-c{k}" for k in range(CARDS_PER_USER)] for u in users], dtype=object)
        self.merchant_ids = np.array([f"m{i:0{mwidth}d}" for i in range(config.merchants)], dtype=object)
        self.user_cdf = _zipf_cdf(config.users, config.user_skew)
        self.merchant_cdf = _zipf_cdf(config.merchants, config.merchant_skew)
        self.event_type_cdf = _cdf(_EVENT_TYPE_WEIGHTS)
        self.currency_cdf = _cdf(_CURRENCY_WEIGHTS)
        self.event_types = np.array(EVENT_TYPES, dtype=object)
        self.currencies = np.array(CURRENCIES, dtype=object)


class EventGenerator:
    """Generates a config's events chunk by chunk (memory stays bounded)."""

    def __init__(self, config: GeneratorConfig) -> None:
        self.config = config

    @cached_property
    def _tables(self) -> _Tables:
        return _Tables(self.config)

    def chunk(self, index: int) -> EventBatch:
        cfg, tables = self.config, self._tables
        if not 0 <= index < cfg.chunks:
            raise IndexError(f"chunk {index} out of range 0..{cfg.chunks - 1}")
        lo = index * CHUNK_SIZE
        n = min(CHUNK_SIZE, cfg.events - lo)
        rng = np.random.default_rng([cfg.seed, index])
        # Every draw happens regardless of options (see module docstring).
        user = _sample(tables.user_cdf, rng.random(n))
        merchant = _sample(tables.merchant_cdf, rng.random(n))
        card = rng.integers(0, CARDS_PER_USER, n)
        event_type = _sample(tables.event_type_cdf, rng.random(n))
        currency = _sample(tables.currency_cdf, rng.random(n))
        amount = np.round(rng.lognormal(3.5, 1.0, n), 2)
        jitter = rng.integers(0, cfg.jitter_ms + 1, n, dtype=np.int64)
        broken = rng.random(n) < cfg.malformed_fraction
        kind = rng.integers(0, len(MALFORMED_KINDS), n).astype(np.int8)
        variant = rng.integers(0, len(FIELDS), n)

        amount[event_type == _LOGIN] = 0.0
        seq = np.arange(lo, lo + n, dtype=np.int64)
        ts = cfg.start_ms + np.floor(seq * (1000.0 / cfg.rate)).astype(np.int64) - jitter
        malformed = np.where(broken, kind, np.int8(-1)).astype(np.int8)

        columns: dict[str, Any] = {
            # map over a bound str.__mod__: no Python frame per id (about 40% faster).
            "transaction_id": list(map(f"t{cfg.seed}-%09d".__mod__, range(lo, lo + n))),
            "user_id": tables.user_ids[user].tolist(),
            "merchant_id": tables.merchant_ids[merchant].tolist(),
            "card_id": tables.card_ids[user, card].tolist(),
            "amount": amount,
            "currency": tables.currencies[currency].tolist(),
            "event_type": tables.event_types[event_type].tolist(),
            "ts": ts,
        }
        records = [
            {
                "transaction_id": t,
                "user_id": u,
                "merchant_id": m,
                "card_id": c,
                "amount": a,
                "currency": cu,
                "event_type": e,
                "ts": s,
            }
            for t, u, m, c, a, cu, e, s in zip(
                columns["transaction_id"],
                columns["user_id"],
                columns["merchant_id"],
                columns["card_id"],
                amount.tolist(),
                columns["currency"],
                columns["event_type"],
                ts.tolist(),
                strict=True,
            )
        ]
        values = _dumps_each(records)
        for i in np.flatnonzero(broken).tolist():
            values[i] = _break(values[i], MALFORMED_KINDS[kind[i]], int(variant[i]))
        keys: list[bytes] = tables.user_keys[user].tolist()
        return EventBatch(start_index=lo, keys=keys, values=values, malformed=malformed, columns=columns)

    def __iter__(self) -> Iterator[EventBatch]:
        for index in range(self.config.chunks):
            yield self.chunk(index)


def _dumps_each(records: list[dict[str, Any]]) -> list[bytes]:
    """``[orjson.dumps(r) for r in records]``, byte for byte, about five times faster.

    One orjson call per record allocates a 1 KiB buffer per call outside Python's
    small-object allocator, which dominated generation time. Dumping the list once
    and splitting between objects is exact because no generated string can contain
    ``},{`` (ids, currencies and event types use a fixed alphabet) and compact JSON
    never contains a raw newline.
    """
    if not records:
        return []
    joined = orjson.dumps(records)[1:-1]
    return joined.replace(b"},{", b"}\n{").split(b"\n")


def _break(value: bytes, kind: MalformedKind, variant: int) -> bytes:
    if kind is MalformedKind.INVALID_JSON:
        return value[: len(value) // 2]  # half an object never balances its braces
    record = orjson.loads(value)
    if kind is MalformedKind.MISSING_FIELD:
        del record[FIELDS[variant]]
    elif kind is MalformedKind.WRONG_TYPE:
        if variant % 2 == 0:
            record["amount"] = str(record["amount"])
        else:
            record["user_id"] = int(record["user_id"][1:])
    elif kind is MalformedKind.TIMESTAMP_NOT_NUMERIC:
        record["ts"] = "not-a-time"
    else:
        record["ts"] = -max(int(record["ts"]), 1)
    return orjson.dumps(record)


def generate(config: GeneratorConfig) -> EventBatch:
    """All events of ``config`` as one batch (fine up to a few million events)."""
    batches = list(EventGenerator(config))
    if not batches:
        return EventBatch(0, [], [], np.empty(0, np.int8), _empty_columns())
    if len(batches) == 1:
        return batches[0]
    columns: dict[str, Any] = {}
    for name in FIELDS:
        parts = [b.columns[name] for b in batches]
        columns[name] = np.concatenate(parts) if name in ("amount", "ts") else [x for p in parts for x in p]
    return EventBatch(
        start_index=0,
        keys=[k for b in batches for k in b.keys],
        values=[v for b in batches for v in b.values],
        malformed=np.concatenate([b.malformed for b in batches]),
        columns=columns,
    )


def _empty_columns() -> dict[str, Any]:
    return {
        name: (np.empty(0, np.float64) if name == "amount" else np.empty(0, np.int64) if name == "ts" else [])
        for name in FIELDS
    }


# ------------------------------------------------------------------- Kafka


@dataclass(frozen=True)
class ProduceReport:
    topic: str
    events: int
    malformed: int
    seconds: float

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("inf")


DEFAULT_PRODUCER_CONFIG: Mapping[str, Any] = {
    "linger.ms": 20,
    "batch.size": 1_000_000,
    "batch.num.messages": 100_000,
    "queue.buffering.max.messages": 1_000_000,
    "queue.buffering.max.kbytes": 1_048_576,
    "compression.type": "lz4",
    "acks": "all",
    # Retries must not duplicate records: the round-trip tests count every one.
    "enable.idempotence": True,
    # Same key -> partition mapping as the Java client.
    "partitioner": "murmur2_random",
    # Only failures reach Python (one callback per success would cost a third of
    # the throughput); flush() returning 0 proves every report was served.
    "delivery.report.only.error": True,
    # A broker that dies mid-run turns into delivery errors after this, not a hang.
    "message.timeout.ms": 30_000,
}


class _DeliveryFailures:
    def __init__(self) -> None:
        self.count = 0
        self.first: str | None = None

    def __call__(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self.count += 1
            if self.first is None:
                self.first = f"{error} (partition {message.partition()})"


def produce_events(
    config: GeneratorConfig,
    topic: str,
    bootstrap: str,
    *,
    producer_config: Mapping[str, Any] | None = None,
    flush_timeout_s: float = 60.0,
) -> ProduceReport:
    """Generate ``config``'s events and produce them to ``topic`` keyed by user_id.

    Raises :class:`GenerateError` naming the count if any record was not delivered.
    """
    producer, failures = _producer(topic, bootstrap, producer_config)
    started = time.perf_counter()
    malformed = sum(_produce_batch(producer, topic, batch) for batch in EventGenerator(config))
    _flush(producer, failures, topic, bootstrap, config.events, flush_timeout_s)
    seconds = time.perf_counter() - started
    return ProduceReport(topic=topic, events=config.events, malformed=malformed, seconds=seconds)


def produce_live(
    config: GeneratorConfig,
    topic: str,
    bootstrap: str,
    *,
    duration_s: float | None = None,
    progress: Callable[[ProduceReport], None] | None = None,
) -> ProduceReport:
    """Produce ``config.rate`` events per wall-clock second, stamped with the current time.

    Runs for ``duration_s`` seconds (``None``: until interrupted, Ctrl-C ends it cleanly
    after delivering what was produced). Second ``k`` draws its events from seed
    ``config.seed + k``; ``config.events`` is ignored. ``progress`` gets the running
    totals about every ten seconds.
    """
    if config.rate < 1:
        raise GenerateError(f"--rate: live mode needs at least 1 event/s, got {config.rate}")
    producer, failures = _producer(topic, bootstrap, None)
    per_second = round(config.rate)
    started = time.perf_counter()
    produced = malformed = 0
    second = 0
    try:
        while duration_s is None or second < duration_s:
            tick_ms = wall_clock_ms()
            live = dataclasses.replace(
                config,
                events=per_second,
                seed=config.seed + second,
                start_ms=tick_ms,
                rate=float(per_second),
            )
            malformed += sum(_produce_batch(producer, topic, batch) for batch in EventGenerator(live))
            produced += per_second
            second += 1
            if progress is not None and second % 10 == 0:
                progress(ProduceReport(topic, produced, malformed, time.perf_counter() - started))
            time.sleep(max(0.0, 1.0 - (wall_clock_ms() - tick_ms) / 1000))
    except KeyboardInterrupt:
        pass  # a normal way to stop live mode: deliver what was produced, then report
    _flush(producer, failures, topic, bootstrap, produced, 60.0)
    return ProduceReport(topic, produced, malformed, time.perf_counter() - started)


def _producer(
    topic: str, bootstrap: str, producer_config: Mapping[str, Any] | None
) -> tuple[Producer, _DeliveryFailures]:
    require_broker(bootstrap, consequence=f"nothing was produced to {topic!r}")
    failures = _DeliveryFailures()
    settings = {**DEFAULT_PRODUCER_CONFIG, **(producer_config or {})}
    # log_level 0: librdkafka's own log lines never reach the terminal; failures are
    # reported through the delivery callback and the error below.
    settings.update({"bootstrap.servers": bootstrap, "on_delivery": failures, "log_level": 0})
    return Producer(settings), failures


def _produce_batch(producer: Producer, topic: str, batch: EventBatch) -> int:
    """Queue one batch; returns how many of its records are malformed."""
    produce = producer.produce
    for key, value in zip(batch.keys, batch.values, strict=True):
        while True:
            try:
                produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.05)  # the local queue is full: let librdkafka drain it
    producer.poll(0)
    return int(np.count_nonzero(batch.malformed >= 0))


def _flush(
    producer: Producer,
    failures: _DeliveryFailures,
    topic: str,
    bootstrap: str,
    events: int,
    flush_timeout_s: float,
) -> None:
    remaining = producer.flush(flush_timeout_s)
    if remaining or failures.count:
        raise GenerateError(
            f"{failures.count + remaining} of {events} records to topic {topic!r} at "
            f"{bootstrap} were not delivered ({failures.count} failed, {remaining} still queued "
            f"after {flush_timeout_s:.0f} s); first error: {failures.first}",
            hint="check that the broker is running (`streamfeat kafka status`) and the topic exists",
        )


# ----------------------------------------------------------------- Parquet


@dataclass(frozen=True)
class ParquetReport:
    directory: Path
    events: int
    files: tuple[Path, ...]
    seconds: float


def day_partition(ts_ms: int) -> str:
    """``date=YYYY-MM-DD`` of an epoch-millisecond time (UTC)."""
    return "date=" + datetime.fromtimestamp(ts_ms // DAY_MS * 86_400, tz=UTC).strftime("%Y-%m-%d")


def write_parquet(config: GeneratorConfig, directory: Path) -> ParquetReport:
    """Write the events as ``<directory>/date=YYYY-MM-DD/part-0.parquet`` (UTC days).

    Each day's file is replaced; other files in ``directory`` are left alone.
    """
    if config.malformed_fraction > 0:
        raise ConfigError(
            f"--malformed-fraction {config.malformed_fraction}: malformed records cannot be "
            "written to typed Parquet columns",
            hint="use --malformed-fraction 0 with --parquet, or produce to Kafka instead",
        )
    started = time.perf_counter()
    by_day: dict[int, list[pa.Table]] = {}
    for batch in EventGenerator(config):
        table = pa.table(
            {name: pa.array(batch.columns[name], type=PARQUET_SCHEMA.field(name).type) for name in FIELDS},
            schema=PARQUET_SCHEMA,
        )
        day = batch.ts // DAY_MS
        # Within one chunk days are contiguous except for jitter at a day boundary.
        for d in np.unique(day).tolist():
            rows = np.flatnonzero(day == d)
            by_day.setdefault(d, []).append(table.take(pa.array(rows)))
    files = []
    for d in sorted(by_day):
        path = directory / day_partition(d * DAY_MS) / "part-0.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.concat_tables(by_day[d]), path, compression="zstd")
        files.append(path)
    return ParquetReport(
        directory=directory,
        events=config.events,
        files=tuple(files),
        seconds=time.perf_counter() - started,
    )
