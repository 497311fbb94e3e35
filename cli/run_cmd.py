"""``streamfeat run``: run the streaming dataflow of one event source.

One process runs in place (``--workers`` threads). Several processes (``--processes``)
run as a Bytewax cluster on loopback: this command starts one child per process,
each owning a share of the state shards, and stops them all if one fails.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING, TextIO

from cli.common import (
    Subparsers,
    add_settings_args,
    check_source_topic,
    log_to_file,
    native_stderr_to,
    settings_from,
)
from cli.run_report import RunReporter
from cli.setting_options import add_setting_option
from engine.config import Settings
from engine.exceptions import DataflowRunError, StreamfeatError
from engine.ports import free_ports
from engine.run_counts import RunCounts, merged_counts, read_counts_file
from engine.shutdown import stop_gracefully_on_sigint, stop_requested

if TYPE_CHECKING:  # imported when the command runs, so `streamfeat --help` stays fast
    from dataflows.stream import StreamJob


def register(subparsers: Subparsers) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "run",
        help="run the streaming dataflow of one event source",
        description="Consume the source's Kafka topic, maintain tiles in RocksDB, write the Parquet log.",
    )
    add_settings_args(parser)
    parser.add_argument("--source", default="transactions", help="event source to run (default: transactions)")
    parser.add_argument("--workers", type=int, default=1, help="worker threads per process (default: 1)")
    parser.add_argument("--processes", type=int, default=1, help="processes on this host (default: 1)")
    parser.add_argument(
        "--cluster",
        default=None,
        help="several hosts: every process's host:port, comma-separated, the same list on "
        "every host (then --process-index; each host keeps its own data_dir; use "
        "state_backup: kafka so shards restore on any host, docs/deploy.md)",
    )
    parser.add_argument("--process-index", type=int, default=None, help="with --cluster: this process's index")
    parser.add_argument(
        "--until-caught-up",
        action="store_true",
        help="stop at the end offsets seen at start instead of tailing the topic",
    )
    add_setting_option(
        parser,
        "--batch-size",
        setting="batch_size",
        what="records per Kafka batch at most; a read never waits for more",
        type=int,
    )
    add_setting_option(
        parser, "--online", setting="online", what="redis: also write tiles to Redis", choices=("rocksdb", "redis")
    )
    add_setting_option(parser, "--redis-url", setting="redis_url", what="Redis URL for --online redis")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="also show log lines (Kafka client included) on the terminal; they always go to <data_dir>/logs/run.log",
    )
    parser.set_defaults(handler=_run)


def _settings(args: argparse.Namespace) -> Settings:
    """The settings of this run: files and environment, then this command's flags."""
    return settings_from(args, batch_size=args.batch_size, online=args.online, redis_url=args.redis_url)


def _child_env(args: argparse.Namespace, settings: Settings) -> dict[str, str]:
    """The environment of a cluster process child: ``settings`` as STREAMFEAT_* variables."""
    env = dict(os.environ)
    env.update(
        {
            "STREAMFEAT_REPO": str(settings.repo_path),
            "STREAMFEAT_DATA_DIR": str(settings.path(settings.data_dir)),
            "STREAMFEAT_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "STREAMFEAT_BATCH_SIZE": str(settings.batch_size),
            "STREAMFEAT_ONLINE": settings.online,
            "STREAMFEAT_REDIS_URL": settings.redis_url,
            "STREAMFEAT_RUN_SOURCE": args.source,
            "STREAMFEAT_RUN_TAIL": "0" if args.until_caught_up else "1",
            "STREAMFEAT_RUN_PROCESSES": str(_process_count(args)),
            "STREAMFEAT_RUN_WORKERS": str(args.workers),
        }
    )
    return env


def _run_log(settings: Settings) -> Path:
    """Where a run's log records, client lines and runtime output go."""
    return settings.path(settings.data_dir) / "logs" / "run.log"


