"""The broker's JVMs: found by their marker in /proc, stopped with SIGTERM then SIGKILL,
and reaped when this process started them."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from engine.exceptions import KafkaBrokerError
from engine.kafka_local.config import MARKER, BrokerConfig
from engine.processes import command_line, pid_runs, proc_stat_fields

# JVMs started by this Python process: kept so that stopping them also reaps them
# (an unreaped child stays a zombie, which os.kill(pid, 0) reports as alive).
CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def is_zombie(pid: int) -> bool:
    fields = proc_stat_fields(pid)
    return fields is not None and fields[:1] == ["Z"]


def is_our_broker(pid: int, config: BrokerConfig) -> bool:
    """Alive, not a zombie, and its command line names our marker and our properties file."""
    child = CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        CHILDREN.pop(pid, None)
        return False
    if is_zombie(pid):
        return False
    args = command_line(pid)
    return MARKER in args and str(config.properties_file) in args


def marked_pids(config: BrokerConfig) -> list[int]:
    """Every live JVM of this data directory, whether or not the pid file knows it."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and is_our_broker(int(entry.name), config):
            pids.append(int(entry.name))
    return sorted(pids)


def read_pid(config: BrokerConfig) -> int | None:
    try:
        text = config.pid_file.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def gone(pid: int) -> bool:
    child = CHILDREN.get(pid)
    if child is not None:
        if child.poll() is None:
            return False
        CHILDREN.pop(pid, None)
        return True
    return not pid_runs(pid) or is_zombie(pid)


def wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not gone(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def terminate(pid: int, timeout_s: float) -> None:
    """SIGTERM (Kafka shuts down cleanly on it), then SIGKILL if it lingers."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if wait_gone(pid, timeout_s):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if not wait_gone(pid, 10.0):
        raise KafkaBrokerError(f"Kafka process {pid} survived SIGKILL", hint=f"inspect it with ps -p {pid}")
