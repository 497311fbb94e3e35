"""``streamfeat backfill``: replay Parquet history or a Kafka topic through the streaming kernel."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

from cli.common import Subparsers, add_settings_args, check_source_topic
from engine.clock import wall_clock_ms
from engine.exceptions import ConfigError
from engine.timefmt import iso_utc, parse_cli_time
from engine.wording import counted, quoted

if TYPE_CHECKING:  # imported when the command runs, so `streamfeat --help` stays fast
    from rich.progress import Progress, Task
    from rich.text import Text

    from engine.apply import StoredView
    from engine.config import Settings
    from engine.definitions import EventSource, FeatureRepo, StreamFeatureView
    from engine.plan import AppliedPlan


def _settings(args: argparse.Namespace) -> Settings:
    from engine.config import load_settings

    return load_settings(
        overrides={
            "repo": args.repo,
            "data_dir": args.data_dir,
            "kafka_bootstrap": getattr(args, "bootstrap", None),
        }
    )


def _selected(
    repo: FeatureRepo, source_name: str, names: str | None
) -> tuple[EventSource, list[StreamFeatureView], list[StreamFeatureView]]:
    """The source, the views to backfill (``--views``, default all) and all of its views."""
    from dataflows.stream import select_views

    source, views = select_views(repo, source_name)
    chosen = list(views)
    if names:
        wanted = [n.strip() for n in names.split(",") if n.strip()]
        known = {v.name: v for v in views}
        unknown = [n for n in wanted if n not in known]
        if unknown:
            raise ConfigError(
                f"--views: {unknown} are not views of source '{source_name}'",
                hint=f"views of the source: {', '.join(sorted(known))}",
            )
        chosen = [known[n] for n in wanted]
    return source, chosen, list(views)


def _progress(quiet: bool) -> Progress | None:
    if quiet:
        return None
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    class _Rate(TextColumn):
        def render(self, task: Task) -> Text:
            speed = task.finished_speed or task.speed
            self.text_format = f"{speed:,.0f} events/s" if speed else "- events/s"
            return super().render(task)

    return Progress(
        TextColumn("backfill"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        _Rate(""),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )


def _run(args: argparse.Namespace) -> int:
    from engine.definitions import load_repo
    from engine.plan import load_applied
    from engine.state.writer_lock import state_writer

    settings = _settings(args)
    repo = load_repo(settings.repo_path)
    source, views, source_views = _selected(repo, args.source, args.views)
    # The backfilled state must be the one served: the views must be applied as defined.
    plan = load_applied(settings.plan_file, views)
    sources = args.sources or list(source.history)
    try:
        with state_writer(settings.path(settings.data_dir), "streamfeat backfill"):
            views, joins = _views_and_joins(args, settings, plan, source, views, source_views, sources != ["kafka"])
            if sources == ["kafka"]:
                _refuse_kafka_for_joins(views, joins)
                return _from_kafka(args, settings, source, views)
            return _from_parquet(args, settings, source, views, source_views, sources, plan.shards, joins)
    except KeyboardInterrupt:
        # Each commit is whole (state and progress in one write): what was committed stays.
        print(
            "streamfeat backfill: interrupted; what it committed is kept: run the same command again "
            "to resume where it stopped",
            file=sys.stderr,
        )
        return 130


def _views_and_joins(
    args: argparse.Namespace,
    settings: Settings,
    plan: AppliedPlan,
    source: EventSource,
    views: list[StreamFeatureView],
    source_views: list[StreamFeatureView],
    from_parquet: bool,
) -> tuple[list[StreamFeatureView], dict[bytes, int]]:
    """The views to replay and, among them, those that joined the running stream (view
    fingerprint -> join time: the plan's, or the shards' own pending handoff, which a lost
    plan file cannot hide). Without --views, when views of the source joined its stream,
    only they are replayed: the others already hold the stream's events, and a history
    ending at the join would count those before it twice."""
    from engine.apply import stored_views
    from engine.state.layout import holds_state
    from engine.state.rocksdb_store import RocksDBStore

    joins = {v.fingerprint: at for v in source_views if (at := plan.join_ms(v.fingerprint_hex)) is not None}
    stored: dict[bytes, StoredView] = {}
    if holds_state(settings.state_dir):
        with RocksDBStore(settings.state_dir, plan.shards) as store:
            stored = stored_views(store.partitions, [v.fingerprint for v in source_views])
    joins.update({fp: s.pending_join for fp, s in stored.items() if s.pending_join is not None})
    if args.views is None and joins:
        joined = [v for v in source_views if v.fingerprint in joins]
        if not args.quiet and len(joined) < len(source_views):
            print(
                f"backfilling the views that joined the stream: {', '.join(v.name for v in joined)} (the others "
                "already hold the stream's events; name views with --views to choose)"
            )
        views = joined
    streamed = [
        v.name
        for v in views
        if v.fingerprint not in joins and v.fingerprint in stored and stored[v.fingerprint].holds_events
    ]
    if streamed and any(v.fingerprint in joins for v in views):
        raise ConfigError(
            f"--views: {quoted(streamed)} already hold the stream's events, and the others joined the stream: "
            "their history ends at the join, which would count the events of the first before it twice",
            hint="backfill the views that joined the stream on their own (--views)",
        )
    lateness = source.allowed_lateness_ms
    early = [
        (v.name, joins[v.fingerprint]) for v in views if joins.get(v.fingerprint, -(2**63)) > wall_clock_ms() - lateness
    ]
    if early:
        name, at = early[0]
        raise ConfigError(
            f"view {name!r} joined the stream at {iso_utc(at)}, and events before then may still arrive (its "
            f"source allows {lateness // 1000} s of lateness): a history exported now could lack some of them",
            hint=f"backfill it after {iso_utc(at + lateness)}, from a history exported then; until then its "
            "windows reaching before the join are served INCOMPLETE",
        )
    if from_parquet:  # a Kafka backfill takes no --end
        _default_end(args, source, views, joins, stored)
    selected = {v.fingerprint for v in views}
    return views, {fp: at for fp, at in joins.items() if fp in selected}


def _default_end(
    args: argparse.Namespace,
    source: EventSource,
    views: list[StreamFeatureView],
    joins: dict[bytes, int],
    stored: Mapping[bytes, StoredView],
) -> None:
    """--end when not given: the join time of views that joined a stream (their history
    ends there), or, for the same command again after a whole backfill, the end it had
    (nothing left to replay; views that had joined keep their history topic)."""
    from engine.offline.backfill import history_topic

    if args.end:
        return
    join_times = {joins[v.fingerprint] for v in views if v.fingerprint in joins}
    if len(join_times) == 1:
        args.end = iso_utc(join_times.pop())
        return
    done = {(s.backfilled_to, s.backfilled_as) for v in views if (s := stored.get(v.fingerprint)) is not None}
    if joins or len(done) != 1 or not all(v.fingerprint in stored for v in views):
        return
    ((end, topic),) = done
    if end is not None:
        args.end = iso_utc(end)
        fps = [v.fingerprint for v in views]
        if topic == history_topic(str(source.topic), fps, dict.fromkeys(fps, end)):
            joins.update(dict.fromkeys(fps, end))  # they had joined their stream at that end


def _refuse_kafka_for_joins(views: list[StreamFeatureView], joins: Mapping[bytes, int]) -> None:
    joined = [v.name for v in views if v.fingerprint in joins]
    if joined:
        raise ConfigError(
            f"--from kafka cannot fill the history of {quoted(joined)}: they joined the running stream, which "
            "resumes from the offsets recorded in the state, after the events they lack",
            hint="backfill them from Parquet history (--from <files>; the history ends at their join time), or "
            "replay the topic into a fresh state directory",
        )


def _from_kafka(
    args: argparse.Namespace, settings: Settings, source: EventSource, views: list[StreamFeatureView]
) -> int:
    """Run the source's dataflow until caught up with its topic."""
    from dataflows.backfill import backfill_kafka
    from dataflows.job import build_job

    if args.start or args.end:
        raise ConfigError(
            "--start/--end do not apply to --from kafka: the topic is replayed from the "
            "offsets recorded in the state (the earliest for a new state directory)",
            hint="drop --start/--end, or backfill Parquet history with --from <glob>",
        )
    job = build_job(settings, args.source, tail=False)
    if len(views) != len(job.views):
        raise ConfigError(
            "--views: a Kafka backfill runs the source's dataflow, which records one "
            "offset per topic partition for all of its views",
            hint="drop --views (every view of the source is replayed together)",
        )
    check_source_topic(settings.kafka_bootstrap, source.topic)
    backfill_kafka(job)
    if not args.quiet:
        print(f"caught up with topic {source.topic!r}; state in {settings.state_dir}")
    return 0


