"""``streamfeat consistency-check``: recompute logged serving requests offline.

The printed report has, per service, the mismatches per feature and then every note on
what it does not cover (``ConsistencyReport.notes``): logged rows from before a view's
Parquet log (recomputed from empty windows), a logged service the repo no longer defines
(not compared), a ``--service`` the request log holds no rows of.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cli.common import Subparsers, add_settings_args, fraction, settings_from
from cli.setting_options import add_setting_option


def register(subparsers: Subparsers) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "consistency-check",
        help="recompute logged serving requests offline and report mismatch rates per feature",
        description="Needs serving started with request logging (setting request_log_dir).",
    )
    add_settings_args(parser, kafka=False)
    add_setting_option(parser, "--request-log", setting="request_log_dir", what="request log directory")
    parser.add_argument("--service", action="append", default=None, help="only this service (repeatable)")
    parser.add_argument(
        "--max-mismatch-rate",
        type=fraction,
        default=0.0,
        help="exit 1 when any feature exceeds this rate (default 0)",
    )
    parser.set_defaults(handler=_check)


def _check(args: argparse.Namespace) -> int:
    from engine.definitions import load_repo
    from engine.exceptions import ConfigError
    from engine.offline.consistency import check_request_log

    settings = settings_from(args)
    directory = args.request_log or settings.request_log_dir
    if not directory:
        raise ConfigError(
            "no request log to check: the setting request_log_dir is empty and --request-log was not given",
            hint="add `request_log_dir: .streamfeat/requests` to streamfeat.yaml, restart `streamfeat serve`, "
            "send it some requests, then run this again",
        )
    if not Path(directory).is_dir():
        raise ConfigError(
            f"request log directory {directory} does not exist: nothing to check",
            hint="check --request-log / request_log_dir; "
            "`streamfeat serve` creates it when it publishes its first logged rows",
        )
    repo = load_repo(settings.repo_path)
    wanted = {name: True for name in args.service} if args.service else None
    reports = check_request_log(repo, directory, settings.log_uri, wanted)
    if not reports:
        print(
            f"no logged requests under {directory} yet: `streamfeat serve` publishes its request log "
            "every 5,000 rows or 5 s after a row arrives, and when it stops"
        )
        return 0
    worst = 0.0
    for report in reports:
        print(report.render())
        worst = max([worst, *(f.rate for f in report.features)])
    return 1 if worst > args.max_mismatch_rate else 0
