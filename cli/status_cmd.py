"""``streamfeat status``: how far behind, how fresh, how fast, how many rejects, how big.

Everything comes from durable places, so it works whether or not a dataflow runs:

- consumer lag per partition: the topic's end offsets (Kafka) minus the offset every
  state shard has applied (the smallest over shards, as a restart would resume);
- events/s: two samples of the applied offsets ``--sample`` seconds apart;
- freshness per view: the newest event time and write time recorded in the shards;
- dead letters: the ``<topic>.dlq`` topic's record count (end minus start offsets);
- state size: bytes on disk of each shard directory;
- with ``state_backup: kafka``: applied offsets of every shard from the changelog's progress
  topic (a host of a cluster holds only its own shards), and per shard and per host the
  owner, whether it is restoring, its lag and how far it is durable (engine/state/cluster_status.py).

Shards are opened read-only (no lock), so a running writer is not disturbed. With no broker
at ``kafka_bootstrap`` or a source topic missing there, it exits non-zero with one line.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cli.common import Subparsers, add_settings_args, check_source_topic, non_negative_number, settings_from
from cli.status_cluster import render_cluster
from engine.clock import wall_clock_ms
from engine.config import Settings
from engine.json_types import JSONObject
from engine.state.cluster_status import HostStatus, ShardStatus, collect_shards, hosts_of, progress_applied
from engine.timefmt import iso_utc
from engine.wording import counted

if TYPE_CHECKING:
    from engine.definitions import StreamFeatureView


@dataclass(frozen=True)
class PartitionStatus:
    partition: int
    end_offset: int | None  # None: the broker did not answer
    applied_next: int  # next offset to apply (0 when nothing applied)
    lag: int | None
    events_per_s: float | None


@dataclass(frozen=True)
class ViewStatus:
    name: str
    source: str
    fingerprint: str
    newest_event_ms: int | None
    written_at_ms: int | None
    freshness_lag_s: float | None
    expected_freshness_s: float
    joined_at_ms: int | None = None  # joined its running stream then; its history before is missing


@dataclass(frozen=True)
class SourceStatus:
    source: str
    topic: str
    partitions: tuple[PartitionStatus, ...]
    events_per_s: float | None
    dlq_topic: str
    dlq_records: int | None
    error: str = ""


@dataclass(frozen=True)
class Status:
    sources: tuple[SourceStatus, ...]
    views: tuple[ViewStatus, ...]
    shard_bytes: tuple[int, ...]
    sampled_at_ms: int
    shards: tuple[ShardStatus, ...] = ()  # state_backup: kafka only
    hosts: tuple[HostStatus, ...] = ()

    def to_dict(self) -> JSONObject:
        return asdict(self)


def register(subparsers: Subparsers) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "status",
        help="consumer lag, freshness, events/s, dead letters and state size per view",
        description="Read the state shards (read-only) and the broker, and print a status table.",
    )
    add_settings_args(parser)
    parser.add_argument(
        "--sample",
        type=non_negative_number,
        default=1.0,
        help="seconds between the two offset samples for events/s (0: skip; default 1)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.set_defaults(handler=_status)


def _read_shards(
    state_dir: Path, n_shards: int, topics: list[str], meta_keys: list[bytes]
) -> tuple[dict[str, list[dict[int, int]]], list[list[bytes | None]]]:
    """Per topic: each shard's applied offset per partition; per shard: the meta records."""
    from engine.state.secondary import secondary_shards

    offsets: dict[str, list[dict[int, int]]] = {t: [] for t in topics}
    metas: list[list[bytes | None]] = []
    with secondary_shards(state_dir, n_shards) as shards:
        for part in shards:
            if part is None:
                for t in topics:
                    offsets[t].append({})
                continue
            for t in topics:
                offsets[t].append({p: r.applied_offset for p, r in part.read_offsets(t).items()})
            metas.append(part.get_many(meta_keys) if meta_keys else [])
    return offsets, metas


