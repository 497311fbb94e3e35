"""Every process of a cluster must run the same dataflow: a step that refuses to go on
when two processes were started with settings that must agree (the feature views and
their fingerprints, the shard count, the state backup, the online table, the source).

Each process contributes one item, its own settings, through a source partition only it
lists (Bytewax builds a partition on a worker that listed it); all items meet under one
key in one worker, which compares them. This runs inside the Bytewax cluster once it has
formed, so it compares exactly the processes of this run, never a stale record of an
earlier one. A mismatch raises :class:`ClusterSettingsError` naming the setting, the
two processes and both values; the process that raises fails, and the cluster with it.

Nothing is applied before the check: once every process's settings agree, the comparing
worker sends :data:`SETTINGS_AGREE` to every shard, and a shard holds its batches back
until it has received it (dataflows/stream.py).
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass
from typing import Any, Protocol

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from dataflows.exceptions import ClusterSettingsError


class _JobSettings(Protocol):
    """What the check reads of a ``StreamJob`` (kept structural: no import cycle)."""

    @property
    def source(self) -> Any: ...
    @property
    def views(self) -> tuple[Any, ...]: ...
    @property
    def shards(self) -> int: ...
    @property
    def changelog(self) -> bool: ...
    @property
    def redis_url(self) -> str | None: ...
    @property
    def state_dir(self) -> Any: ...


@dataclass(frozen=True)
class ProcessSettings:
    """One process's settings that every process of the cluster must share."""

    process: str  # who, for the message: host, pid and data directory
    values: tuple[tuple[str, str], ...]  # (setting, value), in a fixed order

    def __post_init__(self) -> None:
        if not isinstance(self.process, str) or not self.process:
            raise TypeError(f"ProcessSettings: field 'process': expected a non-empty str, got {self.process!r}")


def process_settings(job: _JobSettings) -> ProcessSettings:
    views = ", ".join(f"{v.name}={bytes(v.fingerprint).hex()}" for v in sorted(job.views, key=lambda v: v.name))
    return ProcessSettings(
        process=f"{socket.gethostname()} pid {os.getpid()} (state {job.state_dir})",
        values=(
            ("source topic", str(job.source.topic)),
            ("shards (streamfeat apply --shards)", str(job.shards)),
            ("state_backup", "kafka" if job.changelog else "off"),
            ("online table", "redis" if job.redis_url else "rocksdb"),
            ("feature views (name=fingerprint; streamfeat apply)", views),
        ),
    )


@dataclass(frozen=True)
class SettingsAgree:
    """Sent to every shard once all processes' settings were compared and agree."""

    processes: int


@dataclass(frozen=True)
class _Compared:
    first: ProcessSettings
    seen: int


class SettingsComparer:
    """The ``stateful_map`` step: keep the first process's settings, refuse any other that
    differs, and say so once all ``processes`` have reported."""

    def __init__(self, processes: int) -> None:
        if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
            raise ValueError(f"SettingsComparer: field 'processes': expected an int >= 1, got {processes!r}")
        self.processes = processes

    def __call__(self, state: _Compared | None, seen: ProcessSettings) -> tuple[_Compared, SettingsAgree | None]:
        if state is None:
            state = _Compared(seen, 0)
        else:
            try:
                compare_settings(state.first, seen)
            except ClusterSettingsError as exc:
                # Bytewax reports a failed step of a cluster only as a thread panic: say why first.
                print(f"streamfeat run: {exc}\n  hint: {exc.hint}", file=sys.stderr, flush=True)
                raise
        state = _Compared(state.first, state.seen + 1)
        return state, SettingsAgree(self.processes) if state.seen == self.processes else None


def compare_settings(first: ProcessSettings, seen: ProcessSettings) -> None:
    """Refuse ``seen`` when it differs from ``first`` in any setting, naming it."""
    for (name, mine), (_, theirs) in zip(first.values, seen.values, strict=True):
        if mine != theirs:
            raise ClusterSettingsError(
                f"the cluster's processes were started with different settings: {name}: "
                f"{first.process} has {mine!r}, {seen.process} has {theirs!r}",
                hint="start every process with the same settings, the same feature repo and the same "
                "applied plan (streamfeat apply), then restart all of them (docs/deploy.md)",
            )


class _SettingsPartition(StatefulSourcePartition[ProcessSettings, None]):
    def __init__(self, settings: ProcessSettings) -> None:
        self._pending: ProcessSettings | None = settings

    def next_batch(self) -> list[ProcessSettings]:
        if self._pending is None:
            raise StopIteration
        item, self._pending = self._pending, None
        return [item]

    def snapshot(self) -> None:
        return None


class SettingsSource(FixedPartitionedSource[ProcessSettings, None]):
    """One partition per process, listed only by that process's workers."""

    def __init__(self, settings: ProcessSettings) -> None:
        self.settings = settings
        self._part = f"settings-{socket.gethostname()}-{os.getpid()}"

    def list_parts(self) -> list[str]:
        return [self._part]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _SettingsPartition:
        return _SettingsPartition(self.settings)
