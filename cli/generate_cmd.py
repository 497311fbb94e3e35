"""``streamfeat generate``: deterministic demo transactions to Kafka or Parquet.

By default it produces the last day of history, ending now; ``--live`` keeps
producing ``--rate`` events per second stamped with the current time.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cli.common import fraction, positive_number, settings_from
from cli.setting_options import add_setting_option
from engine import generate
from engine.clock import wall_clock_ms
from engine.exceptions import ConfigError
from engine.io.timestamps import MAX_EVENT_TS_MS, MIN_EVENT_TS_MS
from engine.timefmt import iso_utc, parse_cli_time
from engine.wording import counted

DEFAULT_HISTORY_RATE = 2.0  # events per second of event time: one day is 172,800 events
DEFAULT_LIVE_RATE = 200.0
DEFAULT_TOPIC = "transactions"
_ISO_MIN_MS = -62_135_596_800_000  # 0001-01-01T00:00:00Z, the first instant a datetime holds
_ISO_MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the last
MAX_DEFAULT_EVENTS = 100_000_000  # one day at 1,157 events/s: beyond it, say how many instead of starting


def _events_and_start(args: argparse.Namespace, rate: float) -> tuple[int, int]:
    """``--events`` (default: one day at ``rate``) and the first event time (default:
    so that the last event happens now)."""
    # --rate is finite and > 0 (cli.common.positive_number): the default count below is a number.
    events: int = args.events if args.events is not None else int(generate.DAY_MS / 1000 * rate)
    if args.events is None and not args.live and events > MAX_DEFAULT_EVENTS:
        raise ConfigError(
            f"--rate: one day of event time at {rate:g} events/s is {_count(events)} events, more than the "
            f"{MAX_DEFAULT_EVENTS:,} generated without --events",
            hint="pass --events N for the count you want (they span N / --rate seconds), or a lower --rate",
        )
    span_ms = int(max(events - 1, 0) * 1000 / rate)
    start_ms = parse_cli_time(args.start, "--start") if args.start is not None else wall_clock_ms() - span_ms
    earliest = start_ms - (args.jitter_ms or 0)  # jitter moves an event back by up to --jitter-ms
    if earliest < MIN_EVENT_TS_MS or start_ms + span_ms > MAX_EVENT_TS_MS:
        # Ingest and backfill refuse such event times (docs/semantics.md section 5): say so now
        # rather than produce a topic or a file whose every event ends as a dead letter.
        raise ConfigError(
            f"--start: the events would span {_shown(earliest)} .. {_shown(start_ms + span_ms)}; event times before "
            f"{iso_utc(MIN_EVENT_TS_MS)} or beyond 2**53 ms are refused as timestamp_out_of_range",
            hint="pass a later --start, or fewer --events / a higher --rate so that they fit",
        )
    return events, start_ms


def _shown(epoch_ms: int) -> str:
    """An event time as ISO text where a datetime can hold it, else in ms."""
    return iso_utc(epoch_ms) if _ISO_MIN_MS <= epoch_ms <= _ISO_MAX_MS else f"{epoch_ms} ms"


def _count(events: int) -> str:
    return f"{events:,}" if events < 10**15 else f"{events:.3g}"


def _config(args: argparse.Namespace) -> generate.GeneratorConfig:
    live_default = DEFAULT_LIVE_RATE if args.live else DEFAULT_HISTORY_RATE
    rate: float = args.rate if args.rate is not None else live_default
    events, start_ms = _events_and_start(args, rate)
    try:
        return generate.GeneratorConfig(
            events=events,
            users=args.users,
            merchants=args.merchants,
            seed=args.seed,
            start_ms=start_ms,
            rate=rate,
            jitter_ms=args.jitter_ms,
            malformed_fraction=args.malformed_fraction,
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc), hint="see `streamfeat generate --help`") from None


def _check_options(args: argparse.Namespace) -> None:
    if args.live and args.parquet is not None:
        raise ConfigError("--live produces to Kafka; it cannot write --parquet", hint="drop one of them")
    if args.live and (args.start is not None or args.events is not None):
        raise ConfigError(
            "--live stamps events with the current time at --rate per second; --start and --events do not apply",
            hint="use --duration SECONDS to stop after a while",
        )
    if args.duration is not None and not args.live:
        raise ConfigError("--duration only applies to --live", hint="add --live")


def _live_progress(report: generate.ProduceReport) -> None:
    print(
        f"live: {counted(report.events, 'event')} to {report.topic!r} so far ({report.events_per_second:,.0f} events/s)",
        file=sys.stderr,
        flush=True,
    )


def _note_new_topic(bootstrap: str, topic: str) -> None:
    """Say so when ``topic`` is not on the broker yet: producing creates it (the local
    broker auto-creates topics), so a mistyped --topic is seen at once, not later as a
    view that never receives an event. No broker: one line and a hint, as everywhere."""
    from engine.io.exceptions import TopicNotFoundError
    from engine.io.kafka_source import list_topic_partitions
    from engine.kafka_local import require_broker

    require_broker(bootstrap)
    try:
        list_topic_partitions(bootstrap, topic)
    except TopicNotFoundError:
        print(
            f"note: topic {topic!r} is not on the broker at {bootstrap}: producing creates it "
            "(check --topic if you meant an existing one)",
            file=sys.stderr,
            flush=True,
        )


def _run(args: argparse.Namespace) -> int:
    _check_options(args)
    config = _config(args)
    if args.parquet is not None:
        report = generate.write_parquet(config, args.parquet)
        print(
            f"wrote {counted(report.events, 'event')} to {counted(len(report.files), 'day file')} under "
            f"{report.directory} in {report.seconds:.2f} s"
        )
        return 0
    bootstrap = settings_from(args).kafka_bootstrap
    _note_new_topic(bootstrap, args.topic)
    if args.live:
        print(
            f"producing {config.rate:,.0f} events/s stamped with the current time to "
            f"{args.topic!r} at {bootstrap}" + ("" if args.duration else "; Ctrl-C stops"),
            file=sys.stderr,
            flush=True,
        )
        live = generate.produce_live(config, args.topic, bootstrap, duration_s=args.duration, progress=_live_progress)
        print(
            f"produced {counted(live.events, 'live event')} ({live.malformed:,} malformed) to {live.topic!r} at {bootstrap}"
        )
        return 0
    produced = generate.produce_events(config, args.topic, bootstrap)
    first, last = iso_utc(config.start_ms), iso_utc(config.end_ms)
    print(
        f"produced {counted(produced.events, 'event')} ({produced.malformed:,} malformed) to "
        f"{produced.topic!r} at {bootstrap}, event times {first} .. {last}, in "
        f"{produced.seconds:.2f} s ({produced.events_per_second:,.0f} events/s), all delivered"
    )
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="produce demo transactions to Kafka (the last day, or live), or write them as Parquet",
        description=(
            "Without options: one day of history ending now, to the 'transactions' topic at "
            "kafka_bootstrap. --live keeps producing at --rate events/s stamped with the current "
            "time. Same seed and options -> the same events. Users and merchants are Zipf-skewed."
        ),
    )
    parser.add_argument(
        "--events",
        type=int,
        default=None,
        help=f"number of events (default: one day at --rate, {int(86_400 * DEFAULT_HISTORY_RATE):,})",
    )
    parser.add_argument("--users", type=int, default=10_000, help="distinct users (default %(default)s)")
    parser.add_argument("--merchants", type=int, default=1_000, help="distinct merchants (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    parser.add_argument(
        "--start",
        default=None,
        help="event time of the first event: ISO 8601 with offset, or 'now' "
        "(default: so that the last event happens now)",
    )
    parser.add_argument(
        "--rate",
        type=positive_number,
        default=None,
        help=f"events per second of event time (default {DEFAULT_HISTORY_RATE:g}; {DEFAULT_LIVE_RATE:g} with --live)",
    )
    parser.add_argument(
        "--live",
        action="store_true",
        help="keep producing --rate events per second stamped with the current time",
    )
    parser.add_argument(
        "--duration", type=positive_number, default=None, help="with --live: stop after this many seconds"
    )
    parser.add_argument(
        "--jitter-ms",
        type=int,
        default=0,
        help="move each timestamp back by up to this many ms (out-of-order arrival)",
    )
    parser.add_argument(
        "--malformed-fraction",
        type=fraction,
        default=0.0,
        help="fraction of records to break (bad JSON, missing fields, wrong types, bad timestamps)",
    )
    out = parser.add_mutually_exclusive_group()
    out.add_argument(
        "--topic", default=DEFAULT_TOPIC, help="produce to this Kafka topic, keyed by user_id (default %(default)s)"
    )
    out.add_argument("--parquet", type=Path, help="write <DIR>/date=YYYY-MM-DD/part-0.parquet instead")
    add_setting_option(parser, "--bootstrap", setting="kafka_bootstrap", what="Kafka bootstrap servers")
    parser.set_defaults(handler=_run)