def _applied_next(per_shard: list[dict[int, int]], partition: int) -> int:
    # A shard without a record for the partition has applied none of it.
    return min((shard.get(partition, -1) for shard in per_shard), default=-1) + 1


def collect_status(settings: Settings, sample_s: float = 1.0) -> Status:
    """Gather the status of every view of the applied plan (see the module docstring)."""
    from engine.definitions import load_repo
    from engine.exceptions import ConfigError
    from engine.io.dead_letters import dlq_record_count
    from engine.metrics import directory_bytes, kafka_end_offsets
    from engine.plan import load_applied_plan
    from engine.state.layout import shard_path
    from engine.state.records import meta_key

    plan = load_applied_plan(settings.plan_file)
    if plan is None:
        raise ConfigError(
            f"no applied plan at {settings.plan_file}",
            hint="run `streamfeat apply` first (status reads the shard count from the plan)",
        )
    repo = load_repo(settings.repo_path)
    views = [v for v in repo.views if v.name in plan.view_fingerprints]
    topics = sorted({v.source.topic for v in views})
    for topic in topics:  # no broker or no topic: one line with a hint, non-zero exit
        check_source_topic(settings.kafka_bootstrap, topic)
    fps = [v.fingerprint for v in views]
    state_dir: Path = settings.state_dir
    durable = settings.state_backup == "kafka"
    if durable:  # the progress and changelog topics exist from here on (as a run creates them)
        from engine.state.changelog import ensure_changelog_topic

        for topic in topics:
            ensure_changelog_topic(settings.kafka_bootstrap, topic, plan.shards)

    def read() -> tuple[dict[str, list[dict[int, int]]], list[list[bytes | None]]]:
        offsets, metas = _read_shards(state_dir, plan.shards, topics, [meta_key(f) for f in fps])
        if durable:  # every shard's offsets, not only the ones on this host's disk
            offsets = {t: progress_applied(settings.kafka_bootstrap, t, plan.shards) for t in topics}
        return offsets, metas

    first, metas = read()
    t0 = time.monotonic()
    second = first
    if sample_s > 0:
        time.sleep(sample_s)
        second, metas = read()
    elapsed = time.monotonic() - t0
    now_ms = wall_clock_ms()

    sources: list[SourceStatus] = []
    shard_rows: list[ShardStatus] = []
    for source in sorted({v.source for v in views}, key=lambda s: s.name):
        error = ""
        try:
            ends: dict[int, int] | None = kafka_end_offsets(settings.kafka_bootstrap, source.topic)
            dlq: int | None = dlq_record_count(settings.kafka_bootstrap, source.dlq_topic)
        except Exception as exc:  # the broker went away after the check: show the local half
            ends, dlq, error = None, None, str(exc)
        if durable:
            shard_rows += collect_shards(settings.kafka_bootstrap, source.topic, plan.shards, ends)
        rate = (lambda after, before: (after - before) / elapsed) if sample_s > 0 else None
        rows, rate_total = _partition_rows(first[source.topic], second[source.topic], ends, rate)
        sources.append(
            SourceStatus(
                source.name,
                source.topic,
                tuple(rows),
                rate_total if sample_s > 0 else None,
                source.dlq_topic,
                dlq,
                error,
            )
        )

    view_rows = _view_rows(views, metas, now_ms, plan.join_times)
    sizes = tuple(directory_bytes(shard_path(state_dir, s)) for s in range(plan.shards))
    shards = tuple(shard_rows)
    return Status(tuple(sources), tuple(view_rows), sizes, now_ms, shards, hosts_of(shards) if shards else ())


def _partition_rows(
    first: list[dict[int, int]],
    second: list[dict[int, int]],
    ends: dict[int, int] | None,
    rate: Callable[[int, int], float] | None,
) -> tuple[tuple[PartitionStatus, ...], float]:
    """One row per partition known to the broker or to a shard: applied offsets as of the
    second read, and (with ``rate``) events/s between the two reads; and their total rate."""
    known = set(ends or {})
    for shard in second:
        known.update(shard)
    rows: list[PartitionStatus] = []
    rate_total = 0.0
    for p in sorted(known):
        after = _applied_next(second, p)
        per_s = None if rate is None else rate(after, _applied_next(first, p))
        rate_total += per_s or 0.0
        end = None if ends is None else ends.get(p)
        rows.append(PartitionStatus(p, end, after, None if end is None else max(0, end - after), per_s))
    return tuple(rows), rate_total


