"""``streamfeat generate``: deterministic demo transactions to Kafka or Parquet."""

from __future__ import annotations

import argparse
from pathlib import Path

from engine import generate
from engine.exceptions import ConfigError


def _config(args: argparse.Namespace) -> generate.GeneratorConfig:
    try:
        return generate.GeneratorConfig(
            events=args.events,
            users=args.users,
            merchants=args.merchants,
            seed=args.seed,
            start_ms=generate.parse_start(args.start),
            rate=args.rate,
            jitter_ms=args.jitter_ms,
            malformed_fraction=args.malformed_fraction,
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc), hint="see `streamfeat generate --help`") from None


def _run(args: argparse.Namespace) -> int:
    config = _config(args)
    if args.parquet is not None:
        report = generate.write_parquet(config, args.parquet)
        print(
            f"wrote {report.events:,} events to {len(report.files)} day file(s) under "
            f"{report.directory} in {report.seconds:.2f} s"
        )
        return 0
    produced = generate.produce_events(config, args.topic, args.bootstrap)
    print(
        f"produced {produced.events:,} events ({produced.malformed:,} malformed) to "
        f"{produced.topic!r} at {args.bootstrap} in {produced.seconds:.2f} s "
        f"({produced.events_per_second:,.0f} events/s), all delivered"
    )
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="produce deterministic demo transactions to Kafka, or write them as Parquet",
        description="Same seed and options -> the same bytes. Users and merchants are Zipf-skewed.",
    )
    parser.add_argument("--events", type=int, required=True, help="number of events")
    parser.add_argument("--users", type=int, default=10_000, help="distinct users (default %(default)s)")
    parser.add_argument("--merchants", type=int, default=1_000, help="distinct merchants (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    parser.add_argument(
        "--start", default="2026-01-01T00:00:00Z",
        help="event time of the first event: ISO 8601 with offset, or 'now' (default %(default)s)",
    )  # fmt: skip
    parser.add_argument("--rate", type=float, default=1_000.0, help="events per second of event time")
    parser.add_argument(
        "--jitter-ms", type=int, default=0,
        help="move each timestamp back by up to this many ms (out-of-order arrival)",
    )  # fmt: skip
    parser.add_argument(
        "--malformed-fraction", type=float, default=0.0,
        help="fraction of records to break (bad JSON, missing fields, wrong types, bad timestamps)",
    )  # fmt: skip
    out = parser.add_mutually_exclusive_group(required=True)
    out.add_argument("--topic", help="produce to this Kafka topic, keyed by user_id")
    out.add_argument("--parquet", type=Path, help="write <DIR>/date=YYYY-MM-DD/part-0.parquet")
    parser.add_argument(
        "--bootstrap", default="127.0.0.1:9092", help="Kafka bootstrap servers (default %(default)s)"
    )
    parser.set_defaults(handler=_run)
