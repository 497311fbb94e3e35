"""What a multi-process run costs, summed over its processes: CPU seconds of the whole
process tree (the broker is not in it) and bytes its processes sent each other.

CPU is the resource usage ``wait4`` reports for the command: its own and that of every
descendant it waited for (``streamfeat run --processes N`` waits for its children), so
the whole tree is counted and nothing else: not the ``ss`` sampler below, which costs
about 10 ms of CPU per sample and, counted through ``RUSAGE_CHILDREN`` as before,
added about 0.15 CPU seconds per second of wall time to every figure (more to the
slower multi-process runs). Bytes between processes come from the kernel's TCP
counters (``ss -tinp``): every established socket of the tree whose ends are both on
this machine and neither is the broker's port, sampled every ``interval`` seconds, the
largest ``bytes_sent`` seen per socket, summed. Bytes sent in the last ``interval``
before a socket closes can be missed, so the figure is a slight underestimate.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from collections.abc import Sequence
from typing import Any

from benchmarks.common import ROOT, BenchError, tree_pids

_PID = re.compile(r"pid=(\d+)")
_SENT = re.compile(r"bytes_sent:(\d+)")


def _port(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def peer_bytes_sample(pids: set[int], broker_port: int) -> dict[tuple[str, str], int]:
    """``bytes_sent`` of every established TCP socket of ``pids`` not talking to the broker."""
    out = subprocess.run(["ss", "-tinpH", "state", "established"], capture_output=True, text=True, timeout=10).stdout
    found: dict[tuple[str, str], int] = {}
    head = ""
    for line in out.splitlines():
        if not line[:1].isspace():  # a socket's first line; its details follow, indented
            head = line
            continue
        fields = head.split()
        sent = _SENT.search(line)
        if len(fields) < 4 or sent is None or not {int(p) for p in _PID.findall(head)} & pids:
            continue
        local, peer = fields[2], fields[3]
        if broker_port not in (_port(local), _port(peer)):
            found[(local, peer)] = int(sent.group(1))
    return found


def run_costed(cmd: Sequence[str], *, timeout: float, broker_port: int, interval: float = 0.05) -> dict[str, Any]:
    """Run ``cmd`` to completion: wall seconds, CPU seconds of its tree, bytes between its processes."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        list(cmd),
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    sent: dict[tuple[str, str], int] = {}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for key, value in peer_bytes_sample(set(tree_pids(proc.pid)), broker_port).items():
                sent[key] = max(sent.get(key, 0), value)
            done.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    assert proc.stderr is not None
    errors: list[str] = []
    reader = threading.Thread(target=lambda: errors.append(proc.stderr.read() if proc.stderr else ""), daemon=True)
    reader.start()
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
        done.set()
        sampler.join()
    reader.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    if seconds >= timeout:
        raise BenchError(f"{' '.join(cmd[:4])} did not finish within {timeout:.0f} s")
    if proc.returncode != 0:
        raise BenchError(f"{' '.join(cmd[:5])} exited {proc.returncode}:\n{''.join(errors)[-2000:]}")
    cpu_s = usage.ru_utime + usage.ru_stime
    return {"seconds": seconds, "cpu_s": cpu_s, "peer_bytes": sum(sent.values())}