def _process_count(args: argparse.Namespace) -> int:
    """Processes of the whole Bytewax cluster: one per --cluster address, else --processes."""
    if args.cluster is not None:
        return len([a for a in str(args.cluster).split(",") if a.strip()])
    return int(args.processes)


def _run(args: argparse.Namespace) -> int:
    from engine.exceptions import ConfigError
    from engine.state.writer_lock import state_writer

    if args.workers < 1 or args.processes < 1:
        raise ConfigError("--workers and --processes must be at least 1")
    if args.process_index is not None and args.cluster is None:
        raise ConfigError(
            f"--process-index {args.process_index}: only with --cluster (this host's place in its address list)",
            hint="leave it out, or add --cluster host:port,host:port,...",
        )
    # A second run on the same state stops here, in one line, not inside the dataflow.
    settings = _settings(args)
    last_metrics_port = settings.metrics_port + args.processes - 1
    if settings.metrics_port and last_metrics_port > 65535:
        raise ConfigError(
            f"metrics_port: process {args.processes - 1} of --processes {args.processes} would listen on "
            f"metrics_port + {args.processes - 1} = {last_metrics_port}, beyond 65535",
            hint=f"set metrics_port to at most {65536 - args.processes} (or 0: no metrics endpoint)",
        )
    if settings.online == "redis":
        from engine.state.redis_client import refuse_evicting_url

        # A Redis that evicts keys is refused here, in one line, not by every worker.
        refuse_evicting_url(settings.redis_url)
    with state_writer(settings.path(settings.data_dir), "streamfeat run"):
        if args.cluster is not None:
            return _supervise(_cluster_process(args))
        if args.processes == 1:
            return _run_in_place(args)
        return _run_processes(args)


def _run_processes(args: argparse.Namespace) -> int:
    """``--processes N`` on this host: a Bytewax cluster of N children on loopback."""
    settings = _settings(args)
    env = _child_env(args, settings)
    # Create every shard before the children start, so none of them races to create one.
    from dataflows.job import build_job
    from engine.state.rocksdb_store import RocksDBStore

    log_file = log_to_file(_run_log(settings), verbose=args.verbose)
    job = build_job(settings, args.source, tail=not args.until_caught_up)
    check_source_topic(settings.kafka_bootstrap, job.source.topic)
    RocksDBStore(job.state_dir, job.shards).close()
    metrics_base = settings.metrics_port
    addresses = ";".join(f"127.0.0.1:{port}" for port in free_ports(args.processes))
    counts_files = _fresh_counts_files(settings.path(settings.data_dir) / "run", args.processes)
    reporter = RunReporter(job.source.topic, settings.kafka_bootstrap, counts=lambda: _summed(counts_files))
    _announce(job, settings.kafka_bootstrap, args, log_file, f"{args.processes} processes")
    children = [
        _bytewax_process(
            args.workers,
            i,
            addresses,
            # One metrics endpoint per process: metrics_port, metrics_port + 1, ...
            {
                **env,
                "STREAMFEAT_METRICS_PORT": str(metrics_base + i if metrics_base else 0),
                "STREAMFEAT_RUN_COUNTS_FILE": str(counts_files[i]),
            },
            log_file,
            args.verbose,
        )
        for i in range(args.processes)
    ]
    reporter.start()
    code = 130
    try:
        code = _supervise(children)
        return code
    finally:
        reporter.stop()
        interrupted = code == 130 or _STOPPED.is_set()
        print(
            reporter.summary(
                caught_up=args.until_caught_up and code == 0 and not interrupted,
                interrupted=interrupted,
                failed=code != 0 and not interrupted,
            )
        )


