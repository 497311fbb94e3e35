"""``streamfeat quality``: per-interval statistics of each view's Parquet log, with drift flags.

Writes ``<log_root>/_quality/view=<name>/quality.parquet`` (see engine/quality.py) and
prints the intervals whose statistics drifted from their baseline.
"""

from __future__ import annotations

import argparse
from datetime import timedelta

from cli.common import Subparsers, add_settings_args, positive_int, positive_number, settings_from
from engine.timefmt import iso_utc
from engine.wording import counted


def register(subparsers: Subparsers) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "quality",
        help="compute data-quality statistics of the Parquet log and flag drift",
        description="Null rate, mean, std, min, max, p1/p50/p99 per view, column and interval "
        "(string columns: empty rate and distinct count).",
    )
    add_settings_args(parser, kafka=False)
    parser.add_argument("--view", action="append", default=None, help="only this view (repeatable)")
    parser.add_argument(
        "--interval-minutes", type=positive_int, default=60, help="interval of event time (default: 60)"
    )
    parser.add_argument("--baseline-days", type=positive_number, default=7.0, help="baseline span in days (default: 7)")
    parser.set_defaults(handler=_quality)


def _quality(args: argparse.Namespace) -> int:
    from engine.definitions import FieldType, load_repo
    from engine.exceptions import ConfigError
    from engine.quality import QualityConfig, run_quality

    settings = settings_from(args)
    repo = load_repo(settings.repo_path)
    offline = [v.name for v in repo.views if v.offline]
    names = args.view or offline
    unknown = sorted(set(names) - set(offline))
    if unknown:
        raise ConfigError(
            f"--view: no offline view named {', '.join(unknown)}",
            hint=f"views with a Parquet log: {', '.join(offline) or '(none)'}",
        )
    config = QualityConfig(
        interval=timedelta(minutes=args.interval_minutes),
        baseline=timedelta(days=args.baseline_days),
    )
    # String columns have no numeric statistics: their log values are placeholders.
    text_columns = {v.name: [c for c, kind in v.column_types.items() if kind == FieldType.STRING] for v in repo.views}
    fingerprints = {v.name: v.fingerprint_hex for v in repo.views}
    tables = run_quality(settings.log_uri, names, config, text_columns, fingerprints)
    for name, table in tables.items():
        alerts = table.filter(table["alert"])
        print(f"{name}: {counted(table.height, 'row')}, {alerts.height:,} with drift")
        for row in alerts.iter_rows(named=True):
            start = iso_utc(int(row["interval_start"]))
            print(f"  interval {start} {row['feature']}: drifted {row['drifted']}")
    return 0
