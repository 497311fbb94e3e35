"""``streamfeat run --processes N``'s parent stops its children when it is told to stop:
on SIGTERM (a service manager) as on Ctrl-C. Before, SIGTERM ended the parent at once and
left the children running, still holding the shards' RocksDB locks, so the next run failed
with "cannot open for writing: ... LOCK"."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from cli.run_report import RunReporter
from engine.run_counts import RunCounts

ROOT = Path(__file__).resolve().parents[2]

# A child that runs until SIGINT, as the dataflow processes do (engine/shutdown.py).
CHILD = "import signal, time\nsignal.signal(signal.SIGINT, lambda *a: exit(0))\nwhile True: time.sleep(0.05)\n"
SUPERVISOR = f"""
import subprocess, sys
from cli.run_cmd import _supervise
children = [subprocess.Popen([sys.executable, "-c", {CHILD!r}]) for _ in range(2)]
print(" ".join(str(c.pid) for c in children), flush=True)
try:
    sys.exit(_supervise(children))
except KeyboardInterrupt:
    sys.exit(130)
"""
# Children as `streamfeat run` starts them: told the parent's pid, stopping on SIGTERM.
ORPHAN_CHILD = (
    "import signal, time\n"
    "signal.signal(signal.SIGTERM, lambda *a: exit(0))\n"
    "from dataflows.cluster_process import stop_with_parent\n"
    "stop_with_parent()\n"
    "while True: time.sleep(0.05)\n"
)
KILLED_PARENT = f"""
import os, subprocess, sys, time
env = {{**os.environ, "STREAMFEAT_RUN_PARENT_PID": str(os.getpid())}}
children = [subprocess.Popen([sys.executable, "-c", {ORPHAN_CHILD!r}], env=env) for _ in range(2)]
print(" ".join(str(c.pid) for c in children), flush=True)
time.sleep(60)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:  # a zombie has exited
        return stat.read().split()[2] != "Z"


@contextlib.contextmanager
def _parent_and_children(script: str) -> Iterator[tuple[subprocess.Popen[str], list[int]]]:
    """``script`` run as a parent printing its two children's pids; whatever is left of
    them is killed at the end (a failed test leaves none behind)."""
    with subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True
    ) as parent:
        children: list[int] = []
        try:
            assert parent.stdout is not None
            children.extend(int(pid) for pid in parent.stdout.readline().split())
            yield parent, children
        finally:
            if parent.poll() is None:
                os.killpg(parent.pid, signal.SIGKILL)
            for pid in filter(_alive, children):
                os.kill(pid, signal.SIGKILL)


def _all_gone(children: list[int]) -> bool:
    deadline = time.monotonic() + 10
    while any(map(_alive, children)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not any(map(_alive, children))


def test_sigterm_to_the_parent_stops_every_child() -> None:
    with _parent_and_children(SUPERVISOR) as (parent, children):
        assert len(children) == 2 and all(map(_alive, children))
        time.sleep(0.3)  # the supervisor is waiting on its children
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=30) == 0  # a graceful stop, as with one process
        assert _all_gone(children), "children left running after the parent stopped"


def test_children_stop_when_the_parent_is_killed() -> None:
    """kill -9 of `run --processes N`'s parent left the children running, writing the
    shards unsupervised and holding their locks: they now get a SIGTERM when it dies."""
    with _parent_and_children(KILLED_PARENT) as (parent, children):
        time.sleep(1.0)  # the children have set their parent-death signal
        assert len(children) == 2 and all(map(_alive, children))
        parent.kill()
        parent.wait(timeout=10)
        assert _all_gone(children), "children left running after the parent was killed"


def test_the_summary_of_a_run_whose_process_failed_says_failed() -> None:
    """A child that died (killed, or a traceback) ended `run --processes N` with exit 1 and a
    summary saying "run finished", as after a normal end: the summary now says so."""
    counts = RunCounts(read=5, dead_letters={}, applied={"v": 5}, next_offsets={})
    reporter = RunReporter("t", "127.0.0.1:1", out=io.StringIO(), counts=lambda: counts)
    failed = reporter.summary(caught_up=False, interrupted=False, failed=True)
    assert failed.startswith("run failed: read 5 records from 't'"), failed
    assert reporter.summary(caught_up=False, interrupted=False).startswith("run finished: ")
    assert reporter.summary(caught_up=False, interrupted=True, failed=True).startswith("run stopped: ")
