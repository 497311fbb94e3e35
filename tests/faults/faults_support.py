"""Shared by the fault-injection tests: trial counts, a served data dir, a private redis-server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from engine.definitions import load_repo
from engine.processes import stop_process_group
from tests.fixtures.redis import _answers_ping, _find_binary, _free_port
from tests.serving.serving_state import REPO_DIR, make_events, write_rocksdb

SERVE_STARTUP_S = 60.0


def long_mode() -> bool:
    """``STREAMFEAT_FAULTS=long`` selects the long trials (docs/reliability.md)."""
    return os.environ.get("STREAMFEAT_FAULTS", "").strip().lower() == "long"


def trials(short: int, long: int) -> int:
    return long if long_mode() else short


def streamfeat_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "cli", *args]


def applied_data_dir(root: Path) -> Path:
    """A data dir with an applied plan of the example repo and RocksDB state of known events."""
    data = root / "data"
    done = subprocess.run(streamfeat_cmd("apply", "--repo", str(REPO_DIR), "--data-dir", str(data), "--shards", "4"),
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise AssertionError(f"streamfeat apply failed:\n{done.stderr}")
    write_rocksdb(data / "state", load_repo(REPO_DIR).views, make_events(), meta_for=("user_spend",))
    return data


@dataclass(frozen=True)
class Served:
    url: str
    process: subprocess.Popen[bytes]
    stderr: Path


@contextmanager
def serve(data: Path, *extra: str, env: Mapping[str, str] | None = None) -> Iterator[Served]:
    """``streamfeat serve`` as a real process on a free loopback port."""
    port = _free_port()
    stderr = data.parent / f"serve-{port}.stderr"
    with stderr.open("wb") as err:
        proc = subprocess.Popen(
            streamfeat_cmd("serve", "--repo", str(REPO_DIR), "--data-dir", str(data), "--port", str(port), *extra),
            stdout=subprocess.DEVNULL, stderr=err, env={**os.environ, **(env or {})}, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVE_STARTUP_S
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"streamfeat serve exited with {proc.returncode}:\n{stderr.read_text()}")
            try:
                if httpx.get(url + "/healthz", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"streamfeat serve did not answer within {SERVE_STARTUP_S} s")
            time.sleep(0.1)
        yield Served(url, proc, stderr)
    finally:
        stop_process_group(proc, signal.SIGTERM, timeout_s=20, kill_timeout_s=10)


class RedisProcess:
    """A redis-server this test may stop and restart on the same port with the same data.

    The append-only file is fsynced on every write, so a restart brings the data back.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.binary = _find_binary()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [
            self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "yes",
            "--appendfsync", "always", "--dir", str(self.workdir), "--logfile", str(self.workdir / "redis.log"),
            "--daemonize", "no",
        ]
        self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20.0
        while not _answers_ping(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"redis-server on port {self.port} did not start (exit {self.proc.poll()})")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
        self.proc = None


def free_port_pair() -> int:
    """A free loopback port whose successor is free too (a broker and its controller)."""
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = int(a.getsockname()[1])
        if port < 65000:
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    raise RuntimeError("no two consecutive free loopback ports")
