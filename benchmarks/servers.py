"""Start and stop the HTTP servers the serving and freshness benchmarks measure, and
drive load at them with wrk (or the Python fallback) from a separate process."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from benchmarks.common import PY, ROOT, BenchError, wait_http
from engine.ports import free_port
from engine.processes import stop_process_group

PEERS = Path(__file__).resolve().parent / "peers"


@contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """Debian's redis-server on a free loopback port, no persistence; yields its URL once
    it answers PING, and stops it on exit."""
    from engine.state.online_redis import RedisOnlineTable

    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with RedisOnlineTable(url) as probe:
                    probe.refresh()  # a PING: the server is listening
                break
            except Exception:  # not up yet; anything else shows after the deadline
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextmanager
def server(
    cmd: Sequence[str],
    health_path: str,
    *,
    env: dict[str, str] | None = None,
    port: int,
    cwd: Path = ROOT,
    wait: bool = True,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server child in its own session; kill its whole process group on exit."""
    log = tempfile.NamedTemporaryFile(prefix="bench_server_", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(
        list(cmd),
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        try:
            if wait:
                wait_http(f"http://127.0.0.1:{port}{health_path}", timeout=120, proc=proc)
            else:
                time.sleep(1.0)
                if proc.poll() is not None:
                    raise BenchError(f"{' '.join(cmd[:5])} exited {proc.returncode} at start")
        except BenchError as exc:
            tail = Path(log.name).read_text(errors="replace")[-2000:]
            raise BenchError(f"{exc}\nserver log tail:\n{tail}") from exc
        yield proc
    finally:
        stop_process_group(proc, signal.SIGTERM, timeout_s=15, kill_timeout_s=15)
        log.close()
        os.unlink(log.name)


def peak_rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds so far of process ``pid`` and its live descendants
    (``feast serve`` answers from a worker child), all threads."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        fields = _stat(current)
        if fields is not None:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        todo.extend(children.get(current, []))
    return total


def load(port: int, path: str, bodies: Sequence[bytes], *, seconds: float, connections: int = 16) -> dict[str, Any]:
    """Keep-alive POST load for ``seconds``; returns requests/s and latency percentiles (ms)."""
    with tempfile.NamedTemporaryFile("wb", suffix=".jsonl", delete=False) as fh:
        fh.write(b"\n".join(bodies) + b"\n")
        bodies_file = fh.name
    try:
        wrk = shutil.which("wrk")
        if wrk:
            cmd = [
                wrk,
                f"-t{min(2, connections)}",
                f"-c{connections}",
                f"-d{max(1, round(seconds))}s",
                "-s",
                str(PEERS / "wrk_report.lua"),
                f"http://127.0.0.1:{port}{path}",
            ]
            tool = "wrk"
        else:
            cmd = [
                PY,
                "-m",
                "benchmarks.peers.loadgen",
                "127.0.0.1",
                str(port),
                path,
                bodies_file,
                str(connections),
                str(seconds),
            ]
            tool = "python-asyncio"
        done = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            cwd=ROOT,
            env={**os.environ, "WRK_BODIES": bodies_file, "PYTHONPATH": str(ROOT)},
        )
    finally:
        os.unlink(bodies_file)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        raise BenchError(f"load generator {tool} failed ({done.returncode}): {done.stderr[-1000:]}")
    raw = orjson.loads(lines[-1])
    pct = {k: v / 1000 for k, v in raw["percentiles_us"].items()}
    return {
        "tool": tool,
        "connections": connections,
        "requests": raw["requests"],
        "requests_per_s": raw["requests"] / (raw["duration_us"] / 1e6),
        "errors": raw["errors"],
        "non_2xx": raw["non_2xx"],
        "p50_ms": pct["50"],
        "p90_ms": pct["90"],
        "p99_ms": pct["99"],
        "percentiles_ms": pct,
    }


__all__ = ["cpu_seconds", "free_port", "load", "peak_rss_kb", "server"]
