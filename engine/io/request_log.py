"""Request logging for skew checks: every answered feature request, to Parquet.

When ``request_log_dir`` is set, each row of each ``/v1/features`` answer is kept
(service, the ``as_of`` time used, join keys, request data, the values served) and
written in rolling Parquet files ``<dir>/service=<name>/part-<pid>-<n>.parquet``,
published atomically (``.tmp`` then rename). ``streamfeat consistency-check``
recomputes each logged row offline with the same time contract and reports the
mismatch rate per feature.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine.clock import wall_clock_ms

log = logging.getLogger(__name__)

SCHEMA = pa.schema(
    [
        ("service", pa.string()),
        ("as_of_ms", pa.int64()),
        ("logged_at_ms", pa.int64()),
        ("keys_json", pa.string()),
        ("request_json", pa.string()),
        ("features_json", pa.string()),
        # Per row, the served status of each feature, when the answer had them (metadata
        # asked for); null otherwise and in files written before the column existed.
        ("statuses_json", pa.string()),
    ]
)


class RequestLogger:
    """Buffers answered rows; publishes a file every ``max_rows`` rows or once the oldest
    buffered row is ``max_age_s`` seconds old, also when no request follows it (a
    background thread watches the age). :meth:`close` publishes what is left."""

    def __init__(self, directory: str | Path, *, max_rows: int = 5_000, max_age_s: float = 5.0) -> None:
        self.directory = Path(directory)
        self.max_rows = max_rows
        self.max_age_s = max_age_s
        self._rows: list[tuple[str, int, int, str, str, str, str | None]] = []
        self._first = 0.0
        self._lock = threading.Lock()
        self._files = 0
        self._closed = threading.Event()
        self._watcher = threading.Thread(target=self._publish_when_old, name="streamfeat-request-log", daemon=True)
        self._watcher.start()

    def _publish_when_old(self) -> None:
        wait = self.max_age_s
        while not self._closed.wait(wait):
            with self._lock:
                age = time.monotonic() - self._first if self._rows else None
            if age is not None and age >= self.max_age_s:
                try:
                    self.flush()
                except Exception:  # a full or removed disk: say so, keep serving and retrying
                    log.exception("request log: cannot publish to %s (retrying in %.1f s)", self.directory, wait)
                wait = self.max_age_s
            else:
                wait = self.max_age_s - age if age is not None else self.max_age_s

    def close(self) -> None:
        """Stop the age watcher and publish the rows still buffered."""
        self._closed.set()
        self._watcher.join()
        self.flush()

    def record(
        self,
        service: str,
        as_of_ms: int | Sequence[int],
        join_keys: Mapping[str, Sequence[object]],
        request_data: Mapping[str, Sequence[object]],
        rows: Sequence[Mapping[str, object]],
        statuses: Sequence[Mapping[str, object]] | None = None,
    ) -> None:
        now = wall_clock_ms()
        entries = []
        for i, row in enumerate(rows):
            keys = {k: v[i] for k, v in join_keys.items()}
            data = {k: v[i] for k, v in request_data.items()}
            entries.append(
                (
                    service,
                    as_of_ms if isinstance(as_of_ms, int) else as_of_ms[i],
                    now,
                    orjson.dumps(keys).decode(),
                    orjson.dumps(data).decode(),
                    orjson.dumps(row).decode(),
                    orjson.dumps(statuses[i]).decode() if statuses is not None else None,
                )
            )
        with self._lock:
            if not self._rows:
                self._first = time.monotonic()
            self._rows.extend(entries)
            due = len(self._rows) >= self.max_rows or time.monotonic() - self._first >= self.max_age_s
        if due:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            rows, self._rows = self._rows, []
            first_file = self._files + 1
            self._files += len({row[0] for row in rows})
        if not rows:
            return
        columns = list(zip(*rows, strict=True))
        table = pa.Table.from_arrays([pa.array(c) for c in columns], schema=SCHEMA)
        published: set[str] = set()
        try:
            for number, service in enumerate(sorted(set(columns[0])), start=first_file):
                part = table.filter(pc.equal(table.column("service"), service))
                target = self.directory / f"service={service}"
                target.mkdir(parents=True, exist_ok=True)
                final = target / f"part-{os.getpid()}-{number:06d}-{uuid.uuid4().hex[:8]}.parquet"
                tmp = final.with_suffix(".parquet.tmp")
                pq.write_table(part, tmp)
                os.replace(tmp, final)
                published.add(service)
        except BaseException:
            # Keep the rows of the files not written: the next publish retries them.
            with self._lock:
                self._rows[:0] = [row for row in rows if row[0] not in published]
                self._first = time.monotonic() if self._rows else self._first
            raise


def read_request_log(directory: str | Path, service: str | None = None) -> pa.Table:
    """Every published row (``*.tmp`` files are ignored), optionally of one service."""
    root = Path(directory)
    pattern = f"service={service}/*.parquet" if service else "service=*/*.parquet"
    files = sorted(root.glob(pattern))
    if not files:
        return SCHEMA.empty_table()
    return pa.concat_tables(pq.read_table(f, schema=SCHEMA) for f in files)
