"""``streamfeat init DIR``: scaffold a project with the fraud example and a streamfeat.yaml.

The example repo is copied as the package ``feature_defs`` (its on-demand views name
their transforms as ``feature_defs.transforms:...``, so the package name must stay).
Existing files are never overwritten.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from cli.common import Subparsers

STREAMFEAT_YAML = """\
# streamfeat settings (flags and STREAMFEAT_* environment variables override these).
repo: feature_defs            # the feature repo package
data_dir: .streamfeat         # plan, state shards, Parquet log
kafka_bootstrap: 127.0.0.1:9092
state_shards: 8               # fixed at the first `streamfeat apply`
batch_size: 5000
online: rocksdb               # rocksdb | redis (then set redis_url)
# redis_url: redis://127.0.0.1:6379/0
# request_log_dir: .streamfeat/requests   # log served requests (streamfeat consistency-check)
# state_backup: kafka         # durable shards in <topic>.changelog (docs/deploy.md)
serve_host: 127.0.0.1
serve_port: 8000
metrics_port: 9464            # dataflow metrics; process i of `run --processes N` uses +i
"""

NEXT_STEPS = """\
next steps:
  cd {dir}
  streamfeat kafka start             # a local broker at kafka_bootstrap (downloads Kafka once)
  streamfeat apply                   # record the plan and create the state shards
  streamfeat generate                # one day of demo transactions, the last one now
  streamfeat run --until-caught-up   # apply them (without the flag: keep tailing the topic)
  streamfeat serve                   # then open http://127.0.0.1:8000/ui
  streamfeat generate --live --rate 200   # keep events coming while `streamfeat run` tails
  streamfeat list                    # the sources, views, services and features
  streamfeat status
"""


def register(subparsers: Subparsers) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "init",
        help="create a project directory with the fraud example and a streamfeat.yaml",
        description="Scaffold DIR/feature_defs (the fraud example) and DIR/streamfeat.yaml.",
    )
    parser.add_argument("dir", type=Path, help="project directory (created if missing)")
    parser.set_defaults(handler=_init)


def example_repo() -> Path:
    """Directory of the bundled fraud example (the ``feature_defs`` package)."""
    import feature_defs

    return Path(feature_defs.__file__).resolve().parent


def scaffold(target: Path) -> list[Path]:
    """Create the project in ``target``; returns the files written.

    Raises ``ConfigError`` naming the conflicting path when a file already exists.
    """
    from engine.exceptions import ConfigError

    repo_dir = target / "feature_defs"
    yaml_path = target / "streamfeat.yaml"
    for existing in (repo_dir, yaml_path):
        if existing.exists():
            raise ConfigError(
                f"init: {existing} already exists",
                hint="choose an empty directory; init never overwrites files",
            )
    if target.exists() and not target.is_dir():
        raise ConfigError(f"init: {target} is a file, not a directory", hint="pass a new or empty directory")
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"init: cannot create the directory {target}: {exc.strerror or exc}",
            hint="pass a directory where you can write",
        ) from None
    shutil.copytree(example_repo(), repo_dir, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    yaml_path.write_text(STREAMFEAT_YAML, encoding="utf-8")
    written = sorted(p for p in repo_dir.rglob("*") if p.is_file())
    return [*written, yaml_path]


def _init(args: argparse.Namespace) -> int:
    written = scaffold(args.dir)
    for path in written:
        print(f"created {path}")
    print(NEXT_STEPS.format(dir=args.dir))
    return 0