def _from_parquet(
    args: argparse.Namespace,
    settings: Settings,
    source: EventSource,
    views: list[StreamFeatureView],
    source_views: list[StreamFeatureView],
    sources: list[str],
    shards: int,
    joins: Mapping[bytes, int],
) -> int:
    """Replay ``--start <= e < --end`` of Parquet history; ``--end`` becomes the handoff time
    (for views that joined the running stream, ``--end`` is their join time)."""
    from engine.offline.backfill import DEFAULT_CHUNK_ROWS, DEFAULT_COMMIT_ROWS, BackfillTarget, backfill_parquet
    from engine.offline.history_files import resolve_history_files

    if "kafka" in sources:
        raise ConfigError("--from kafka cannot be combined with Parquet paths")
    if not sources:
        raise ConfigError(
            f"source '{source.name}' declares no history and --from was not given",
            hint="pass --from 'history/**/*.parquet' or --from kafka",
        )
    if not args.end:  # views that joined a stream had it set to their join time (_views_and_joins)
        raise ConfigError(
            "--end is required for a Parquet backfill: it is the handoff time T",
            hint="history provides e < T, the stream e >= T (docs/backfill.md)"
            + ("; views that joined at different times are backfilled one at a time (--views)" if joins else ""),
        )
    end_ms = parse_cli_time(args.end, "--end")
    start_ms = parse_cli_time(args.start, "--start") if args.start else 0
    chunk_rows = DEFAULT_CHUNK_ROWS if args.chunk_rows is None else args.chunk_rows
    commit_rows = DEFAULT_COMMIT_ROWS if args.commit_rows is None else args.commit_rows
    for flag, rows, default in (
        ("--chunk-rows", chunk_rows, DEFAULT_CHUNK_ROWS),
        ("--commit-rows", commit_rows, DEFAULT_COMMIT_ROWS),
    ):
        if rows < 1:  # named as the flag, before the progress bar starts
            raise ConfigError(f"{flag}: expected a row count >= 1, got {rows}", hint=f"e.g. {flag} {default}")
    files = resolve_history_files(sources)
    target = BackfillTarget(
        state_dir=settings.state_dir,
        shards=shards,
        log_root=settings.log_uri,
        redis_url=(settings.redis_url or None) if settings.online == "redis" else None,
    )
    replay = functools.partial(
        backfill_parquet,
        target,
        source,
        views,
        files,
        start_ms,
        end_ms,
        chunk_rows=chunk_rows,
        commit_rows=commit_rows,
        source_views=source_views,
        joins=joins,
    )
    progress = _progress(args.quiet)
    if progress is None:
        report = replay()
    else:
        with progress:
            task = progress.add_task("backfill", total=None)
            started: list[bool] = []

            def update(done: int, total: int) -> None:
                if not started:
                    # The first report holds a resumed run's earlier rows (and rows read
                    # before any report): a start, not a rate; the rate counts from here.
                    started.append(True)
                    progress.reset(task, total=total, completed=done)
                    return
                progress.update(task, completed=done, total=total)

            report = replay(on_progress=update)
    if report.complete and joins:
        from engine.plan import complete_joins

        complete_joins(settings.plan_file, [fp.hex() for fp in joins])  # their state is whole now
    if not args.quiet and report.positions_total and report.positions_resumed_from == report.positions_total:
        print(
            f"nothing to replay: views {', '.join(report.views)} already hold all {report.positions_total:,} "
            f"replay positions of this backfill ({report.rows_total:,} history events from "
            f"{counted(len(report.files), 'file')}); handoff T = {args.end}: streaming applies e >= T for these views"
        )
    elif not args.quiet:
        resumed = f", resumed at position {report.positions_resumed_from:,}" if report.positions_resumed_from else ""
        print(
            f"backfilled {report.rows_total:,} history events ({report.positions_replayed:,} of "
            f"{report.positions_total:,} replay positions: one per event and family of views) from "
            f"{counted(len(report.files), 'file')} into views {', '.join(report.views)}{resumed} in "
            f"{report.seconds:.1f} s ({report.events_per_second:,.0f} events/s); "
            f"handoff T = {args.end}: streaming applies e >= T for these views"
        )
    return 0


