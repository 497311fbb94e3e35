"""The README's "Your first feature in five minutes" and "Your first hour", run as written.

The commands come from the README text itself (the fenced blocks after the
``first-feature`` and ``first-hour`` markers, one script), so the README cannot drift
from what works. They run in
bash from a copy of this checkout's files (a fresh clone), with ``HOME`` in a
temporary directory: the virtualenv, the project, and the broker's data
(``~/.local/share/streamfeat``) all land there. Only the Kafka jar cache is the
user's own (``STREAMFEAT_CACHE_DIR``), so the broker is not downloaded again.

Two adjustments keep it from colliding with anything else on the machine, both
through documented settings rather than edits to the commands: the broker and the
feature server get free ports (``STREAMFEAT_KAFKA_BOOTSTRAP``,
``STREAMFEAT_SERVE_PORT``; the curl URL's ``127.0.0.1:8000`` and kcat's
``127.0.0.1:9092`` are pointed at them), and the dataflow's metrics endpoint is off.
kcat is the Debian package ``make system-deps`` installs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from engine import kafka_local
from engine.ports import free_port, free_port_pair

pytestmark = [pytest.mark.slow, pytest.mark.kafka]

ROOT = Path(__file__).resolve().parents[2]
MARKERS = ("<!-- first-feature:", "<!-- first-hour:")
DEFAULT_SERVER = "127.0.0.1:8000"
DEFAULT_BROKER = "127.0.0.1:9092"
RUN_UNTIL_CAUGHT_UP = "streamfeat run --until-caught-up"


def readme_commands(readme: str, marker: str = MARKERS[0]) -> str:
    """The shell block that follows ``marker``, verbatim."""
    start = readme.index(marker)
    block = re.search(r"```sh\n(.*?)```", readme[start:], re.DOTALL)
    assert block is not None, f"the marker {marker!r} must be followed by a ```sh block"
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
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    script = "".join(readme_commands(readme, marker) for marker in MARKERS)
    assert "streamfeat kafka start" in script and "curl" in script
    if "kcat " in script and shutil.which("kcat") is None:
        pytest.fail("the README sends an event with kcat, which is not installed: `make system-deps` installs it")
    kafka_port, serve_port = free_port_pair(), free_port()
    script = script.replace(DEFAULT_SERVER, f"127.0.0.1:{serve_port}").replace(
        DEFAULT_BROKER, f"127.0.0.1:{kafka_port}"
    )
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
    assert len(summaries) == script.count(RUN_UNTIL_CAUGHT_UP), stdout
    assert all(
        re.search(r"; dead letters none(, lag [\d,]+)?$", line) and "applied merchant_activity" in line
        for line in summaries
    ), summaries
    # The one event sent with kcat was read and applied, not dead-lettered.
    assert summaries[-1].startswith("run caught up: read 1 record from"), summaries[-1]
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

    # "Your first hour": status, the backfilled day of history and a point-in-time training set.
    assert "dead letters in transactions.dlq: 0" in stdout, stdout
    assert "backfilled 20,000 history events" in stdout, stdout
    project = home / "fraud-demo"
    train = pl.read_parquet(project / "train.parquet")
    spine = pl.read_csv(project / "labels.csv")
    assert train.height == spine.height == 1
    assert train.get_column("user_id").to_list() == spine.get_column("user_id").to_list()
    assert train.get_column("amount_count_1d").item() > 0, train.row(0, named=True)

    # The wheel carries the docs that messages and --help name, laid out as in the source.
    shipped = home / "streamfeat-try" / "share" / "doc" / "streamfeat"
    assert sorted(p.name for p in (shipped / "docs").glob("*.md")) == sorted(
        p.name for p in (ROOT / "docs").glob("*.md")
    )
    assert (shipped / "README.md").read_text(encoding="utf-8") == readme
    # And the license text its metadata declares (Apache-2.0).
    (license_file,) = (home / "streamfeat-try").glob(
        "lib/python*/site-packages/streamfeat-*.dist-info/licenses/LICENSE"
    )
    assert license_file.read_text(encoding="utf-8") == (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in license_file.read_text(encoding="utf-8")
