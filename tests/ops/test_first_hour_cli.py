"""What a new user meets on the command line: version, list/describe, init's next steps,
generate around the current time, and `streamfeat run`'s messages (real broker, real
subprocesses): one clear line for a missing broker or topic, a loud dead-letter warning,
a summary of what was applied, and a clean stop."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest

from cli import build_parser, main
from cli.init_cmd import NEXT_STEPS, example_repo
from engine import kafka_local
from engine.clock import wall_clock_ms
from engine.definitions import load_repo
from engine.io.batches import dlq_topic_for
from engine.ports import free_port
from tests.ops.ops_support import scrape, total, wait_until

ROOT = Path(__file__).resolve().parents[2]
# What a Kafka client or Bytewax prints when its noise escapes: librdkafka log lines
# (``%3|1700000000.123|FAIL|...``), Python tracebacks and Rust panics.
NOISE = re.compile(
    r"^%\d\|\d+\.\d+\||Traceback \(most recent call last\)|panicked at|RUST_BACKTRACE|error connecting to worker",
    re.M,
)


def _user_env(metrics_port: int = 0) -> dict[str, str]:
    """This environment without streamfeat settings, so the project's streamfeat.yaml decides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMFEAT_")}
    env.update({"PYTHONPATH": str(ROOT), "STREAMFEAT_METRICS_PORT": str(metrics_port)})
    return env


@contextmanager
def tailing_run(project: Path, stderr: Any, metrics_port: int = 0) -> Iterator[subprocess.Popen[str]]:
    """``streamfeat run`` tailing the topic, in a process group of its own; killed if the
    test leaves it running."""
    child = subprocess.Popen(
        [sys.executable, "-m", "cli", "run"],
        cwd=project,
        env=_user_env(metrics_port),
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        start_new_session=True,
    )
    try:
        yield child
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        for pipe in (child.stdout, child.stderr):
            if pipe is not None:
                pipe.close()


def stop_with_ctrl_c(child: subprocess.Popen[str]) -> tuple[str, str]:
    os.killpg(child.pid, signal.SIGINT)
    stdout, stderr = child.communicate(timeout=60)
    return stdout, stderr or ""


