"""The README's "Your first feature in five minutes", run as written.

The commands come from the README text itself (the fenced block after the
``first-feature`` marker), so the README cannot drift from what works. They run in
bash from a copy of this checkout's files (a fresh clone), with ``HOME`` in a
temporary directory: the virtualenv, the project, and the broker's data
(``~/.local/share/streamfeat``) all land there. Only the Kafka jar cache is the
user's own (``STREAMFEAT_CACHE_DIR``), so the broker is not downloaded again.

Two adjustments keep it from colliding with anything else on the machine, both
through documented settings rather than edits to the commands: the broker and the
feature server get free ports (``STREAMFEAT_KAFKA_BOOTSTRAP``,
``STREAMFEAT_SERVE_PORT``; the curl URL's ``127.0.0.1:8000`` is pointed at the
server's port), and the dataflow's metrics endpoint is off.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engine import kafka_local
from engine.ports import free_port, free_port_pair

pytestmark = [pytest.mark.slow, pytest.mark.kafka]

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- first-feature:"
DEFAULT_SERVER = "127.0.0.1:8000"


def readme_commands(readme: str) -> str:
    """The shell block that follows the first-feature marker, verbatim."""
    start = readme.index(MARKER)
    block = re.search(r"```sh\n(.*?)```", readme[start:], re.DOTALL)
    assert block is not None, "the first-feature marker must be followed by a ```sh block"
    return block.group(1)


def _copy_checkout(target: Path) -> None:
    """The checkout's tracked and new (not ignored) files, as a fresh clone would have them."""
    listed = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            (target / name).write_bytes(source.read_bytes())


def _answers(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith('{"service"')]


def test_readme_first_feature_runs_as_written(tmp_path: Path) -> None:
    script = readme_commands((ROOT / "README.md").read_text(encoding="utf-8"))
    assert "streamfeat kafka start" in script and "curl" in script
    kafka_port, serve_port = free_port_pair(), free_port()
    script = script.replace(DEFAULT_SERVER, f"127.0.0.1:{serve_port}")
    clone, home = tmp_path / "clone", tmp_path / "home"
    clone.mkdir()
    home.mkdir()
    _copy_checkout(clone)
    (tmp_path / "first-feature.sh").write_text("set -e\n" + script, encoding="utf-8")
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("STREAMFEAT_", "VIRTUAL_ENV", "PYTHON", "XDG_"))
    }
    # The virtualenv of the test run must not shadow the one the README creates.
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if not p.startswith(str(Path(sys.prefix))))
    env.update(
        {
            "HOME": str(home),
            "STREAMFEAT_CACHE_DIR": str(kafka_local.cache_root()),
            "STREAMFEAT_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka_port}",
            "STREAMFEAT_SERVE_PORT": str(serve_port),
            "STREAMFEAT_METRICS_PORT": "0",
        }
    )
    shell = subprocess.Popen(
        ["bash", str(tmp_path / "first-feature.sh")],
        cwd=clone,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    broker = kafka_local.BrokerConfig(
        port=kafka_port, data_dir=home / ".local" / "share" / "streamfeat" / "kafka" / str(kafka_port)
    )
    try:
        stdout, stderr = shell.communicate(timeout=900)
    finally:
        if shell.poll() is None:
            os.killpg(shell.pid, signal.SIGKILL)
            shell.wait()
        # Whatever happened, the broker the README started is stopped.
        stopped = kafka_local.stop_broker(config=broker)
    assert shell.returncode == 0, f"stdout:\n{stdout}\nstderr:\n{stderr}"
    assert not stopped, "the README's `streamfeat kafka stop` left the broker running"

    # The broker lived where the README says, under the user's data directory.
    assert (broker.root / "logs" / "server.log").is_file()
    assert f"Kafka started at 127.0.0.1:{kafka_port}" in stdout
    # `run --until-caught-up` printed what it applied, and nothing went to the dead letters.
    summaries = [line for line in stdout.splitlines() if line.startswith("run caught up:")]
    assert len(summaries) == 2, stdout
    assert all("dead letters 0 " in line and "applied merchant_activity" in line for line in summaries)
    assert "Traceback" not in stderr and "panicked" not in stderr, stderr

    answers = _answers(stdout)
    assert len(answers) == 2, stdout
    for answer in answers:
        (row,) = answer["features"]
        (statuses,) = answer["metadata"]["statuses"]
        assert set(statuses.values()) == {"PRESENT"}, statuses
        for name in ("amount_sum_15m", "amount_count_15m", "amount_sum_1d", "merchant_txn_count_1h"):
            assert row[name] > 0, (name, row)
        assert all(not view["stale"] for view in answer["metadata"]["views"].values())
    # Ten seconds of live events at the current time reached the 15-minute window.
    before, after = (a["features"][0]["amount_count_1d"] for a in answers)
    assert after > before