def _view_rows(
    views: Sequence[StreamFeatureView],
    metas: list[list[bytes | None]],
    now_ms: int,
    joins: Mapping[str, int] | None = None,
) -> list[ViewStatus]:
    """Each view's freshness: its freshest shard's record (engine/state/records.py), and
    its join time while it lacks the history from before it (``joins``, by fingerprint)."""
    from engine.state.records import freshest

    view_rows: list[ViewStatus] = []
    for i, view in enumerate(views):
        fresh = freshest(shard_meta[i] if i < len(shard_meta) else None for shard_meta in metas)
        view_rows.append(
            ViewStatus(
                name=view.name,
                source=view.source.name,
                fingerprint=view.fingerprint_hex,
                newest_event_ms=fresh.max_event_ts_ms,
                written_at_ms=fresh.written_at_ms,
                freshness_lag_s=None if (lag := fresh.lag_ms(now_ms)) is None else lag / 1000,
                expected_freshness_s=view.expected_freshness.total_seconds(),
                joined_at_ms=(joins or {}).get(view.fingerprint_hex),
            )
        )
    return view_rows


def _fmt_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _fmt_age(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def render(status: Status) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=120)
    views = Table(title="views")
    for column in ("view", "source", "fingerprint", "newest event (UTC)", "freshness lag", "expected", "state"):
        views.add_column(column)
    for v in status.views:
        late = v.freshness_lag_s is not None and v.freshness_lag_s > v.expected_freshness_s
        state = "no data" if v.freshness_lag_s is None else ("STALE" if late else "ok")
        if v.joined_at_ms is not None:
            state += f"; history before {iso_utc(v.joined_at_ms)} missing (backfill it)"
        newest = "-" if v.newest_event_ms is None else iso_utc(v.newest_event_ms)
        views.add_row(
            v.name,
            v.source,
            v.fingerprint,
            newest,
            _fmt_age(v.freshness_lag_s),
            _fmt_age(v.expected_freshness_s),
            state,
        )
    console.print(views)
    for s in status.sources:
        table = Table(title=f"source {s.source} (topic {s.topic})")
        for column in ("partition", "end offset", "applied up to", "lag", "events/s"):
            table.add_column(column, justify="right")
        for p in s.partitions:
            table.add_row(
                str(p.partition),
                "?" if p.end_offset is None else str(p.end_offset),
                str(p.applied_next),
                "?" if p.lag is None else str(p.lag),
                "-" if p.events_per_s is None else f"{p.events_per_s:.0f}",
            )
        console.print(table)
        rate = "-" if s.events_per_s is None else f"{s.events_per_s:.0f}"
        dlq = "?" if s.dlq_records is None else str(s.dlq_records)
        console.print(f"  total events/s: {rate}   dead letters in {s.dlq_topic}: {dlq}")
        if s.error:
            console.print(f"  [red]broker unavailable:[/red] {s.error}")
    if status.shards:
        render_cluster(console, status.shards, status.hosts)
    total = sum(status.shard_bytes)
    console.print(
        f"state on disk: {_fmt_bytes(total)} in {counted(len(status.shard_bytes), 'shard')} "
        f"(largest {_fmt_bytes(max(status.shard_bytes, default=0))})"
    )


def _status(args: argparse.Namespace) -> int:
    import orjson

    if args.sample < 0:
        from engine.exceptions import ConfigError

        raise ConfigError(f"--sample: expected seconds >= 0, got {args.sample}")
    status = collect_status(settings_from(args), args.sample)
    if args.json:
        print(orjson.dumps(status.to_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        render(status)
    return 0
