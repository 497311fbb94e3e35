"""Every process of a cluster must run the same dataflow: a step that refuses to go on
when two processes were started with settings that must agree (the feature views and
their fingerprints, the shard count, the state backup, the online table, the source).

Each process contributes one item, its own settings, through a source partition only it
lists (Bytewax builds a partition on a worker that listed it); all items meet under one
key in one worker, which compares them. This runs inside the Bytewax cluster once it has
formed, so it compares exactly the processes of this run, never a stale record of an
earlier one.

Once every process has reported, the comparing worker sends its verdict to every
process, through a sink partition only that process lists (:class:`VerdictSink`):

- agreement (:class:`SettingsAgree`) also goes to every shard, and a shard holds its
  batches back until it has received it (dataflows/stream.py): nothing is applied
  before the check;
- a difference (:class:`SettingsDisagree`, naming the setting, the two processes and
  both values) is printed by EVERY process, which then stops its sources; the dataflow
  ends with nothing applied and each process exits non-zero
  (dataflows/cluster_process.py). Failing the step instead would stop only the
  detecting process cleanly: the others would die of a lost connection, saying nothing.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import uuid
from dataclasses import dataclass, field
from typing import Protocol

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from dataflows.exceptions import ClusterSettingsError
from engine.definitions import StreamFeatureView
from engine.io.decoder import EventSourceLike
from engine.shutdown import STOP

SETTINGS_HINT = (
    "start every process with the same settings, the same feature repo and the same "
    "applied plan (streamfeat apply), then restart all of them (docs/deploy.md)"
)


class _JobSettings(Protocol):
    """What the check reads of a ``StreamJob`` (kept structural: no import cycle)."""

    @property
    def source(self) -> EventSourceLike: ...
    @property
    def views(self) -> tuple[StreamFeatureView, ...]: ...
    @property
    def shards(self) -> int: ...
    @property
    def shard_groups(self) -> int: ...
    @property
    def changelog(self) -> bool: ...
    @property
    def redis_url(self) -> str | None: ...
    @property
    def state_dir(self) -> object: ...  # shown in the process's description only


def _new_part() -> str:
    # Host name and pid are not unique across containers: a random name per process is.
    return f"settings-{uuid.uuid4().hex}"


@dataclass(frozen=True)
class ProcessSettings:
    """One process's settings that every process of the cluster must share."""

    process: str  # who, for the message: host, pid and data directory
    values: tuple[tuple[str, str], ...]  # (setting, value), in a fixed order
    part: str = field(default_factory=_new_part)  # its settings source and verdict partition

    def __post_init__(self) -> None:
        if not isinstance(self.process, str) or not self.process:
            raise TypeError(f"ProcessSettings: field 'process': expected a non-empty str, got {self.process!r}")
        if not isinstance(self.part, str) or not self.part:
            raise TypeError(f"ProcessSettings: field 'part': expected a non-empty str, got {self.part!r}")


def process_settings(job: _JobSettings) -> ProcessSettings:
    views = ", ".join(f"{v.name}={bytes(v.fingerprint).hex()}" for v in sorted(job.views, key=lambda v: v.name))
    return ProcessSettings(
        process=f"{socket.gethostname()} pid {os.getpid()} (state {job.state_dir})",
        values=(
            ("source topic", str(job.source.topic)),
            ("shards (streamfeat apply --shards)", str(job.shards)),
            ("shard groups (processes x --workers)", str(job.shard_groups)),
            ("state_backup", "kafka" if job.changelog else "off"),
            ("online table", "redis" if job.redis_url else "rocksdb"),
            ("feature views (name=fingerprint; streamfeat apply)", views),
        ),
    )


@dataclass(frozen=True)
class SettingsAgree:
    """Sent to every shard and every process once all processes' settings agree."""

    processes: int


@dataclass(frozen=True)
class SettingsDisagree:
    """Sent to every process when two of them differ: the first difference found."""

    message: str
    hint: str

    def error(self) -> ClusterSettingsError:
        return ClusterSettingsError(self.message, hint=self.hint)


