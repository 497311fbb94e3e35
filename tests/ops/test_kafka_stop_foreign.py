"""`streamfeat kafka stop` stops only the broker of its data directory: when something else
serves the port (a broker streamfeat did not start, one of another data directory, any other
process), it says what, naming the port and the process, and leaves it running."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import kafka_local
from engine.kafka_local import BrokerConfig
from tests.ops.test_first_hour_cli import streamfeat_in

LISTENER = (
    "import socket, sys, time\n"
    "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
    "print(s.getsockname()[1], flush=True)\n"
    "time.sleep(600)\n"
)


@pytest.fixture
def listener() -> Iterator[tuple[subprocess.Popen[str], int]]:
    """A process that is not a Kafka broker, listening on a loopback port: (process, port)."""
    child = subprocess.Popen([sys.executable, "-c", LISTENER], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        yield child, int(child.stdout.readline())
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()


def _refused(tmp_path: Path, action: str, port: int | str) -> subprocess.CompletedProcess[str]:
    """`streamfeat kafka ACTION --port PORT` by a user whose own broker directories (none)
    live under ``tmp_path``; it must fail."""
    user = {"XDG_DATA_HOME": str(tmp_path / "data"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    done = streamfeat_in(tmp_path, "kafka", action, "--port", str(port), env=user, timeout=60)
    assert done.returncode == 1, (done.stdout, done.stderr)
    return done


def test_stop_leaves_a_process_that_is_not_ours_running_and_names_it(
    tmp_path: Path, listener: tuple[subprocess.Popen[str], int]
) -> None:
    child, port = listener
    done = _refused(tmp_path, "stop", port)
    assert "Kafka stopped" not in done.stdout and "was not running" not in done.stdout
    assert (
        f"streamfeat kafka: error: nothing stopped: 127.0.0.1:{port} is served by a process that is not a "
        f"Kafka broker (pid {child.pid}: {sys.executable} -c import socket"
    ) in done.stderr, done.stderr
    assert "it is left running" in done.stderr
    assert "hint: stop it the way it was started" in done.stderr and f"`kill {child.pid}` if it is yours" in done.stderr
    assert child.poll() is None  # still alive


def test_start_on_a_port_another_process_holds_names_it(
    tmp_path: Path, listener: tuple[subprocess.Popen[str], int]
) -> None:
    child, port = listener
    done = _refused(tmp_path, "start", port)
    assert (
        f"cannot start Kafka: 127.0.0.1:{port} is already in use by a process that is not a Kafka broker "
        f"(pid {child.pid}: "
    ) in done.stderr, done.stderr
    assert child.poll() is None


@pytest.mark.kafka
def test_stop_leaves_a_broker_of_another_data_directory_running(
    tmp_path: Path, kafka_bootstrap: str, kafka_broker: BrokerConfig | None
) -> None:
    """The session's broker was started by streamfeat, but with its own data directory: a
    plain `kafka stop` on its port names that directory and the command that stops it."""
    port = kafka_bootstrap.rsplit(":", 1)[1]
    done = _refused(tmp_path, "stop", port)
    assert f"nothing stopped: 127.0.0.1:{port} is served by a Kafka broker" in done.stderr, done.stderr
    assert "it is left running" in done.stderr and "Kafka stopped" not in done.stdout
    if kafka_broker is not None:  # our session broker, not one named by $KAFKA_BOOTSTRAP
        assert f"a Kafka broker streamfeat started with another data directory ({kafka_broker.root})" in done.stderr
        assert f"`streamfeat kafka stop --port {port} --data-dir {kafka_broker.root}`" in done.stderr
        pid = kafka_local.broker_status(config=kafka_broker).pid
        assert f"pid {pid}: java" in done.stderr or f"pid {pid}: /" in done.stderr
    assert kafka_local.metadata_answers(kafka_bootstrap)  # still serving