def register(subparsers: Subparsers) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "backfill",
        help="replay Parquet history or a Kafka topic through the streaming kernel",
        description=(
            "Parquet history: events with --start <= e < --end, sorted by event time, are "
            "applied with the same kernel as streaming; --end becomes the handoff time "
            "(see docs/backfill.md). --from kafka: run the source's dataflow until caught up."
        ),
    )
    add_settings_args(parser)  # --bootstrap: for --from kafka
    parser.add_argument("--source", required=True, help="event source name, e.g. transactions")
    parser.add_argument("--views", default=None, help="comma-separated views (default: all of the source)")
    parser.add_argument(
        "--from",
        dest="sources",
        action="append",
        default=None,
        metavar="PATH|GLOB|kafka",
        help="Parquet file, directory or glob (repeatable), or 'kafka' (default: the source's history)",
    )
    parser.add_argument("--start", default=None, help="first event time, ISO 8601 with offset (default: all)")
    parser.add_argument("--end", default=None, help="handoff time T, ISO 8601 with offset: history takes e < T")
    parser.add_argument("--chunk-rows", type=int, default=None, help="rows routed together (default 250,000)")
    parser.add_argument(
        "--commit-rows",
        type=int,
        default=None,
        help="history rows read and committed together: larger is faster and takes more memory (default 500,000)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    parser.set_defaults(handler=_run)
