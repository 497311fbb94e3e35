"""The local broker manager: start/status/stop are idempotent and status tells the truth."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from cli import main
from engine import kafka_local
from engine.exceptions import KafkaBrokerError
from engine.kafka_local import BrokerConfig
from engine.ports import free_ports
from tests.fixtures.watchdog import miniature_session, said_in_time

pytestmark = pytest.mark.kafka


def _jvms_for(config: BrokerConfig) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if kafka_local.MARKER.encode() in args and str(config.properties_file).encode() in args:
            pids.append(int(entry.name))
    return pids


def test_session_broker_answers_and_start_is_idempotent(
    kafka_broker: BrokerConfig | None, kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert kafka_local.metadata_answers(kafka_bootstrap)
    if kafka_broker is None:
        pytest.skip(f"the session uses $KAFKA_BOOTSTRAP={kafka_bootstrap}, not a broker it started")
    status = kafka_local.broker_status(config=kafka_broker)
    assert status.running and status.bootstrap == kafka_bootstrap
    again = kafka_local.start_broker(config=kafka_broker)
    assert not again.started_by_us and again.pid == status.pid
    ensured = kafka_local.ensure_broker(config=kafka_broker)
    assert not ensured.started_by_us
    cli = ["--port", str(kafka_broker.port), "--data-dir", str(kafka_broker.root)]
    assert main(["kafka", "status", *cli]) == 0
    assert kafka_bootstrap in capsys.readouterr().out


# A test session in miniature: starts its broker the way the fixture does, then waits.
_SESSION = """
import sys, time
from pathlib import Path
from tests.fixtures.session_broker import start_session_broker
broker = start_session_broker(lambda: Path(sys.argv[1]))
print(broker.config.port, broker.config.resolved_controller_port, flush=True)
time.sleep(600)
"""


def test_a_session_killed_without_teardown_leaves_no_broker(tmp_path: Path) -> None:
    config: BrokerConfig | None = None
    try:
        with miniature_session(_SESSION, str(tmp_path / "broker")) as (session, [port, controller]):
            config = BrokerConfig(port=port, controller_port=controller, data_dir=tmp_path / "broker")
            assert kafka_local.broker_status(config=config).running
            assert len(_jvms_for(config)) == 1

            session.kill()  # no teardown runs: only the watchdog can stop the broker now
            session.wait()
            deadline = time.monotonic() + kafka_local.DEFAULT_STOP_TIMEOUT_S + 10
            while _jvms_for(config) and time.monotonic() < deadline:
                time.sleep(0.2)
            log = config.root / "watchdog.log"
            assert _jvms_for(config) == [], log.read_text()
            said = "its test session ended without teardown"
            assert said in said_in_time(log, said, deadline + 10)
    finally:
        if config is not None:
            kafka_local.stop_broker(config=config)


def test_lifecycle_on_a_private_port(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port, controller = free_ports(2)
    config = BrokerConfig(port=port, controller_port=controller, data_dir=tmp_path / "broker")
    cli = ["--port", str(port), "--data-dir", str(config.root)]

    assert not kafka_local.broker_status(config=config).running
    assert main(["kafka", "status", *cli]) == 3
    assert "not running" in capsys.readouterr().out

    try:
        handle = kafka_local.start_broker(config=config)
        assert handle.started_by_us and handle.pid is not None
        assert handle.bootstrap == f"127.0.0.1:{port}"
        assert config.pid_file.read_text().strip() == str(handle.pid)
        status = kafka_local.broker_status(config=config)
        assert status.running and status.pid == handle.pid
        assert main(["kafka", "status", *cli]) == 0

        # start when running: says so and succeeds, same process.
        assert main(["kafka", "start", *cli, "--controller-port", str(controller)]) == 0
        assert "already running" in capsys.readouterr().out
        assert _jvms_for(config) == [handle.pid]

        # A lost pid file does not hide the running JVM, and start repairs the file.
        config.pid_file.unlink()
        assert kafka_local.broker_status(config=config).pid == handle.pid
        assert main(["kafka", "status", *cli]) == 0
        assert not kafka_local.start_broker(config=config).started_by_us
        assert config.pid_file.read_text().strip() == str(handle.pid)

        # stop: SIGTERM, gone, pid file removed, status says stopped.
        assert main(["kafka", "stop", *cli]) == 0
        assert f"pid {handle.pid}" in capsys.readouterr().out
        assert _jvms_for(config) == []
        assert not config.pid_file.exists()
        assert main(["kafka", "status", *cli]) == 3
        assert main(["kafka", "stop", *cli]) == 0  # stopping a stopped broker is fine
        assert "was not running" in capsys.readouterr().out

        # Restart on the formatted storage, then crash it: status must not trust the pid file.
        second = kafka_local.start_broker(config=config)
        assert second.started_by_us and second.pid != handle.pid
        assert second.pid is not None
        os.kill(second.pid, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while kafka_local.broker_status(config=config).running and time.monotonic() < deadline:
            time.sleep(0.2)
        crashed = kafka_local.broker_status(config=config)
        assert not crashed.running and not crashed.pid_alive
        assert "stale pid file" in crashed.detail
        assert main(["kafka", "status", *cli]) == 3
    finally:
        kafka_local.stop_broker(config=config)
    assert _jvms_for(config) == []
    assert not config.pid_file.exists()


def test_storage_formatted_for_other_ports_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "broker"
    (root / "data").mkdir(parents=True)
    (root / "data" / "meta.properties").write_text("cluster.id=x\n")
    (root / "ports.json").write_text('{"port": 1, "controller_port": 2}\n')
    port, controller = free_ports(2)
    config = BrokerConfig(port=port, controller_port=controller, data_dir=root)
    with pytest.raises(KafkaBrokerError, match="formatted for ports"):
        kafka_local.start_broker(config=config)
    assert _jvms_for(config) == []


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"port": 0}, "port"),
        ({"port": 9092, "controller_port": 9092}, "controller_port"),
        ({"version": "3.9.0"}, "version"),
        ({"heap": "lots"}, "heap"),
    ],
)
def test_config_validation_names_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=f"BrokerConfig.{field}"):
        BrokerConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.slow
def test_classpath_is_downloaded_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A fresh cache directory; Maven's own repository (~/.m2) makes this quick after the first run.
    monkeypatch.setenv("STREAMFEAT_CACHE_DIR", str(tmp_path / "cache"))
    messages: list[str] = []
    lib = kafka_local.ensure_kafka_libs(progress=messages.append)
    assert lib == tmp_path / "cache" / kafka_local.DEFAULT_VERSION / "lib"
    assert (lib / f"kafka_2.13-{kafka_local.DEFAULT_VERSION}.jar").is_file()
    assert any(p.name.startswith("log4j-core-") for p in lib.glob("*.jar"))
    stamp = lib.parent / ".complete"
    assert f"kafka_2.13-{kafka_local.DEFAULT_VERSION}.jar" in stamp.read_text().splitlines()
    assert len(messages) == 1 and "downloading" in messages[0]
    assert kafka_local.ensure_kafka_libs(progress=messages.append) == lib
    assert len(messages) == 1  # the stamp short-circuits the second call
    assert not list(lib.parent.glob("lib.partial-*"))