@dataclass(frozen=True)
class Verdict:
    """What the comparer says once every process reported, and to which partitions."""

    outcome: SettingsAgree | SettingsDisagree
    parts: tuple[str, ...]  # every process's verdict partition, in Bytewax's (sorted) order


@dataclass(frozen=True)
class _Compared:
    first: ProcessSettings
    parts: tuple[str, ...]
    difference: SettingsDisagree | None


class SettingsComparer:
    """The ``stateful_map`` step: keep the first process's settings, note the first other
    that differs, and give the verdict once all ``processes`` have reported."""

    def __init__(self, processes: int) -> None:
        if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
            raise ValueError(f"SettingsComparer: field 'processes': expected an int >= 1, got {processes!r}")
        self.processes = processes

    def __call__(self, state: _Compared | None, seen: ProcessSettings) -> tuple[_Compared, Verdict | None]:
        if state is None:
            state = _Compared(seen, (), None)
        difference = state.difference
        if difference is None:
            try:
                compare_settings(state.first, seen)
            except ClusterSettingsError as exc:
                difference = SettingsDisagree(str(exc), exc.hint or SETTINGS_HINT)
        state = _Compared(state.first, (*state.parts, seen.part), difference)
        if len(state.parts) < self.processes:
            return state, None
        outcome = SettingsAgree(self.processes) if difference is None else difference
        return state, Verdict(outcome, tuple(sorted(set(state.parts))))


def compare_settings(first: ProcessSettings, seen: ProcessSettings) -> None:
    """Refuse ``seen`` when it differs from ``first`` in any setting, naming it."""
    for (name, mine), (_, theirs) in zip(first.values, seen.values, strict=True):
        if mine != theirs:
            raise ClusterSettingsError(
                f"the cluster's processes were started with different settings: {name}: "
                f"{first.process} has {mine!r}, {seen.process} has {theirs!r}",
                hint=SETTINGS_HINT,
            )


def verdict_items(verdict: Verdict | None) -> list[tuple[str, SettingsAgree | SettingsDisagree]]:
    """One item per process's verdict partition, keyed by its index (:meth:`VerdictSink.part_fn`)."""
    if verdict is None:
        return []
    return [(str(index), verdict.outcome) for index in range(len(verdict.parts))]


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

    def list_parts(self) -> list[str]:
        return [self.settings.part]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _SettingsPartition:
        return _SettingsPartition(self.settings)


_REFUSALS: list[ClusterSettingsError] = []
_REFUSALS_LOCK = threading.Lock()


def refusal() -> ClusterSettingsError | None:
    """The difference this process was told about by the comparer, if any."""
    with _REFUSALS_LOCK:
        return _REFUSALS[0] if _REFUSALS else None


def _refuse(outcome: SettingsDisagree) -> None:
    error = outcome.error()
    with _REFUSALS_LOCK:
        if _REFUSALS:
            return
        _REFUSALS.append(error)
    print(f"streamfeat run: {error}\n  hint: {error.hint}", file=sys.stderr, flush=True)
    STOP.set()  # every source of this process ends (engine/shutdown.py): nothing is applied


class _VerdictPartition(StatefulSinkPartition[SettingsAgree | SettingsDisagree, None]):
    def write_batch(self, values: list[SettingsAgree | SettingsDisagree]) -> None:
        for outcome in values:
            if isinstance(outcome, SettingsDisagree):
                _refuse(outcome)

    def snapshot(self) -> None:
        return None


class VerdictSink(FixedPartitionedSink[SettingsAgree | SettingsDisagree, None]):
    """One partition per process (the same name as its settings partition), listed only
    by that process, so every process hears the verdict."""

    def __init__(self, settings: ProcessSettings) -> None:
        self.settings = settings

    def list_parts(self) -> list[str]:
        return [self.settings.part]

    def part_fn(self, item_key: str) -> int:
        # Bytewax indexes this into the sorted set of every process's partitions,
        # the order :class:`Verdict` lists them in.
        return int(item_key)

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _VerdictPartition:
        return _VerdictPartition()