def _cluster_process(args: argparse.Namespace) -> list[subprocess.Popen[bytes]]:
    """This host's one process of a multi-host cluster (its own data_dir)."""
    from engine.exceptions import ConfigError

    addresses = [a.strip() for a in str(args.cluster).split(",") if a.strip()]
    index = args.process_index
    if index is None or not 0 <= index < len(addresses):
        raise ConfigError(
            f"--process-index: expected 0..{len(addresses) - 1} with --cluster "
            f"({len(addresses)} addresses), got {index}",
            hint="give every host the same --cluster list and its own --process-index",
        )
    if args.processes != 1:
        raise ConfigError(
            f"--processes: expected 1 with --cluster (one process per address), got {args.processes}",
            hint="list one address per process in --cluster",
        )
    settings = _settings(args)
    log_file = _run_log(settings)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    return [
        _bytewax_process(args.workers, index, ";".join(addresses), _child_env(args, settings), log_file, args.verbose)
    ]


# Bytewax's runtime prints this while the processes find each other: a retry, not an error.
_CONNECT_RETRY = re.compile(rb"^worker \d+:\s+error connecting to worker \d+: .*retrying\s*$")
_FAILURE_START = re.compile(rb"^(Traceback \(most recent call last\):|thread '.*' panicked at )")
_OURS = re.compile(rb"^(streamfeat [a-z-]+: |hint: )")
_forwarders: list[threading.Thread] = []
_STOPPED = threading.Event()  # the run was stopped by a first Ctrl-C or SIGTERM


def _bytewax_process(
    workers: int, index: int, addresses: str, env: dict[str, str], log_file: Path, verbose: bool
) -> subprocess.Popen[bytes]:
    """One Bytewax cluster process of the streaming dataflow (``addresses``: every process's
    host:port, semicolon-separated); dataflows/cluster_process.py says why not bytewax.run.
    Its stderr is forwarded here, the runtime's connection retries to the run log only."""
    from dataflows.cluster_process import PARENT_PID_ENV

    argv = [sys.executable, "-m", "dataflows.cluster_process", "--workers", str(workers)]
    child = subprocess.Popen(
        [*argv, "--process-id", str(index), "--addresses", addresses],
        env={**env, PARENT_PID_ENV: str(os.getpid())},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    # Bytewax's runtime prints its connection retries on stdout: both streams are filtered.
    for stream, terminal, name in ((child.stdout, sys.stdout, "stdout"), (child.stderr, sys.stderr, "stderr")):
        forwarder = threading.Thread(
            target=_forward, args=(stream, terminal, log_file, verbose), name=f"{name}-{index}", daemon=True
        )
        forwarder.start()
        _forwarders.append(forwarder)
    return child


def _forward(stream: IO[bytes] | None, terminal: TextIO, log_file: Path, verbose: bool) -> None:
    """A child's output stream, line by line, to ``terminal``; to ``log_file`` instead
    (unless ``verbose``) the runtime's connection retries, and from a Python traceback or
    a Rust panic report on (a process failing: the parent says so in one line) everything
    but our own one-line errors and hints."""
    if stream is None:
        return
    failing = False
    with stream as lines, log_file.open("ab") as log:
        for line in lines:
            failing = failing or bool(_FAILURE_START.match(line))
            if not verbose and (_CONNECT_RETRY.match(line) or (failing and not _OURS.match(line))):
                log.write(line)
                log.flush()
            else:
                terminal.buffer.write(line)
                terminal.flush()


def _supervise(children: list[subprocess.Popen[bytes]]) -> int:
    """Wait for the children; stop all of them on failure or exit. A SIGTERM to this
    process (a service manager stopping it) stops them too: by default it would end this
    process at once and leave the children writing the shards, unsupervised."""

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        try:
            return _wait_for(children)
        except KeyboardInterrupt:
            # The first Ctrl-C or SIGTERM: a graceful stop, as with one process. The children
            # stop after their batches in flight (below: they got the SIGINT too, or get it
            # then); a second Ctrl-C while they do interrupts that wait (exit 130).
            _STOPPED.set()
    finally:
        signal.signal(signal.SIGTERM, previous)
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGINT)
        for child in children:
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()
        for forwarder in _forwarders:  # the children's last lines reach the terminal first
            forwarder.join(timeout=5)
    return 0 if all(child.returncode == 0 for child in children) else 1


