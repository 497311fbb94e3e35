"""Writing demo events as Parquet history: one file per UTC day (the backfill's input)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from engine.exceptions import ConfigError
from engine.generate.events import DAY_MS, FIELDS, EventGenerator, GeneratorConfig

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
