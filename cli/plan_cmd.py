"""``streamfeat plan`` and ``streamfeat apply``: diff a feature repo against the applied plan."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from cli.common import Subparsers, add_settings_args, settings_from
from cli.setting_options import add_setting_option
from engine.exceptions import ConfigError

if TYPE_CHECKING:  # imported when the command runs, so `streamfeat --help` stays fast
    from engine.definitions import FeatureRepo
    from engine.plan import AppliedPlan
    from engine.state.rocksdb_store import RocksDBStore


def register(subparsers: Subparsers) -> None:
    for command, handler, help_text in (
        ("plan", _plan, "show what apply would change (new, changed, removed; what needs a backfill)"),
        ("apply", _apply, "validate the repo and record it as the applied plan"),
    ):
        parser: argparse.ArgumentParser = subparsers.add_parser(command, help=help_text, description=help_text)
        add_settings_args(parser, kafka=False)
        parser.add_argument(
            "--plan-file",
            type=Path,
            default=None,
            help="plan file (default: plan.json in the data directory, see --data-dir)",
        )
        if command == "apply":
            add_setting_option(
                parser, "--shards", setting="state_shards", what="state shards; only at the first apply", type=int
            )
        parser.set_defaults(handler=handler)


def _paths(args: argparse.Namespace) -> tuple[Path, Path, int, bool]:
    """The repo, the plan file, the configured shard count, and whether the state holds anything yet."""
    from engine.state.layout import holds_state

    settings = settings_from(args)
    plan_file: Path = args.plan_file if args.plan_file is not None else settings.plan_file
    return settings.repo_path, plan_file, settings.state_shards, holds_state(settings.state_dir)


def _shards(args: argparse.Namespace, configured: int, previous: AppliedPlan | None) -> int | None:
    """The shard count ``plan`` shows and ``apply`` records: an explicit --shards must match
    the applied count; the configured value only seeds the first apply."""
    explicit = getattr(args, "shards", None)  # apply has --shards; plan shows the configured count
    if explicit is not None:
        return int(explicit)
    return configured if previous is None else None


def _require_views(repo: FeatureRepo, repo_path: Path, command: str) -> None:
    """A repo without views is a wrong --repo far more often than an intent: applying it
    would remove every view from the plan."""
    if not repo.views:
        raise ConfigError(
            f"the repo at {repo_path} defines no feature views: nothing to {command}",
            hint="point --repo (setting repo) at the directory holding your definitions, e.g. --repo feature_defs",
        )


def _plan(args: argparse.Namespace) -> int:
    from engine.definitions.repo import load_repo
    from engine.plan import compute_plan, load_applied_plan

    repo_path, plan_file, configured_shards, has_state = _paths(args)
    repo = load_repo(repo_path)  # RepoValidationError -> exit 2 with every error listed
    _require_views(repo, repo_path, "plan")
    previous = load_applied_plan(plan_file)
    plan = compute_plan(repo, previous, shards=_shards(args, configured_shards, previous), has_state=has_state)
    print(f"repo {repo_path} against {plan_file}:")
    print(plan.render())
    return 0


def _apply(args: argparse.Namespace) -> int:
    from engine.definitions.repo import load_repo
    from engine.plan import apply_plan, load_applied_plan
    from engine.state.layout import read_meta_shards
    from engine.state.writer_lock import state_writer

    settings = settings_from(args)
    repo_path, plan_file, configured_shards, has_state = _paths(args)
    repo = load_repo(repo_path)
    _require_views(repo, repo_path, "apply")
    # A dataflow or backfill holding the state would go on writing the old definitions,
    # and the join time of a new view is only fixed once nothing applies events.
    with state_writer(settings.path(settings.data_dir), "streamfeat apply"):
        previous = load_applied_plan(plan_file)
        shards = _shards(args, configured_shards, previous)
        held = previous.shards if previous else read_meta_shards(settings.state_dir)  # the state's own count
        with _JoinTimes(settings.state_dir, held, has_state) as times:
            # Without a plan file (lost, or started over) the shards say what they hold.
            stored = times.stored([v.fingerprint for v in repo.views]) if previous is None else None
            plan, applied = apply_plan(
                repo, plan_file, shards=shards, has_state=has_state, join_time=times.join_time, stored=stored
            )
        print(plan.render())
        print(f"applied: wrote {plan_file} (format {applied.format_version}, {applied.shards} shards)")
        fresh = {fp: j for fp, j in sorted(applied.joins.items()) if previous is None or fp not in previous.joins}
        for fp, join in fresh.items():
            print(join_note(join.view, repo.view(join.view).source.name, join.at_ms))
            if settings.log_uri:
                _retire_log(settings.log_uri, fp, join.view)
    return 0


def _retire_log(log_uri: str, fingerprint_hex: str, view: str) -> None:
    """A fingerprint applied again starts from empty state: its log from before is moved aside."""
    from engine.clock import wall_clock_ms
    from engine.io.log_format import retire_fingerprint

    for moved in retire_fingerprint(log_uri, fingerprint_hex, wall_clock_ms()):
        print(f"view {view!r} was applied before with this definition: its earlier Parquet log moved to {moved}")


def join_note(view: str, source: str, at_ms: int) -> str:
    """What a view joining a running stream holds, and the backfill that completes it."""
    from engine.timefmt import iso_utc

    at = iso_utc(at_ms)
    return (
        f"view {view!r} joins the stream of source {source!r} at {at}: its state holds the events from then on, "
        f"and features whose windows reach before it are served INCOMPLETE; fill its history (events before "
        f"{at}) with `streamfeat backfill --source {source} --views {view} --from <history>` (its --end is {at})"
    )


class _JoinTimes:
    """What ``apply`` reads of the local state shards, opened once: ``join_time(topic)``, one
    past the newest event time they applied from ``topic`` (None without any), and
    ``stored(fingerprints)``, the views they hold."""

    def __init__(self, state_dir: Path, shards: int | None, has_state: bool) -> None:
        self._state_dir, self._shards, self._has_state = state_dir, shards, has_state
        self._store: RocksDBStore | None = None

    def __enter__(self) -> _JoinTimes:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._store is not None:
            self._store.close()

    def _opened(self) -> RocksDBStore | None:
        if not self._has_state or self._shards is None:
            return None
        if self._store is None:
            from engine.state.rocksdb_store import RocksDBStore

            self._store = RocksDBStore(self._state_dir, self._shards)
        return self._store

    def join_time(self, topic: str) -> int | None:
        store = self._opened()
        if store is None:
            return None
        newest = [
            record.top_ts_at_applied[0]
            for partition in store.partitions
            for record in partition.read_offsets(topic).values()
            if record.top_ts_at_applied
        ]
        return max(newest) + 1 if newest else None

    def stored(self, fingerprints: list[bytes]) -> dict[str, int | None]:
        """Fingerprint (hex) -> its pending join, for every view whose records the state holds."""
        from engine.apply import stored_views

        store = self._opened()
        if store is None:
            return {}
        found = stored_views(store.partitions, fingerprints)
        return {fp.hex(): s.pending_join for fp, s in found.items() if s.holds_events or s.pending_join is not None}
