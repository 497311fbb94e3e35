"""The redis-server fixtures: reachable on loopback, nothing persisted, and never outliving a
killed test session (their watchdog, tests/fixtures/watchdog.py, stops them)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import redis

from engine.processes import command_line, pid_runs
from tests.fixtures.redis import answers_ping
from tests.fixtures.watchdog import miniature_session, said_in_time

pytestmark = pytest.mark.redis


def test_redis_server_is_private_and_ephemeral(redis_server: str) -> None:
    assert redis_server.startswith("redis://127.0.0.1:") and redis_server.endswith("/0")
    client = redis.Redis.from_url(redis_server)
    try:
        assert client.ping()
        client.set(b"sf:probe", b"1")
        assert client.get(b"sf:probe") == b"1"
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}
        assert client.config_get("bind")["bind"] == "127.0.0.1"
    finally:
        client.close()


# A test session in miniature: starts a redis-server the way the fixtures do, then waits.
_SESSION = """
import sys, time
from pathlib import Path
from tests.fixtures.redis import RedisServer
server = RedisServer(Path(sys.argv[1]))
server.start()
print(server.port, server.proc.pid, flush=True)
time.sleep(600)
"""


def test_a_session_killed_without_teardown_leaves_no_redis_server(tmp_path: Path) -> None:
    pid = 0
    try:
        with miniature_session(_SESSION, str(tmp_path / "redis")) as (session, [port, pid]):
            assert answers_ping(port) and pid_runs(pid)

            session.kill()  # no teardown runs: only the watchdog can stop the server now
            session.wait()
            deadline = time.monotonic() + 30
            while (pid_runs(pid) or answers_ping(port)) and time.monotonic() < deadline:
                time.sleep(0.1)
            log = tmp_path / "redis" / "watchdog.log"
            said = f"stopped process {pid}: its test session ended without teardown"
            assert not pid_runs(pid) and not answers_ping(port), said_in_time(log, said, 0)
            assert said in said_in_time(log, said, deadline + 10)
    finally:
        if pid and pid_runs(pid) and "redis-server" in " ".join(command_line(pid)):
            os.kill(pid, signal.SIGKILL)
