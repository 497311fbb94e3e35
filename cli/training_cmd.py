"""``streamfeat training-set``: point-in-time features for a spine, from the Parquet log."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from cli.common import Subparsers, add_settings_args
from cli.tables import check_output, read_table, write_table
from engine.wording import counted

if TYPE_CHECKING:  # imported when the command runs, so `streamfeat --help` stays fast
    import polars as pl

    from engine.definitions import FeatureRepo
    from engine.plan import AppliedPlan


def _run(args: argparse.Namespace) -> int:
    from engine.config import load_settings
    from engine.definitions import load_repo
    from engine.offline.exceptions import SpineValidationError
    from engine.offline.training import get_training_set, spine_text_columns
    from engine.plan import load_applied_plan

    settings = load_settings(overrides={"repo": args.repo, "data_dir": args.data_dir})
    check_output(args.out)
    repo = load_repo(settings.repo_path)
    spine = read_table(args.spine, text_columns=spine_text_columns(repo, args.service))
    notes: list[str] = []  # printed after the file is written, below its line
    applied = load_applied_plan(settings.plan_file)  # views that joined a stream lack history
    if applied is not None:
        notes.extend(_differences_from_the_applied_plan(repo, args.service, applied))
    try:
        frame = get_training_set(
            repo,
            args.service,
            spine,
            settings.log_uri,
            timestamp_column=args.timestamp_column,
            on_note=notes.append,
            joins=applied.join_times if applied is not None else None,
        )
    except SpineValidationError as exc:
        if args.timestamp_column not in exc.columns or exc.rows:  # rows at fault: the error's own hint
            raise
        raise SpineValidationError(
            str(exc), rows=exc.rows, columns=exc.columns, hint=_timestamp_hint(spine, args.timestamp_column)
        ) from None
    frame = as_utc_timestamps(frame, args.timestamp_column)
    write_table(frame, args.out)
    column = frame.get_column(args.timestamp_column)
    span = f"{column.min()!s} .. {column.max()!s}" if frame.height else "no rows"
    print(
        f"wrote {counted(frame.height, 'row')} x {counted(frame.width, 'column')} to {args.out} ({args.timestamp_column} {span})"
    )
    for note in notes:
        print(note, file=sys.stderr)
    return 0


def _differences_from_the_applied_plan(repo: FeatureRepo, service_name: str, applied: AppliedPlan) -> list[str]:
    """A training set must hold what serving answers, which runs the applied plan: a view
    changed since apply would read a log its definition never wrote (refused, as `serve`
    refuses it); an on-demand view changed since apply runs other code than the server
    (noted)."""
    from engine.exceptions import ConfigError
    from engine.plan import MISMATCH_HINT

    service = repo.service(service_name) if service_name in {s.name for s in repo.services} else None
    if service is None:
        return []  # get_training_set names the unknown service
    problems = applied.mismatches(service.views)
    if problems:
        raise ConfigError("the repo does not match the applied plan: " + "; ".join(problems), hint=MISMATCH_HINT)
    entries = applied.entries.get("on_demand_view", {})
    changed = [
        o.name
        for o in service.on_demand_views
        if o.name not in entries or entries[o.name].get("definition") != o.to_dict()  # as plan compares them
    ]
    return (
        [
            f"note: on-demand {'view' if len(changed) == 1 else 'views'} {', '.join(changed)} differ from the applied "
            "plan (their code or definition changed since `streamfeat apply`): this set runs the repo's code, a "
            "server runs the applied one; apply to serve what you train on"
        ]
        if changed
        else []
    )


def _timestamp_hint(spine: pl.DataFrame, column: str) -> str:
    """How to point --timestamp-column at the spine's time column, naming a likely one
    (or, when the column holds times without a zone, how to give them one)."""
    import polars as pl

    dtype = spine.schema.get(column)
    if isinstance(dtype, pl.Datetime) and dtype.time_zone is None:
        return (
            f"write each {column} with its zone, e.g. 2026-01-01T12:00:00Z or 2026-01-01T14:00:00+02:00 "
            "(or as epoch milliseconds): a time zone is never guessed"
        )
    times = [name for name, dtype in spine.schema.items() if dtype.is_temporal() or dtype.is_integer()]
    example = times[0] if times else "ts"
    return (
        f"--timestamp-column names each row's as-of time (default {column}): e.g. --timestamp-column {example}, "
        f"or rename that column to {column}"
    )


def as_utc_timestamps(frame: pl.DataFrame, column: str) -> pl.DataFrame:
    """The spine's time column as a Parquet timestamp[ms, UTC], whether it came as epoch
    milliseconds or as zoned datetimes of any unit and zone: the instants the features were
    computed at (docs/semantics.md: event time is UTC milliseconds), readable as datetimes."""
    import polars as pl

    dtype = frame.schema[column]
    if dtype.is_integer():
        return frame.with_columns(pl.col(column).cast(pl.Datetime("ms", time_zone="UTC")))
    if isinstance(dtype, pl.Datetime) and dtype.time_zone is not None:
        # Truncated to the millisecond, as the as-of time was (engine/offline/spine.py).
        return frame.with_columns(pl.col(column).dt.epoch("ms").cast(pl.Datetime("ms", time_zone="UTC")))
    return frame


def register(subparsers: Subparsers) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "training-set",
        help="point-in-time correct features of a feature service for a spine",
        description="Every spine row (entity keys, timestamp) gets the service's features as of "
        "its timestamp, computed from the Parquet log (docs/semantics.md section 3).",
    )
    add_settings_args(parser, kafka=False)
    parser.add_argument("--service", required=True, help="feature service name")
    parser.add_argument("--spine", type=Path, required=True, help="spine file (.parquet or .csv)")
    parser.add_argument(
        "--out", type=Path, required=True, help="output file (.parquet, or .csv when no feature is a list)"
    )
    parser.add_argument(
        "--timestamp-column",
        default="event_timestamp",
        help="spine column holding the as-of time (default %(default)s)",
    )
    parser.set_defaults(handler=_run)
