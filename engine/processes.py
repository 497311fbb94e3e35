"""Processes by id (whether one runs, its ``/proc`` status fields) and stopping child
processes that run in a session of their own.

Commands that start the dataflow or the server as children (``streamfeat demo``, the
benchmarks, the tests) start them with ``start_new_session=True`` so that a signal
reaches the whole process group (a Bytewax cluster, uvicorn workers).
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path


def pid_runs(pid: int) -> bool:
    """True while a process ``pid`` exists (a zombie included; another user's too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it runs
        return True
    return True


def proc_stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name, from field 3 (the state
    letter) on, or None when there is no such process or no ``/proc``."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    # Field 2 (the command name) is parenthesised and may hold spaces: split after it.
    return text[text.rfind(")") + 2 :].split()


def stop_process_group(
    proc: subprocess.Popen[bytes],
    first_signal: signal.Signals = signal.SIGINT,
    timeout_s: float = 20.0,
    kill_timeout_s: float | None = None,
) -> None:
    """Send ``first_signal`` to ``proc``'s process group; SIGKILL it if it lingers.

    Does nothing if ``proc`` already exited. ``kill_timeout_s`` bounds the wait
    after SIGKILL (None: wait as long as it takes).
    """
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, first_signal)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=kill_timeout_s)


def listening_pids(port: int) -> list[int]:
    """The processes with a TCP socket listening on ``port`` (any local address, IPv4 or
    IPv6), found through ``/proc``; empty when none, or when the owner is another user's
    process whose descriptors this one cannot read."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text(encoding="ascii").splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # local_address is HEXIP:HEXPORT; state 0A is LISTEN; field 9 is the socket's inode.
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return []
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            links = {os.readlink(fd) for fd in (entry / "fd").iterdir()}
        except OSError:  # gone, or another user's
            continue
        if links & inodes:
            pids.append(int(entry.name))
    return sorted(pids)


def command_line(pid: int) -> list[str]:
    """The arguments of process ``pid`` (``/proc/<pid>/cmdline``); empty when unknown."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]