def streamfeat_in(
    project: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``streamfeat ARGS`` as a user runs it, from the project directory."""
    child_env = {**_user_env(), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        cwd=project,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def project_on_topic(tmp_path: Path, topic: str, bootstrap: str) -> Path:
    """``streamfeat init`` + apply, with the example source reading ``topic`` at ``bootstrap``."""
    project = tmp_path / "proj"
    assert main(["init", str(project)]) == 0
    sources = project / "feature_defs" / "sources.py"
    sources.write_text(sources.read_text().replace('topic="transactions"', f'topic="{topic}"'))
    yaml_path = project / "streamfeat.yaml"
    yaml_path.write_text(yaml_path.read_text().replace("127.0.0.1:9092", bootstrap))
    applied = streamfeat_in(project, "apply")
    assert applied.returncode == 0, applied.stderr
    return project


def project_with_events(
    tmp_path: Path, bootstrap: str, kafka_topic: Callable[..., str], events: int, *extra: str
) -> tuple[Path, str, str]:
    """A project on a new topic holding ``events`` generated events: (project, topic, generate's output)."""
    topic = kafka_topic(partitions=3)
    project = project_on_topic(tmp_path, topic, bootstrap)
    produced = streamfeat_in(project, "generate", "--events", str(events), "--topic", topic, *extra)
    assert produced.returncode == 0, produced.stderr
    return project, topic, produced.stdout


def test_version_list_and_describe(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert re.fullmatch(r"streamfeat \S+\n", capsys.readouterr().out)

    repo = str(ROOT / "feature_defs")
    assert main(["list", "--repo", repo]) == 0
    listing = capsys.readouterr().out
    example = load_repo(repo)
    for needle in (
        f"sources ({len(example.sources)}):",
        "transactions",
        f"views ({len(example.views)}):",
        f"services ({len(example.services)}):",
        "fraud_scoring",
        "user_merchant_spend",
    ):
        assert needle in listing, needle
    assert re.search(r"amount_sum_15m\s+float\s+sum\(amount\) over 15m", listing)
    assert re.search(r"merchant_txn_count_1h\s+int\s+count\(amount\) over 1h", listing)
    # Parameters and a list's element type are part of what a feature is.
    assert re.search(r"last_5_merchants_1d\s+list\[string\]\s+last_n\(merchant_id, n=5\) over 1d", listing)
    assert re.search(r"distinct_merchants_1h\s+int\s+count_distinct\(merchant_id, max_distinct=500\) over 1h", listing)
    assert re.search(r"spend_velocity_ratio\s+float\s+computed at request time", listing)
    # Every feature row's type starts in one column, however long the longest name is.
    feature_rows = [line for line in listing.splitlines() if line.startswith("    ")]
    type_columns = {re.search(r"\S+\s+\S", line[4:]).end() for line in feature_rows}  # type: ignore[union-attr]
    assert len(feature_rows) > 30 and len(type_columns) == 1, type_columns

    assert main(["describe", "user_spend", "--repo", repo]) == 0
    described = capsys.readouterr().out
    assert described.startswith("view user_spend") and "filter: col('event_type') == 'PURCHASE'" in described
    assert main(["describe", "fraud_scoring", "--repo", repo]) == 0
    assert re.search(r"user_merchant_share_1h\s+float\s+from user_merchant_share", capsys.readouterr().out)

    assert main(["describe", "no_such_thing", "--repo", repo]) == 2
    err = capsys.readouterr().err
    assert "nothing named 'no_such_thing'" in err and "hint: defined names:" in err and "user_spend" in err
    # `list` shows features, so `describe` takes a feature too: its line and its view.
    assert main(["describe", "amount_sum_15m", "--repo", repo]) == 0
    feature_lines = capsys.readouterr().out.splitlines()
    assert feature_lines[0] == "feature amount_sum_15m: float, sum(amount) over 15m"
    assert feature_lines[1].startswith("  of view user_spend: source transactions")
    assert main(["describe", "spend_velocity_ratio", "--repo", repo]) == 0
    assert "  of on-demand view spend_velocity: python transform" in capsys.readouterr().out
    # A typo of a view or of a feature gets the closest name.
    for typo, meant in (("user_spnd", "user_spend"), ("amount_sum_15", "amount_sum_15m")):
        assert main(["describe", typo, "--repo", repo]) == 2
        assert f"hint: did you mean '{meant}'? defined names:" in capsys.readouterr().err


def test_a_closed_pipe_ends_the_listing_quietly() -> None:
    # `streamfeat list | head -1`: the reader is gone before the listing is written (closed
    # here before the child has even imported), so the write must fail; no traceback may show.
    read_end, write_end = os.pipe()
    with subprocess.Popen(
        [sys.executable, "-m", "cli", "list", "--repo", str(ROOT / "feature_defs")],
        stdout=write_end,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    ) as listing:
        os.close(write_end)
        os.close(read_end)
        _, err = listing.communicate(timeout=60)
    assert "Traceback" not in err.decode() and "BrokenPipeError" not in err.decode(), err
    assert listing.returncode == 128 + signal.SIGPIPE


def test_init_next_steps_are_commands_that_exist() -> None:
    parser = build_parser()
    steps = [line.split("#")[0].strip() for line in NEXT_STEPS.splitlines()[1:]]
    commands = [shlex.split(step) for step in steps if step.startswith("streamfeat ")]
    assert len(commands) >= 5
    for command in commands:
        parsed = parser.parse_args(command[1:])  # SystemExit (a test failure) if it does not parse
        assert parsed.handler is not None


def test_generate_defaults_to_the_last_day_ending_now(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before_ms = wall_clock_ms()
    assert main(["generate", "--events", "2000", "--parquet", str(tmp_path / "history")]) == 0
    after_ms = wall_clock_ms()
    ts = pl.read_parquet(tmp_path / "history" / "*" / "*.parquet")["ts"]
    # Default rate 2 events/s: 2,000 events span 1,000 s, the last one happening now.
    assert before_ms - 1_000_000 <= int(ts.min()) and int(ts.max()) <= after_ms  # type: ignore[arg-type]
    assert int(ts.max()) >= before_ms - 1_000  # type: ignore[arg-type]
    capsys.readouterr()
    assert main(["generate", "--live", "--start", "now"]) == 2
    assert "--start and --events do not apply" in capsys.readouterr().err


def test_generate_refuses_event_times_that_ingest_would_refuse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Events before 2000-01-01 are timestamp_out_of_range dead letters (docs/semantics.md
    section 5): generate says so instead of writing them, for --start, for a default start
    pushed back by many --events, and for jitter reaching back past the limit."""
    out = tmp_path / "history"
    refused = (
        ["--start", "1999-12-31T23:59:59Z", "--events", "10"],
        ["--events", "100000000", "--rate", "0.01"],
        ["--start", "2000-01-01T00:00:00Z", "--events", "3", "--jitter-ms", "5"],
    )
    for argv in refused:
        assert main(["generate", *argv, "--parquet", str(out)]) == 2, argv
        err = capsys.readouterr().err
        assert "--start: the events would span " in err and "timestamp_out_of_range" in err, err
    assert not out.exists()
    assert main(["generate", "--start", "2000-01-01T00:00:00Z", "--events", "3", "--parquet", str(out)]) == 0
    assert int(pl.read_parquet(out / "*" / "*.parquet")["ts"].min()) == 946_684_800_000  # type: ignore[arg-type]


def test_counts_in_messages_agree_in_number(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One event is "1 event" in "1 day file", never "1 events" or "file(s)"; messages count
    through engine.wording.counted, and no product message writes a count as "N thing(s)"."""
    assert main(["generate", "--events", "1", "--parquet", str(tmp_path / "history")]) == 0
    assert "wrote 1 event to 1 day file under " in capsys.readouterr().out
    count_then_plural = re.compile(r"\}[^\"{}]{0,20}\(s\)")
    product = [p for d in ("cli", "engine", "serving", "dataflows") for p in (ROOT / d).rglob("*.py")]
    assert product
    hedged = [
        f"{p}:{n}"
        for p in product
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if count_then_plural.search(line)
    ]
    assert hedged == []


@pytest.mark.kafka
def test_generate_reads_kafka_bootstrap_from_the_project(tmp_path: Path) -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    (tmp_path / "streamfeat.yaml").write_text(f"kafka_bootstrap: {nowhere}\n")
    done = streamfeat_in(tmp_path, "generate", "--events", "10")
    assert done.returncode == 1
    assert f"no Kafka broker answers at {nowhere}" in done.stderr and "streamfeat kafka start" in done.stderr
    assert not NOISE.search(done.stderr), done.stderr


@pytest.mark.kafka
def test_generate_live_stamps_events_with_the_current_time(
    kafka_topic: Callable[..., str], kafka_bootstrap: str
) -> None:
    from tests.engine.streaming_support import read_topic

    topic = kafka_topic(partitions=1)
    before_ms = wall_clock_ms()
    done = streamfeat_in(
        Path.cwd(),
        "generate",
        "--live",
        "--rate",
        "50",
        "--duration",
        "2",
        "--topic",
        topic,
        env={"STREAMFEAT_KAFKA_BOOTSTRAP": kafka_bootstrap},
    )
    after_ms = wall_clock_ms()
    assert done.returncode == 0, done.stderr
    assert "produced 100 live events" in done.stdout
    records = read_topic(kafka_bootstrap, topic, 1)
    assert len(records) == 100
    assert all(before_ms - 1_000 <= orjson.loads(r.value)["ts"] <= after_ms for r in records)


@pytest.mark.kafka
def test_run_without_a_broker_says_so_in_one_line(tmp_path: Path) -> None:
    project = project_on_topic(tmp_path, "nothing-here", f"127.0.0.1:{free_port()}")
    done = streamfeat_in(project, "run", "--until-caught-up")
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("streamfeat run: error:")]
    assert len(errors) == 1 and "no Kafka broker answers at 127.0.0.1:" in errors[0]
    assert "hint: start one with `streamfeat kafka start`, or check kafka_bootstrap" in done.stderr
    assert not NOISE.search(done.stderr), done.stderr


@pytest.mark.kafka
def test_run_on_a_missing_topic_says_so_in_one_line(tmp_path: Path, kafka_bootstrap: str) -> None:
    topic = f"missing-{uuid.uuid4().hex[:12]}"
    project = project_on_topic(tmp_path, topic, kafka_bootstrap)
    done = streamfeat_in(project, "run", "--until-caught-up")
    assert done.returncode != 0
    assert f"streamfeat run: error: Kafka topic '{topic}' does not exist on broker {kafka_bootstrap}" in done.stderr
    assert "hint: produce events to it first" in done.stderr
    assert not NOISE.search(done.stderr), done.stderr


@pytest.mark.kafka
@pytest.mark.parametrize("processes", ["1", "2"])
def test_run_mostly_dead_letters_is_loud_and_summarised(
    tmp_path: Path, kafka_bootstrap: str, kafka_topic: Callable[..., str], processes: str
) -> None:
    """With two processes each reads some partitions: the summary sums them, counting each record once."""
    project, topic, produced = project_with_events(
        tmp_path, kafka_bootstrap, kafka_topic, 2000, "--malformed-fraction", "0.9"
    )
    malformed = int(re.search(r"\(([\d,]+) malformed\)", produced).group(1).replace(",", ""))  # type: ignore[union-attr]

    done = streamfeat_in(project, "run", "--processes", processes, "--until-caught-up")
    assert done.returncode == 0, done.stderr
    assert not NOISE.search(done.stderr), done.stderr
    warning = re.search(
        rf"WARNING: ([\d,]+) of 2,000 records \((\d+)%\) went to the dead-letter topic '{dlq_topic_for(topic)}'",
        done.stdout,
    )
    assert warning is not None, done.stdout
    assert int(warning.group(1).replace(",", "")) == malformed
    for reason in ("invalid_json", "missing_field", "wrong_type", "invalid_timestamp"):
        assert re.search(rf"{reason} [\d,]+", done.stdout), reason
    (summary,) = [line for line in done.stdout.splitlines() if line.startswith("run caught up:")]
    assert f"read 2,000 records from '{topic}'" in summary and "applied merchant_activity" in summary
    assert f"dead letters {malformed:,} (" in summary


@pytest.mark.kafka
def test_run_with_a_few_dead_letters_says_how_to_read_them(
    tmp_path: Path, kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    """Below the alarm the summary still says where the dead letters are, with a command that
    shows each one's reason; the command works as printed."""
    project, topic, produced = project_with_events(
        tmp_path, kafka_bootstrap, kafka_topic, 400, "--malformed-fraction", "0.05"
    )
    malformed = int(re.search(r"\(([\d,]+) malformed\)", produced).group(1).replace(",", ""))  # type: ignore[union-attr]
    assert malformed > 0

    done = streamfeat_in(project, "run", "--until-caught-up")
    assert done.returncode == 0, done.stderr
    assert "WARNING" not in done.stdout
    (hint,) = [line for line in done.stdout.splitlines() if line.startswith("  read them with any Kafka consumer")]
    assert f"on '{dlq_topic_for(topic)}'" in hint
    command = shlex.split(hint.split("e.g. ", 1)[1])
    assert command[0] == "kcat"
    shown = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.count("reason=") == malformed, shown.stdout

    # A second project on the same topic shares its dead-letter topic: the letters are
    # not sent again, and its summary says the refused records are there already.
    (tmp_path / "second").mkdir()
    second = project_on_topic(tmp_path / "second", topic, kafka_bootstrap)
    again = streamfeat_in(second, "run", "--until-caught-up")
    assert again.returncode == 0, again.stderr
    (summary,) = [line for line in again.stdout.splitlines() if line.startswith("run caught up:")]
    assert (
        f"dead letters none; and {malformed:,} refused record{'s' if malformed > 1 else ''} whose letter "
        "was already in the topic, not sent again: " in summary
    ), summary
    assert any(line.startswith("  read them with any Kafka consumer") for line in again.stdout.splitlines())
    shown_again = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert shown_again.stdout.count("reason=") == malformed, shown_again.stdout


@pytest.mark.kafka
def test_run_stops_on_ctrl_c_without_a_backtrace(
    tmp_path: Path, kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    project, _topic, _ = project_with_events(tmp_path, kafka_bootstrap, kafka_topic, 500)
    metrics_port = free_port()
    with tailing_run(project, subprocess.PIPE, metrics_port) as child:
        assert child.stderr is not None
        banner = child.stderr.readline()  # printed once the dataflow is about to start
        assert "Ctrl-C stops" in banner, banner
        # Stop it while it tails the topic, after it has read everything there.
        wait_until(
            lambda: child.poll() is not None or total(scrape(metrics_port), "streamfeat_events_in_total") >= 500,
            120,
            "the dataflow to read the 500 events",
        )
        assert child.poll() is None, child.stderr.read()
        stdout, stderr = stop_with_ctrl_c(child)
    run_log = project / ".streamfeat" / "logs" / "run.log"
    assert child.returncode == 0, stderr
    assert not NOISE.search(stderr), stderr
    assert "run stopped: read " in stdout
    assert run_log.is_file()


@pytest.mark.kafka
def test_a_second_writer_of_the_state_is_refused_in_one_line(
    tmp_path: Path, kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    """`streamfeat run` twice (or a backfill beside a run) named the holder only after a Rust
    panic and its backtrace from inside the dataflow; now the second one stops before it starts."""
    project, _topic, _ = project_with_events(tmp_path, kafka_bootstrap, kafka_topic, 200)
    history = tmp_path / "history"
    made = streamfeat_in(project, "generate", "--events", "100", "--parquet", str(history))
    assert made.returncode == 0, made.stderr
    with tailing_run(project, subprocess.PIPE) as first:
        assert first.stderr is not None
        assert "Ctrl-C stops" in first.stderr.readline()  # it holds the state from here on
        second = streamfeat_in(project, "run", "--until-caught-up", timeout=60)
        beside = streamfeat_in(
            project, "backfill", "--source", "transactions", "--from", str(history), "--end", "2030-01-01T00:00:00Z"
        )
        assert first.poll() is None
        stop_with_ctrl_c(first)
    for command, refused in (("run", second), ("backfill", beside)):
        assert refused.returncode != 0, refused.stdout
        assert not NOISE.search(refused.stderr), refused.stderr
        assert f"streamfeat {command}: error: the state in " in refused.stderr, refused.stderr
        assert f"is being written by `streamfeat run` (pid {first.pid}, since " in refused.stderr
        assert (
            "hint: one `streamfeat run` or `streamfeat backfill` writes a project's state at a time" in refused.stderr
        )
    # The lock went with its holder: the same command now runs (the first run applied the 200).
    again = streamfeat_in(project, "run", "--until-caught-up")
    assert again.returncode == 0 and "run caught up: read 0 records" in again.stdout, again.stderr
    (summary,) = [line for line in again.stdout.splitlines() if line.startswith("run caught up:")]
    assert summary.endswith("; dead letters none"), summary  # as the live line says it, not "0 (none)"


def test_backfill_stops_on_ctrl_c_and_the_same_command_resumes(tmp_path: Path) -> None:
    project = project_on_topic(tmp_path, "transactions", f"127.0.0.1:{free_port()}")  # no broker needed
    made = streamfeat_in(project, "generate", "--events", "600000", "--rate", "20", "--start", "2026-01-01T00:00:00Z", "--parquet", "history")  # fmt: skip
    assert made.returncode == 0, made.stderr
    argv = ["backfill", "--source", "transactions", "--from", "history", "--end", "2026-02-01T00:00:00Z"]
    child = subprocess.Popen(
        [sys.executable, "-m", "cli", *argv],
        cwd=project,
        env=_user_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    lock = project / ".streamfeat" / "writer.lock"
    wait_until(lambda: lock.is_file() and "streamfeat backfill" in lock.read_text(), 60, "the backfill to start")
    time.sleep(1.0)
    assert child.poll() is None, "the backfill finished before Ctrl-C: give it more events"
    stdout, stderr = stop_with_ctrl_c(child)
    assert child.returncode == 130, (stdout, stderr)
    assert not NOISE.search(stderr), stderr
    assert "streamfeat backfill: interrupted; what it committed is kept: run the same command again" in stderr
    again = streamfeat_in(project, *argv)
    assert again.returncode == 0, again.stderr
    assert "backfilled 600,000 history events" in again.stdout, again.stdout


def test_kafka_status_says_where_the_broker_lives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("STREAMFEAT_CACHE_DIR", raising=False)
    port = free_port()
    assert kafka_local.default_data_dir(port) == tmp_path / "data" / "streamfeat" / "kafka" / str(port)
    assert kafka_local.cache_root() == tmp_path / "cache" / "streamfeat" / "kafka"
    assert main(["kafka", "status", "--port", str(port)]) == 3
    out = capsys.readouterr().out
    assert f"Kafka is not running at 127.0.0.1:{port}" in out
    assert str(tmp_path / "data" / "streamfeat" / "kafka" / str(port)) in out
    # Without --port, the port is the one of kafka_bootstrap.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "streamfeat.yaml").write_text(f"kafka_bootstrap: 127.0.0.1:{port}\n")
    assert main(["kafka", "status"]) == 3
    assert f"127.0.0.1:{port}" in capsys.readouterr().out
    (tmp_path / "streamfeat.yaml").write_text("kafka_bootstrap: kafka.example.com:9092\n")
    assert main(["kafka", "status"]) == 2
    assert "not a 127.0.0.1:PORT address" in capsys.readouterr().err
    # A relative XDG directory is invalid by the spec and ignored.
    monkeypatch.setenv("XDG_DATA_HOME", "relative/dir")
    assert kafka_local.default_data_dir(port) == Path.home() / ".local" / "share" / "streamfeat" / "kafka" / str(port)


@pytest.mark.parametrize(
    ("argv", "error", "hint"),
    [
        (["kafka", "start", "--port", "70000"], "--port: expected 1..65535, got 70000", "kafka start --help"),
        (["kafka", "stop", "--port", "0"], "--port: expected 1..65535, got 0", "kafka stop --help"),
        (
            ["kafka", "start", "--port", "9500", "--controller-port", "9500"],
            "--controller-port: must differ",
            "port + 1",
        ),
        (["kafka", "start", "--kafka-version", "3.0"], "--kafka-version: expected a Kafka 4.x version", "--help"),
        (["kafka", "start", "--port", "9500", "--data-dir", "/proc/nope"], "--data-dir: cannot create", "writable"),
    ],
)
def test_kafka_flags_are_refused_by_their_names_without_a_traceback(
    argv: list[str], error: str, hint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert error in err and "BrokerConfig" not in err and "Traceback" not in err, err
    assert err.splitlines()[-1].startswith("hint: ") and hint in err.splitlines()[-1], err


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["quality", "--baseline-days", "nan"], "argument --baseline-days: expected a finite number, got 'nan'"),
        (["quality", "--baseline-days", "-1"], "argument --baseline-days: expected a number > 0, got '-1'"),
        (["quality", "--interval-minutes", "0"], "argument --interval-minutes: expected a whole number >= 1, got '0'"),
        (["quality", "--interval-minutes", "-5"], "argument --interval-minutes: expected a whole number >= 1"),
        (["generate", "--malformed-fraction", "2"], "argument --malformed-fraction: expected a fraction from 0 to 1"),
        (["generate", "--live", "--duration", "0"], "argument --duration: expected a number > 0, got '0'"),
        (["generate", "--rate", "-5", "--live"], "argument --rate: expected a number > 0, got '-5'"),
        (["generate", "--rate", "inf"], "argument --rate: expected a finite number, got 'inf'"),
        (["generate", "--rate", "nan", "--parquet", "x"], "argument --rate: expected a finite number, got 'nan'"),
        (["status", "--sample", "-1"], "argument --sample: expected a number >= 0, got '-1'"),
        (["consistency-check", "--max-mismatch-rate", "1.5"], "argument --max-mismatch-rate: expected a fraction"),
        (["shadow", "--out", "x", "--tolerance", "inf"], "argument --tolerance: expected a finite number, got 'inf'"),
        (["kafka", "start", "--timeout", "-5"], "argument --timeout: expected a number > 0, got '-5'"),
    ],
)
def test_numeric_flags_refuse_nan_infinite_and_out_of_range_values(
    argv: list[str], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as refused:
        main(argv)
    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert error in err and "Traceback" not in err, err


def test_a_data_dir_that_cannot_be_created_is_one_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a_file").write_text("x")
    blocked = tmp_path / "a_file" / "data"
    assert main(["apply", "--repo", str(example_repo()), "--data-dir", str(blocked)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"streamfeat apply: error: {blocked}") and "Not a directory" in err, err
    assert "hint: check the paths given (--data-dir" in err


def test_training_set_files_hold_utc_timestamps_of_the_same_instants() -> None:
    from cli.training_cmd import as_utc_timestamps

    spine = pl.DataFrame({"user_id": ["u1", "u2"], "event_timestamp": [1_767_225_600_123, 0]})
    out = as_utc_timestamps(spine, "event_timestamp")
    assert out.schema["event_timestamp"] == pl.Datetime("ms", time_zone="UTC")
    assert out["event_timestamp"].dt.epoch("ms").to_list() == [1_767_225_600_123, 0]
    assert str(out["event_timestamp"][0]) == "2026-01-01 00:00:00.123000+00:00"
    already = spine.with_columns(pl.col("event_timestamp").cast(pl.Datetime("ms", time_zone="UTC")))
    assert as_utc_timestamps(already, "event_timestamp").equals(already)
    # ISO times in a CSV spine come as microsecond datetimes, in any zone: the file still
    # holds timestamp[ms, UTC], at the millisecond the features were computed for.
    zoned = pl.Series(["2026-01-01T14:00:00.123456+02:00"]).str.to_datetime(time_unit="us", time_zone="UTC")
    local = pl.DataFrame({"event_timestamp": zoned}).with_columns(
        pl.col("event_timestamp").dt.convert_time_zone("Asia/Tokyo")
    )
    out = as_utc_timestamps(local, "event_timestamp")
    assert out.schema["event_timestamp"] == pl.Datetime("ms", time_zone="UTC")
    assert out["event_timestamp"].dt.epoch("ms").to_list() == [1_767_268_800_123]


@pytest.mark.parametrize(
    ("header", "time", "said", "not_said"),
    [
        # No column of that name: the flag, naming a likely column.
        (
            "ts",
            "2026-01-01T12:00:00Z",
            ["'event_timestamp' (each row's as-of time), missing", "--timestamp-column ts"],
            "never guessed",
        ),
        # The column, without a zone: how to give it one.
        (
            "event_timestamp",
            "2026-01-01T12:00:00",
            ["naive Datetime", "2026-01-01T12:00:00Z", "never guessed"],
            "--timestamp-column",
        ),
    ],
)
def test_training_set_time_column_errors_say_how_to_fix_them(
    header: str,
    time: str,
    said: list[str],
    not_said: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    spine = tmp_path / "labels.csv"
    spine.write_text(f"user_id,merchant_id,amount,{header}\nu000000,m0000,25.0,{time}\n", encoding="utf-8")
    monkeypatch.chdir(ROOT)  # the example repo is ./feature_defs
    for name in [k for k in os.environ if k.startswith("STREAMFEAT_")]:
        monkeypatch.delenv(name)

    code = main(["training-set", "--service", "fraud_scoring", "--spine", str(spine), "--out", str(tmp_path / "t.pq")])

    assert code == 1
    err = capsys.readouterr().err
    assert all(text in err for text in said) and not_said not in err, err
    assert not (tmp_path / "t.pq").exists()


def test_a_csv_spine_with_one_naive_time_names_that_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """One row without its offset left the whole CSV column text, and the error said the
    column was a String, with a hint to rename it: the rows at fault are named now, and a
    text column of times with offsets is read with the contract's ISO parser."""
    monkeypatch.chdir(ROOT)  # the example repo is ./feature_defs
    for name in [k for k in os.environ if k.startswith("STREAMFEAT_")]:
        monkeypatch.delenv(name)
    head = "user_id,merchant_id,amount,event_timestamp\n"
    spine, out = tmp_path / "labels.csv", tmp_path / "t.pq"
    argv = ["training-set", "--service", "fraud_scoring", "--spine", str(spine), "--out", str(out)]
    spine.write_text(head + "u1,m0000,1.0,2026-01-01T12:00:00Z\nu2,m0000,1.0,2026-01-01T12:00:00\n", encoding="utf-8")
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "1 row is not an ISO 8601 time with a UTC offset: row 1 (0-based)" in err, err
    assert "'2026-01-01T12:00:00' has no UTC offset" in err and "--timestamp-column" not in err, err
    assert not out.exists()
    spine.write_text(head + "u1,m0000,1.0,2026-01-01T12:00:00Z\nu2,m0000,1.0,2026-01-01T14:00:00+02:00\n")
    assert main(argv) == 0
    written = pl.read_parquet(out)["event_timestamp"].dt.epoch("ms").to_list()
    assert written == [1_767_268_800_000, 1_767_268_800_000]


def test_a_csv_spine_keeps_string_ids_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """ "0123" and "123" are two users: a CSV spine's string join keys are read as text, not
    as the number 123 (which would give both rows user 123's features)."""
    from tests.serving.serving_support import T_END, write_log

    events = [
        {
            "transaction_id": f"t{i}",
            "user_id": user,
            "merchant_id": "m1",
            "card_id": "c1",
            "amount": amount,
            "event_type": "PURCHASE",
            "ts": T_END - 60_000 + i,
            "partition": 0,
            "offset": i,
        }
        for i, (user, amount) in enumerate([("123", 12.5), ("0123", 99.5)])
    ]
    data = tmp_path / "data"
    write_log(str(data / "log"), load_repo(str(ROOT / "feature_defs")).views, events)
    spine = tmp_path / "labels.csv"
    spine.write_text(f"user_id,merchant_id,amount,event_timestamp\n123,m1,1.0,{T_END}\n0123,m1,1.0,{T_END}\n")
    monkeypatch.chdir(ROOT)  # the example repo is ./feature_defs
    for name in [k for k in os.environ if k.startswith("STREAMFEAT_")]:
        monkeypatch.delenv(name)
    out = tmp_path / "t.parquet"
    argv = ["training-set", "--service", "fraud_scoring", "--spine", str(spine), "--out", str(out)]
    assert main([*argv, "--data-dir", str(data)]) == 0, capsys.readouterr().err
    frame = pl.read_parquet(out)
    assert frame["user_id"].to_list() == ["123", "0123"]
    assert frame["amount_sum_15m"].to_list() == [12.5, 99.5]
    # A header alone is said to be empty (it was refused as "amount: expected numbers, got String").
    spine.write_text("user_id,merchant_id,amount,event_timestamp\n")
    assert main([*argv, "--data-dir", str(data)]) == 2
    assert f"--spine: {spine} has no rows" in capsys.readouterr().err


def test_process_index_without_cluster_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--repo", str(ROOT / "feature_defs"), "--process-index", "5"]) == 2
    err = capsys.readouterr().err
    assert "--process-index 5: only with --cluster" in err and "Traceback" not in err, err


def test_a_repo_without_views_is_refused_before_it_empties_the_plan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`apply --repo <a directory without definitions>` removed every view from the plan
    and exited 0; plan, apply and serve now refuse it in one line naming the repo."""
    empty = tmp_path / "nothing_here"
    empty.mkdir()
    data = tmp_path / "data"
    assert main(["apply", "--repo", str(ROOT / "feature_defs"), "--data-dir", str(data)]) == 0
    before = (data / "plan.json").read_bytes()
    capsys.readouterr()
    for command in ("plan", "apply", "serve"):
        assert main([command, "--repo", str(empty), "--data-dir", str(data)]) == 2, command
        err = capsys.readouterr().err
        assert f"defines no feature views: nothing to {command}" in err, err
        assert "hint: point --repo" in err and "Traceback" not in err, err
    assert (data / "plan.json").read_bytes() == before  # the applied plan is untouched


def test_an_output_that_cannot_be_written_and_a_bad_url_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Both ended in tracebacks: polars' FileNotFoundError for an --out under /proc, and
    httpx.InvalidURL for a shadow --baseline without its closing bracket."""
    from cli.tables import write_table
    from engine.exceptions import ConfigError

    with pytest.raises(ConfigError, match=r"--out: cannot write /proc/x\.parquet: ") as refused:
        write_table(pl.DataFrame({"a": [1]}), Path("/proc/x.parquet"))
    assert refused.value.hint == "pass --out in a writable directory"
    requests = tmp_path / "requests.jsonl"
    requests.write_text('{"feature_service": "fraud_scoring", "entities": {"user_id": ["u1"]}}\n')
    for url in ("http://[::1", "notaurl", "ftp://x"):
        code = main(["shadow", "--baseline", url, "--requests", str(requests), "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err
        assert code == 2 and f"--baseline: expected an http:// or https:// URL with a host, got {url!r}" in err, err
        assert "Traceback" not in err


@pytest.mark.parametrize("verbose", [False, True])
def test_the_runtimes_connection_retries_go_to_the_run_log_not_the_terminal(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], verbose: bool
) -> None:
    """`run --processes 2` printed Bytewax's "worker 1: error connecting to worker 0 ...;
    retrying" while the processes found each other, and a failing process's Rust panic
    report and traceback; our own one-line errors and hints still show."""
    from cli.run_cmd import _forward

    retry = "worker 1:\terror connecting to worker 0: Connection refused (os error 111); retrying"
    panic = "thread '<unnamed>' panicked at src/outputs.rs:321:49:\nBox<dyn Any>\nstack backtrace:\n   0: x\n"
    text = f"{retry}\nstreamfeat run: error: a real one\n{panic}streamfeat run: error: ours after it\nhint: h\n"
    script = f"import sys; sys.stderr.write({text!r})"
    child = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE)
    log = tmp_path / "run.log"
    _forward(child.stderr, sys.stderr, log, verbose)
    assert child.wait(timeout=30) == 0
    err = capfd.readouterr().err
    assert "streamfeat run: error: a real one" in err and "streamfeat run: error: ours after it\nhint: h" in err
    for noise in (retry, "panicked at", "stack backtrace"):
        assert (noise in err) is verbose and (noise in log.read_text()) is not verbose, (noise, err, log.read_text())


def test_serve_on_a_busy_port_says_so_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--repo", str(ROOT / "feature_defs"), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"streamfeat serve: error: cannot serve on 127.0.0.1:{port}" in err
    assert "hint: pass --port" in err


@pytest.mark.kafka
def test_kafka_start_with_a_broker_answering_says_already_running(
    kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    port = kafka_bootstrap.rsplit(":", 1)[1]
    assert main(["kafka", "start", "--port", port]) == 0
    assert f"already running at {kafka_bootstrap}" in capsys.readouterr().out
    assert main(["kafka", "status", "--port", port]) == 0


@pytest.mark.kafka
def test_kafka_start_on_another_port_than_the_project_says_how_to_use_it(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = kafka_bootstrap.rsplit(":", 1)[1]
    other = free_port()
    (tmp_path / "streamfeat.yaml").write_text(f"kafka_bootstrap: 127.0.0.1:{other}\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STREAMFEAT_KAFKA_BOOTSTRAP", raising=False)

    assert main(["kafka", "start", "--port", port]) == 0
    note = capsys.readouterr().err
    assert f"kafka_bootstrap is '127.0.0.1:{other}'" in note
    assert f"kafka_bootstrap: 127.0.0.1:{port}" in note and f"STREAMFEAT_KAFKA_BOOTSTRAP=127.0.0.1:{port}" in note

    (tmp_path / "streamfeat.yaml").write_text(f"kafka_bootstrap: localhost:{port}\n", encoding="utf-8")
    assert main(["kafka", "start", "--port", port]) == 0
    assert "kafka_bootstrap is" not in capsys.readouterr().err


def test_kafka_start_names_the_stop_command_that_reaches_its_broker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain `streamfeat kafka stop` goes to the port of kafka_bootstrap: a broker started
    on another port (or in another directory) is told with the flags that reach it."""
    from cli.kafka_cmd import _config, _stop_command

    configured, other = free_port(), free_port()
    (tmp_path / "streamfeat.yaml").write_text(f"kafka_bootstrap: 127.0.0.1:{configured}\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STREAMFEAT_KAFKA_BOOTSTRAP", raising=False)
    parser = build_parser()

    def stop_for(*start_flags: str) -> str:
        args = parser.parse_args(["kafka", "start", *start_flags])
        return _stop_command(args, _config(args))

    assert stop_for() == "streamfeat kafka stop"
    assert stop_for("--port", str(configured)) == "streamfeat kafka stop"
    assert stop_for("--port", str(other)) == f"streamfeat kafka stop --port {other}"
    broker_dir = tmp_path / "my broker"
    assert stop_for("--data-dir", str(broker_dir)) == f"streamfeat kafka stop --data-dir {shlex.quote(str(broker_dir))}"
    # The command printed is one the parser accepts, for the same broker.
    printed = shlex.split(stop_for("--port", str(other), "--data-dir", str(broker_dir)))
    stop_args = parser.parse_args(printed[1:])
    assert (_config(stop_args).port, _config(stop_args).root) == (other, broker_dir)


@pytest.mark.kafka
def test_run_shows_progress_on_a_terminal(
    tmp_path: Path, kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    import pty

    project, topic, _ = project_with_events(tmp_path, kafka_bootstrap, kafka_topic, 3000)
    controller, terminal = pty.openpty()
    seen = b""
    # The live line once everything is read: records read and their rate, lag, dead letters.
    caught_up = re.compile(rf"{topic}: 3,000 read \([\d,]+/s\), lag 0, dead letters none".encode())
    try:
        with tailing_run(project, terminal) as child:
            os.close(terminal)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not caught_up.search(seen):
                try:
                    seen += os.read(controller, 65536)
                except OSError:  # the child closed the terminal
                    break
            stop_with_ctrl_c(child)
    finally:
        os.close(controller)
    assert caught_up.search(seen), seen.decode(errors="replace")
    assert child.returncode == 0


def _one_error_line(done: subprocess.CompletedProcess[str], command: str) -> str:
    """The single ``streamfeat COMMAND: error:`` line of a failed command, with no client noise."""
    assert done.returncode != 0, done.stdout
    errors = [line for line in done.stderr.splitlines() if line.startswith(f"streamfeat {command}: error:")]
    assert len(errors) == 1, done.stderr
    assert not NOISE.search(done.stderr), done.stderr
    return errors[0]


# Every subcommand that reads a source topic, as a user types it.
TOPIC_READERS = (("status", "--sample", "0"), ("backfill", "--source", "transactions", "--from", "kafka"))


@pytest.mark.kafka
@pytest.mark.parametrize("argv", TOPIC_READERS, ids=lambda a: a[0])
def test_topic_readers_without_a_broker_say_so_in_one_line(tmp_path: Path, argv: tuple[str, ...]) -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    project = project_on_topic(tmp_path, "nothing-here", nowhere)
    done = streamfeat_in(project, *argv)
    assert f"no Kafka broker answers at {nowhere}" in _one_error_line(done, argv[0])
    assert "hint: start one with `streamfeat kafka start`, or check kafka_bootstrap" in done.stderr


@pytest.mark.kafka
@pytest.mark.parametrize("argv", TOPIC_READERS, ids=lambda a: a[0])
def test_topic_readers_on_a_missing_topic_say_so_in_one_line(
    tmp_path: Path, kafka_bootstrap: str, argv: tuple[str, ...]
) -> None:
    topic = f"missing-{uuid.uuid4().hex[:12]}"
    project = project_on_topic(tmp_path, topic, kafka_bootstrap)
    done = streamfeat_in(project, *argv)
    assert f"Kafka topic '{topic}' does not exist on broker {kafka_bootstrap}" in _one_error_line(done, argv[0])
    assert "hint: produce events to it first" in done.stderr


def test_dataflows_started_by_tests_take_no_fixed_metrics_port() -> None:
    """A `streamfeat run` started by a test must not need port 9464, which another dataflow
    on the machine may hold: the session turns the endpoint off unless a test picks a free port."""
    from engine.config import load_settings

    assert load_settings().metrics_port == 0
    assert os.environ["STREAMFEAT_METRICS_PORT"] == "0"
