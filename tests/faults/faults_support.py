"""Shared by the fault-injection tests: trial counts, a served data dir, `streamfeat` as a child."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from engine.definitions import load_repo
from engine.ports import free_port
from engine.processes import stop_process_group
from tests.serving.serving_support import REPO_DIR, make_events, write_rocksdb

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
    done = subprocess.run(
        streamfeat_cmd("apply", "--repo", str(REPO_DIR), "--data-dir", str(data), "--shards", "4"),
        capture_output=True,
        text=True,
        timeout=120,
    )
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
def serve(data: Path, *extra: str, env: Mapping[str, str] | None = None, repo: Path = REPO_DIR) -> Iterator[Served]:
    """``streamfeat serve`` of ``repo`` as a real process on a free loopback port."""
    port = free_port()
    stderr = data.parent / f"serve-{port}.stderr"
    with stderr.open("wb") as err:
        proc = subprocess.Popen(
            streamfeat_cmd("serve", "--repo", str(repo), "--data-dir", str(data), "--port", str(port), *extra),
            stdout=subprocess.DEVNULL,
            stderr=err,
            env={**os.environ, **(env or {})},
            start_new_session=True,
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
