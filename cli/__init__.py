"""The ``streamfeat`` command line.

Each subcommand lives in its own module under ``cli`` and exposes
``register(subparsers)``, which adds its parser and sets ``handler`` to a function
``(argparse.Namespace) -> int`` returning the exit code.

Exit codes: 0 success, 1 the operation failed, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from cli.setting_options import SettingsHelpParser
from engine.exceptions import StreamfeatError

# Subcommand modules, in the order --help lists them.
_SUBCOMMAND_MODULES: tuple[str, ...] = (
    "cli.init_cmd",
    "cli.kafka_cmd",
    "cli.generate_cmd",
    "cli.plan_cmd",
    "cli.list_cmd",
    "cli.run_cmd",
    "cli.demo_cmd",
    "cli.serve_cmd",
    "cli.backfill_cmd",
    "cli.training_cmd",
    "cli.score_batch_cmd",
    "cli.consistency_cmd",
    "cli.status_cmd",
    "cli.quality_cmd",
    "cli.import_feast_cmd",
    "cli.shadow_cmd",
)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("streamfeat")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown (not installed)"


def docs_dir() -> Path:
    """Where README.md and docs/ are: beside the installed wheel's data (pyproject's
    data-files), else the source checkout this package runs from."""
    installed = Path(sys.prefix) / "share" / "doc" / "streamfeat"
    if (installed / "README.md").is_file():
        return installed
    return Path(__file__).resolve().parents[1]


# Errors of a user's path, reported in one line; any other OSError is a bug and keeps its traceback.
_PATH_ERRNOS = frozenset(
    {errno.ENOENT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST, errno.EISDIR, errno.ENOSPC}
)


def build_parser() -> argparse.ArgumentParser:
    parser = SettingsHelpParser(
        prog="streamfeat",
        description="Streaming-first feature engine: Kafka -> Bytewax -> RocksDB tiles -> serving.",
        epilog="New here? `streamfeat init my-project` creates a project with the fraud example "
        "and prints the next commands. `streamfeat COMMAND --help` describes each command. "
        f"README.md and the docs/*.md that messages name are in {docs_dir()}.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module_name in _SUBCOMMAND_MODULES:
        module = importlib.import_module(module_name)
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except StreamfeatError as exc:
        print(f"streamfeat {args.command}: error: {exc}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"streamfeat {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`streamfeat list | head`): stop quietly like other Unix tools.
        # stdout is pointed at /dev/null so the interpreter's final flush cannot fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except OSError as exc:  # after BrokenPipeError, itself an OSError
        if exc.errno not in _PATH_ERRNOS or exc.filename is None:
            raise
        # A path the user gave (or its parent) is missing, read-only or not a directory.
        print(f"streamfeat {args.command}: error: {exc.filename}: {exc.strerror}", file=sys.stderr)
        print(
            "hint: check the paths given (--data-dir, --repo, --out, streamfeat.yaml) and their permissions",
            file=sys.stderr,
        )
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
