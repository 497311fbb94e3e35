"""The temporary directory of a backfill's slice files, and removing the ones killed runs left.

A backfill writes its history slices under ``streamfeat-backfill-<pid>-*`` in the system
temporary directory (``TMPDIR``) and removes it at the end. ``kill -9`` (or a power cut)
gives it no chance to, so each new backfill first removes the directories of earlier
runs whose process is gone. A directory is removed only when every one of these holds,
so a running backfill's files (on this host or another sharing the directory) and
anything not made here are never touched:

- its name has the prefix and a process id, and it is a real directory (not a link)
  owned by the current user;
- its ``owner`` file, written right after the directory was made, names that process
  id and this host;
- that process no longer runs, or the process running under that id now started at
  another time than the one recorded (the id was reused).

A directory without a readable ``owner`` file (made by an older version, or still being
made) is left alone.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import stat
import tempfile
from pathlib import Path

from engine.processes import pid_runs, proc_stat_fields

PREFIX = "streamfeat-backfill-"
OWNER_FILE = "owner"

_log = logging.getLogger(__name__)


def make_spill_directory(parent: str | None = None) -> Path:
    """A new directory for this backfill's slice files under ``parent`` (default: the
    system temporary directory), after removing the stale ones there. Raises OSError."""
    root = Path(parent) if parent is not None else Path(tempfile.gettempdir())
    for removed, pid in remove_stale_spill_directories(root):
        _log.warning("removed %s, left behind by backfill process %d, which no longer runs", removed, pid)
    directory = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=root))
    (directory / OWNER_FILE).write_text(owner_line(os.getpid()), encoding="utf-8")
    return directory


def owner_line(pid: int) -> str:
    """The ``owner`` file's text for process ``pid`` of this host: ``<pid> <start> <host>``,
    where ``<start>`` is the process's start time in clock ticks since boot ("-" when the
    system does not tell)."""
    return f"{pid} {process_start(pid) or '-'} {socket.gethostname()}\n"


def process_start(pid: int) -> str | None:
    """Start time of process ``pid`` in clock ticks since boot (``/proc/<pid>/stat``
    field 22), or None when there is no such process or no ``/proc``."""
    fields = proc_stat_fields(pid)
    return fields[19] if fields is not None and len(fields) > 19 else None


def remove_stale_spill_directories(parent: Path) -> list[tuple[Path, int]]:
    """Remove the slice directories under ``parent`` whose backfill process is gone (see
    the module docstring); returns each removed directory with its process id."""
    removed: list[tuple[Path, int]] = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    for entry in entries:
        pid = _stale_owner(entry)
        if pid is not None:
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append((Path(entry.path), pid))
    return removed


def _stale_owner(entry: os.DirEntry[str]) -> int | None:
    """The process id of a slice directory whose owner is gone, else None."""
    name_pid = _pid_in_name(entry.name)
    if name_pid is None or name_pid == os.getpid():
        return None
    try:
        info = entry.stat(follow_symlinks=False)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            return None
        recorded = (Path(entry.path) / OWNER_FILE).read_text(encoding="utf-8").split()
    except OSError:
        return None
    if len(recorded) != 3 or recorded[0] != str(name_pid) or recorded[2] != socket.gethostname():
        return None
    if pid_runs(name_pid) and (recorded[1] == "-" or process_start(name_pid) in (None, recorded[1])):
        return None
    return name_pid


def _pid_in_name(name: str) -> int | None:
    if not name.startswith(PREFIX):
        return None
    head = name[len(PREFIX) :].split("-", 1)[0]
    return int(head) if head.isdigit() and head.isascii() else None
