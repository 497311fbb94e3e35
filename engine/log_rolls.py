"""Parquet log rolls of one shard: its writers, and writing a roll off the worker thread.

``ShardApplier`` cuts every writer's buffer on the worker; the files are written here,
on one publisher thread per process (``write_cuts``), and the applier records the log
offsets once they are in place (docs/reliability.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from engine.io.log_format import ParquetLogWriteError
from engine.io.parquet_log import LogCut, ParquetLogWriter, PublishedFile
from engine.state.offsets import OffsetRecord


class LoggedView(Protocol):
    """What the Parquet log needs of a view (``ShardApplier``'s views add the rest)."""

    @property
    def name(self) -> str: ...
    @property
    def fingerprint(self) -> bytes: ...
    @property
    def fingerprint_hex(self) -> str: ...
    @property
    def join_keys(self) -> tuple[str, ...]: ...
    @property
    def columns(self) -> tuple[str, ...]: ...


def open_log_writers(
    log_root: str | None,
    views: Sequence[LoggedView],
    shard: int,
    *,
    max_rows: int,
    max_age_s: float,
    raw_columns: Mapping[bytes, Mapping[str, str]] | None = None,
) -> dict[bytes, ParquetLogWriter]:
    """One Parquet log writer per view for this shard (none without a log root).

    ``raw_columns`` names, per view fingerprint, the columns its sketch aggregations read
    and their schema types: the log keeps their decoded values too.
    """
    if not log_root:
        return {}
    return {
        view.fingerprint: ParquetLogWriter(
            log_root,
            view.name,
            view.fingerprint_hex,
            view.join_keys,
            view.columns,
            writer_id=f"s{shard:03d}",
            max_rows=max_rows,
            # Staggered by shard (up to +50%): shards started together would
            # otherwise all roll at the same moment, and one roll of every
            # shard at 10k events/s held the dataflow back by ~0.6 s.
            max_age_s=max_age_s * (1 + (shard % 8) / 16),
            raw_columns=dict((raw_columns or {}).get(view.fingerprint, {})),
        )
        for view in views
    }


@dataclass(frozen=True)
class PendingRoll:
    """A log roll whose files are being written on the publisher thread."""

    future: Future[list[tuple[bytes, PublishedFile | ParquetLogWriteError]]]
    cuts: dict[bytes, LogCut]
    # Offsets when the buffers were cut: every row up to them is in the cuts.
    offsets: dict[int, OffsetRecord]


_PUBLISHER: ThreadPoolExecutor | None = None


def background_publisher() -> ThreadPoolExecutor:
    """One thread per process writes the Parquet log files of background rolls."""
    global _PUBLISHER
    if _PUBLISHER is None:
        _PUBLISHER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="log-publisher")
    return _PUBLISHER


def write_cuts(
    writers: Mapping[bytes, ParquetLogWriter], cuts: Mapping[bytes, LogCut]
) -> list[tuple[bytes, PublishedFile | ParquetLogWriteError]]:
    """Publisher-thread side of a background roll: write each cut, keep failures as data."""
    outcomes: list[tuple[bytes, PublishedFile | ParquetLogWriteError]] = []
    for fp, cut in cuts.items():
        try:
            outcomes.append((fp, writers[fp].write_cut(cut)))
        except ParquetLogWriteError as exc:
            outcomes.append((fp, exc))
    return outcomes
