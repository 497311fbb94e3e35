"""A backfill killed with ``kill -9`` leaves its slice directory behind; the next backfill
removes it, and only directories whose owning process is gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.offline.spill_directory import (
    OWNER_FILE,
    PREFIX,
    make_spill_directory,
    owner_line,
    process_start,
    remove_stale_spill_directories,
)

ROOT = Path(__file__).resolve().parents[2]
# A process that makes its slice directory the way a backfill does, says where, and waits to be killed.
_MAKE_AND_WAIT = (
    "import sys, time\n"
    "from engine.offline.spill_directory import make_spill_directory\n"
    "directory = make_spill_directory(sys.argv[1])\n"
    "(directory / 'slice-000000.arrow').write_bytes(b'rows')\n"
    "print(directory, flush=True)\n"
    "time.sleep(600)\n"
)


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A live process of this user that is not the test itself."""
    child = subprocess.Popen(["sleep", "600"])
    try:
        yield child
    finally:
        child.kill()
        child.wait()


def _killed_backfill_directory(parent: Path) -> Path:
    child = subprocess.Popen(
        [sys.executable, "-c", _MAKE_AND_WAIT, str(parent)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert child.stdout is not None
    directory = Path(child.stdout.readline().strip())
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stdout.close()
    return directory


def _fake_directory(parent: Path, pid: int, owner: str | None) -> Path:
    directory = parent / f"{PREFIX}{pid}-abc123"
    directory.mkdir(parents=True)
    (directory / "slice-000000.arrow").write_bytes(b"rows")
    if owner is not None:
        (directory / OWNER_FILE).write_text(owner, encoding="utf-8")
    return directory


def test_the_next_backfill_removes_the_directory_of_a_killed_one(tmp_path: Path) -> None:
    left_behind = _killed_backfill_directory(tmp_path)
    assert left_behind.parent == tmp_path and left_behind.name.startswith(PREFIX)
    assert (left_behind / "slice-000000.arrow").is_file(), "kill -9 leaves the slice files behind"

    mine = make_spill_directory(str(tmp_path))

    assert not left_behind.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [mine.name]
    assert (mine / OWNER_FILE).read_text(encoding="utf-8") == owner_line(os.getpid())


def test_directories_of_running_processes_are_kept(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    own = make_spill_directory(str(tmp_path))
    running = _fake_directory(tmp_path, sleeper.pid, owner_line(sleeper.pid))

    assert remove_stale_spill_directories(tmp_path) == []
    assert own.is_dir() and running.is_dir()


def test_a_reused_process_id_does_not_keep_a_stale_directory(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    started = process_start(sleeper.pid)
    if started is None:
        pytest.skip("no /proc: process start times are not known here")
    host = owner_line(sleeper.pid).split()[2]
    reused = _fake_directory(tmp_path, sleeper.pid, f"{sleeper.pid} {int(started) + 1} {host}\n")

    assert remove_stale_spill_directories(tmp_path) == [(reused, sleeper.pid)]
    assert not reused.exists()


def test_directories_it_cannot_vouch_for_are_left_alone(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    pid = dead.pid
    host = owner_line(pid).split()[2]
    kept = [
        _fake_directory(tmp_path, pid, None),  # no owner file: an older version's, or being made
        _fake_directory(tmp_path / "other-host", pid, f"{pid} - another-{host}\n"),
        _fake_directory(tmp_path / "other-pid", pid, f"{pid + 1} - {host}\n"),
        _fake_directory(tmp_path / "garbled", pid, "not an owner line\n"),
    ]
    not_ours = tmp_path / "elsewhere" / f"{PREFIX}{pid}-link"
    not_ours.parent.mkdir()
    not_ours.symlink_to(kept[0], target_is_directory=True)
    plain_file = tmp_path / "file" / f"{PREFIX}{pid}-file"
    plain_file.parent.mkdir()
    plain_file.write_text(owner_line(pid), encoding="utf-8")

    for parent in {p.parent for p in [*kept, not_ours, plain_file]}:
        assert remove_stale_spill_directories(parent) == []
    assert all(p.is_dir() for p in kept) and not_ours.is_symlink() and plain_file.is_file()