def _wait_for(children: list[subprocess.Popen[bytes]]) -> int:
    """0 when every process finished, 1 as soon as one failed; Ctrl-C propagates."""
    while True:
        codes = [c.poll() for c in children]
        failed = [code for code in codes if code not in (None, 0)]
        if failed:
            print(
                f"streamfeat run: a process exited with code {failed[0]}; stopping the others (its output is in run.log)",
                file=sys.stderr,
            )
            return 1
        if all(code == 0 for code in codes):
            return 0
        time.sleep(0.2)


def _fresh_counts_files(directory: Path, processes: int) -> list[Path]:
    """One counts file per process, none left from an earlier run."""
    directory.mkdir(parents=True, exist_ok=True)
    files = [directory / f"counts-{i}.json" for i in range(processes)]
    for file in directory.glob("counts-*.json*"):
        file.unlink()
    return files


def _summed(files: list[Path]) -> RunCounts:
    return merged_counts([c for c in (read_counts_file(f) for f in files) if c is not None])


def _announce(job: StreamJob, bootstrap: str, args: argparse.Namespace, log_file: Path, how: str) -> None:
    print(
        f"streamfeat run: {job.source.topic!r} at {bootstrap} -> views "
        f"{', '.join(v.name for v in job.views)}"
        + (f" ({how})" if how else "")
        + (" (until caught up)" if args.until_caught_up else "; Ctrl-C stops")
        + f"; log {log_file}",
        file=sys.stderr,
        flush=True,
    )


def _run_in_place(args: argparse.Namespace) -> int:
    from dataflows.job import build_job

    settings = _settings(args)
    log_file = log_to_file(_run_log(settings), verbose=args.verbose)
    job = build_job(settings, args.source, tail=not args.until_caught_up, workers=args.workers)
    check_source_topic(settings.kafka_bootstrap, job.source.topic)
    _announce(job, settings.kafka_bootstrap, args, log_file, "")
    stop_gracefully_on_sigint()
    forced = False
    with native_stderr_to(log_file) as terminal:
        reporter = RunReporter(job.source.topic, settings.kafka_bootstrap, out=terminal)
        reporter.start()
        try:
            _run_dataflow(job, args.workers)
        except KeyboardInterrupt:  # a second Ctrl-C
            forced = True
        finally:
            reporter.stop()
    interrupted = forced or stop_requested()
    print(reporter.summary(caught_up=args.until_caught_up and not interrupted, interrupted=interrupted))
    return 0


def _run_dataflow(job: StreamJob, workers: int) -> None:
    """Run the Bytewax dataflow; an error of ours comes out as itself, not as Bytewax's chain."""
    from bytewax._bytewax import cli_main

    from dataflows.stream import build_flow, job_epoch_interval

    try:
        cli_main(  # type: ignore[no-untyped-call]
            build_flow(job), workers_per_process=workers, epoch_interval=job_epoch_interval(job)
        )
    except (KeyboardInterrupt, StreamfeatError):
        raise
    except Exception as exc:
        ours = _streamfeat_cause(exc)
        if ours is not None:
            raise ours from None
        if _interrupted_in(exc):
            raise KeyboardInterrupt from None
        logging.getLogger("streamfeat.run").error("the dataflow failed", exc_info=exc)
        raise DataflowRunError(
            f"the dataflow failed: {_innermost(exc)}",
            hint="the full traceback is in the run log (see the first line); "
            "restarting resumes from the applied offsets",
        ) from None


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _streamfeat_cause(exc: BaseException) -> StreamfeatError | None:
    return next((e for e in _chain(exc) if isinstance(e, StreamfeatError)), None)


def _interrupted_in(exc: BaseException) -> bool:
    return any(isinstance(e, KeyboardInterrupt) for e in _chain(exc))


def _innermost(exc: BaseException) -> str:
    last = _chain(exc)[-1]
    return f"{type(last).__name__}: {last}"
