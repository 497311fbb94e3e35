"""One writing command per state directory.

RocksDB lets one process open a shard for writing; a second ``streamfeat run`` on the same
project found that out only inside the dataflow, where the refusal came with a Rust panic
and its backtrace. The commands that write the shards (``run``, ``backfill``) first take
this lock, a ``flock`` on ``<data_dir>/writer.lock`` that names its holder, so the second
one stops at once with one line saying which command holds the state. The kernel releases
a ``flock`` when its process ends, ``kill -9`` included, so a crash leaves no stale lock.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from engine.clock import wall_clock_ms
from engine.state.exceptions import StateError
from engine.timefmt import time_text

LOCK_FILE_NAME = "writer.lock"


class StateBusyError(StateError):
    """Another command is writing this state directory."""


@contextmanager
def state_writer(data_dir: Path, command: str) -> Iterator[None]:
    """Hold the project's data directory (its state shards and Parquet log) for ``command``
    (for example ``streamfeat run``) until the block ends; raise StateBusyError naming the
    holder when another process holds it. The lock lives beside the plan, not in the state
    directory, so a command that fails before writing leaves no state directory behind."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / LOCK_FILE_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "another process"
            raise StateBusyError(
                f"the state in {data_dir} is being written by {holder}",
                hint="one `streamfeat run` or `streamfeat backfill` writes a project's state at a time: "
                "stop that one first (Ctrl-C), or give this one its own data_dir; "
                "serve, status and training-set read alongside it",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"`{command}` (pid {os.getpid()}, since {time_text(wall_clock_ms())})\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock
