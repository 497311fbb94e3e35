"""What a multi-process run costs, summed over its processes: CPU seconds of the whole
process tree (the broker is not in it) and bytes its processes sent each other.

CPU comes from ``getrusage(RUSAGE_CHILDREN)`` around the run: every descendant is waited
for by its parent (``streamfeat run --processes N`` waits for its children), so their
user + system time is all counted. Bytes between processes come from the kernel's TCP
counters (``ss -tinp``): every established socket of the tree whose ends are both on
this machine and neither is the broker's port, sampled every ``interval`` seconds, the
largest ``bytes_sent`` seen per socket, summed. Bytes sent in the last ``interval``
before a socket closes can be missed, so the figure is a slight underestimate.
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import threading
import time
from collections.abc import Sequence
from typing import Any

from benchmarks.common import ROOT, BenchError, tree_pids

_PID = re.compile(r"pid=(\d+)")
_SENT = re.compile(r"bytes_sent:(\d+)")


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


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
    cpu_before = _children_cpu_s()
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
    try:
        _, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise BenchError(f"{' '.join(cmd[:4])} did not finish within {timeout:.0f} s") from None
    finally:
        done.set()
        sampler.join()
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise BenchError(f"{' '.join(cmd[:5])} exited {proc.returncode}:\n{stderr[-2000:]}")
    return {"seconds": seconds, "cpu_s": _children_cpu_s() - cpu_before, "peer_bytes": sum(sent.values())}
