"""``streamfeat run --processes N``'s parent stops its children when it is told to stop:
on SIGTERM (a service manager) as on Ctrl-C. Before, SIGTERM ended the parent at once and
left the children running, still holding the shards' RocksDB locks, so the next run failed
with "cannot open for writing: ... LOCK"."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# A child that runs until SIGINT, as the dataflow processes do (engine/shutdown.py).
CHILD = "import signal, time\nsignal.signal(signal.SIGINT, lambda *a: exit(0))\nwhile True: time.sleep(0.05)\n"
SUPERVISOR = f"""
import subprocess, sys
from cli.run_cmd import _supervise
children = [subprocess.Popen([sys.executable, "-c", {CHILD!r}]) for _ in range(2)]
print(" ".join(str(c.pid) for c in children), flush=True)
try:
    _supervise(children)
except KeyboardInterrupt:
    sys.exit(130)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:  # a zombie has exited
        return stat.read().split()[2] != "Z"


def test_sigterm_to_the_parent_stops_every_child() -> None:
    with subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR], cwd=ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True
    ) as parent:
        children: list[int] = []
        try:
            assert parent.stdout is not None
            children = [int(pid) for pid in parent.stdout.readline().split()]
            assert len(children) == 2 and all(map(_alive, children))
            time.sleep(0.3)  # the supervisor is waiting on its children
            parent.send_signal(signal.SIGTERM)
            assert parent.wait(timeout=30) == 130
            deadline = time.monotonic() + 10
            while any(map(_alive, children)) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not any(map(_alive, children)), "children left running after the parent stopped"
        finally:
            if parent.poll() is None:
                os.killpg(parent.pid, signal.SIGKILL)
            for pid in filter(_alive, children):  # a failed run of this test leaves none behind
                os.kill(pid, signal.SIGKILL)
