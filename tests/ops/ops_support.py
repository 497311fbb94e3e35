"""A small real pipeline for the operations tests: topic, repo copy, apply, dataflow process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from engine.generate import GeneratorConfig, produce_events
from engine.processes import stop_process_group
from tests.engine.streaming_support import copy_repo, streamfeat

START_MS = 1_780_000_000_000


@dataclass(frozen=True)
class Pipeline:
    repo: Path
    data: Path
    bootstrap: str
    topic: str

    @property
    def common(self) -> list[str]:
        return ["--repo", str(self.repo), "--data-dir", str(self.data), "--bootstrap", self.bootstrap]


def make_pipeline(tmp_path: Path, bootstrap: str, topic: str, shards: int = 4) -> Pipeline:
    repo = copy_repo(tmp_path, topic)
    data = tmp_path / "data"
    streamfeat("apply", "--repo", str(repo), "--data-dir", str(data), "--shards", str(shards))
    return Pipeline(repo, data, bootstrap, topic)


def produce(p: Pipeline, events: int, seed: int, *, start_ms: int = START_MS, rate: float = 50.0) -> GeneratorConfig:
    config = GeneratorConfig(
        events=events,
        users=300,
        merchants=20,
        seed=seed,
        start_ms=start_ms,
        rate=rate,
        jitter_ms=400_000,
        malformed_fraction=0.02,
    )
    produce_events(config, p.topic, p.bootstrap)
    return config


@contextmanager
def running_dataflow(p: Pipeline, metrics_port: int, *extra: str) -> Iterator[subprocess.Popen[bytes]]:
    """``streamfeat run`` tailing the topic in a process group of its own; SIGINT at exit."""
    env = {**os.environ, "STREAMFEAT_METRICS_PORT": str(metrics_port)}
    # stderr to a file: an unread pipe fills up and blocks the child.
    log_path = p.data / f"run-{metrics_port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_file = log_path.open("wb")
    child = subprocess.Popen(
        [sys.executable, "-m", "cli", "run", *p.common, "--batch-size", "1000", *extra],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log_file,
        start_new_session=True,
    )
    try:
        yield child
    finally:
        stop_process_group(child, signal.SIGINT, timeout_s=30)
        log_file.close()


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a metrics endpoint: (name, sorted labels) -> value ({} if down)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as reply:
            text = reply.read().decode()
    except OSError:
        return {}
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def wait_until(condition: object, timeout_s: float, what: str, interval_s: float = 0.5) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
