"""Helpers every benchmark shares: machine facts, run statistics, child processes, topics.

Each measured system runs in a child process that prints one JSON object as its last
stdout line; the harness only parses it, so a peer never shares an interpreter (or a
GIL, or an allocator) with the harness.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


class BenchError(RuntimeError):
    """A benchmark child failed or printed no result; the message carries its stderr tail."""


@dataclass(frozen=True)
class Size:
    """One benchmark size; ``runs`` repetitions of every measured system."""

    name: str
    runs: int

    def __post_init__(self) -> None:
        if self.runs < 1:
            raise ValueError(f"Size {self.name!r}: runs expected >= 1, got {self.runs}")


def machine_info() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        model = platform.processor()
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for pkg in ("streamfeat", "bytewax", "rocksdict", "confluent-kafka", "fastapi", "uvicorn", "polars", "numpy"):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "load_avg_at_start": list(os.getloadavg()),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "shared_machine": True,
    }


def summarize(values: Sequence[float]) -> dict[str, float | int]:
    """Median, min and max of repeated runs (the machine is shared: single runs lie)."""
    if not values:
        raise ValueError("summarize: expected at least one value, got none")
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
        "runs": len(values),
    }


def own_peak_rss_kb() -> int:
    """VmHWM of this process: the peak resident set, read before exit."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def tree_pids(pid: int) -> list[int]:
    """A process and its descendants (those alive now)."""
    found: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        found.append(p)
        todo.extend(int(c) for c in children)
    return found


def tree_rss_kb(pid: int) -> int:
    """Current RSS of a process and its descendants (for multi-process children)."""
    total = 0
    for p in tree_pids(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def emit(result: dict[str, Any]) -> None:
    """A child's last stdout line: its result as JSON."""
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    sys.stdout.flush()


def run_child(cmd: Sequence[str], *, timeout: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run a child program and parse the JSON object on its last stdout line."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=full_env)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = "\n".join(done.stderr.strip().splitlines()[-20:])
        raise BenchError(f"{' '.join(cmd[:4])} exited {done.returncode} without a result:\n{tail}")
    parsed: dict[str, Any] = orjson.loads(lines[-1])
    return parsed


def repeat(runs: int, once: Callable[[int], dict[str, Any]]) -> list[dict[str, Any]]:
    return [once(i) for i in range(runs)]


def bootstrap() -> tuple[str, Callable[[], None]]:
    """A broker address and a cleanup that stops the broker only if we started it."""
    from engine import kafka_local

    configured = os.environ.get("KAFKA_BOOTSTRAP")
    if configured:
        return configured, lambda: None
    handle = kafka_local.ensure_broker(kafka_local.DEFAULT_PORT)

    def stop() -> None:
        if handle.started_by_us:
            kafka_local.stop_broker(kafka_local.DEFAULT_PORT)

    return handle.bootstrap, stop


def new_topic(bootstrap_servers: str, prefix: str, partitions: int = 3) -> str:
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    topic = f"{prefix}-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap_servers, "log_level": 0})
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[topic].result(30)
    return topic


def delete_topic(bootstrap_servers: str, topic: str) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap_servers, "log_level": 0})
    try:
        admin.delete_topics([topic], operation_timeout=30)[topic].result(30)
    except Exception as exc:
        print(f"warning: could not delete topic {topic}: {exc}", file=sys.stderr)


def wait_http(url: str, timeout: float = 60.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Poll a GET url until 200 (servers take a moment to import and bind)."""
    import urllib.request

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"server for {url} exited with {proc.returncode} before answering")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except Exception as exc:
            last = exc
        time.sleep(0.2)
    raise BenchError(f"{url} did not answer 200 within {timeout:.0f} s (last error: {last})")


def run_sampled(
    cmd: Sequence[str], *, timeout: float, env: dict[str, str] | None = None, interval: float = 0.05
) -> tuple[float, int, str]:
    """Run a child to completion; (wall seconds, peak RSS of its process tree in kB, stderr tail).

    The tree is sampled (multi-process children have no single VmHWM), so a peak
    shorter than ``interval`` can be missed.
    """
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    started = time.perf_counter()
    proc = subprocess.Popen(
        list(cmd), cwd=ROOT, env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    peak = 0
    deadline = started + timeout
    while proc.poll() is None:
        peak = max(peak, tree_rss_kb(proc.pid))
        if time.perf_counter() > deadline:
            proc.kill()
            proc.wait()
            raise BenchError(f"{' '.join(cmd[:4])} did not finish within {timeout:.0f} s")
        time.sleep(interval)
    seconds = time.perf_counter() - started
    stderr = proc.stderr.read() if proc.stderr else ""
    if proc.returncode != 0:
        raise BenchError(f"{' '.join(cmd[:5])} exited {proc.returncode}:\n{stderr[-2000:]}")
    return seconds, peak, stderr[-2000:]


def streamfeat_cli(*args: str, timeout: float = 1800, env: dict[str, str] | None = None) -> None:
    """Run ``streamfeat ARGS`` (``python -m cli``) to completion, ``env`` added to this
    process's environment; BenchError with its stderr tail if it fails."""
    done = subprocess.run(
        [PY, "-m", "cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **env} if env else None,
    )
    if done.returncode != 0:
        raise BenchError(f"streamfeat {' '.join(args[:2])} failed: {done.stderr[-2000:]}")


def copy_repo(dest: Path, topic: str) -> Path:
    """A copy of the example repo whose transactions source reads ``topic``."""
    import shutil

    target = dest / f"fraud_repo_{uuid.uuid4().hex[:8]}"
    shutil.copytree(ROOT / "feature_defs", target, ignore=shutil.ignore_patterns("__pycache__"))
    sources = target / "sources.py"
    text = sources.read_text()
    if 'topic="transactions"' not in text:
        raise BenchError('feature_defs/sources.py no longer declares topic="transactions"; update copy_repo')
    sources.write_text(text.replace('topic="transactions"', f'topic="{topic}"'))
    return target


def dir_size_mb(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1024 / 1024, 2)


def check_size(bench: str, sizes: Mapping[str, object], size: str) -> None:
    if size not in sizes:
        raise ValueError(f"{bench}: size expected one of {sorted(sizes)}, got {size!r}")
