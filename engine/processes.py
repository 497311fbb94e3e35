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
