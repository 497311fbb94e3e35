"""Where the CPU of a multi-process run goes (issue #18 item 4): per process, per thread
and per stage, at 1, 2 and 4 processes on the same input; plus the idle cost of a
tailing cluster on an empty topic.

    .venv/bin/python -m benchmarks.cluster_profile [EVENTS] [USERS] [PROCESSES ...]

Each process is ``dataflows.cluster_process`` (1 process: ``cli_main`` in place, as
``streamfeat run`` does) with these installed before the flow is built:

- the stage clock of the ingest breakdown (benchmarks/stage_profile.py);
- the exchange clock: Bytewax pickles every item that crosses to another process with
  ``pickle.dumps`` and unpickles it with ``pickle.loads`` (looked up by name on each
  call), so wrapping both measures serialization CPU and bytes;
- a thread sampler: user + system time of every thread of the process
  (``/proc/self/task``), grouped by thread name (Bytewax worker, timely network
  threads, librdkafka, RocksDB, Python helpers);
- a clock on the cyclic garbage collector (it runs inside the stages, so it overlaps them).

``applies`` counts shard writes and the source batches each carried: fewer batches per
apply means each touched entity record is rewritten more often per event.
"""

from __future__ import annotations

import functools
import json
import os
import pickle
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import PY, ROOT, bootstrap, copy_repo, delete_topic, new_topic, streamfeat_cli

SHARDS = 8
PARTITIONS = 4
_TICKS = os.sysconf("SC_CLK_TCK")


def _thread_times() -> dict[int, tuple[str, float]]:
    """tid -> (thread name, user + system seconds) of every thread of this process."""
    out: dict[int, tuple[str, float]] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                stat = f.read()
            with open(f"/proc/self/task/{tid}/comm") as f:
                name = f.read().strip()
        except OSError:  # the thread ended meanwhile
            continue
        fields = stat.rsplit(")", 1)[1].split()
        out[int(tid)] = (name, (int(fields[11]) + int(fields[12])) / _TICKS)
    return out


class _ThreadSampler:
    """The last CPU time seen per thread (threads that end keep their last sample)."""

    def __init__(self, interval_s: float = 0.1) -> None:
        self.seen: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._interval = interval_s
        self._thread = threading.Thread(target=self._loop, name="cpu-sampler", daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.seen.update(_thread_times())

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        self.seen.update(_thread_times())
        by_name: dict[str, float] = {}
        for name, seconds in self.seen.values():
            group = name.rstrip("0123456789") or name
            by_name[group] = round(by_name.get(group, 0.0) + seconds, 3)
        return dict(sorted(by_name.items(), key=lambda kv: -kv[1]))


class _ExchangeClock:
    """CPU and bytes of Bytewax's pickling of items crossing processes."""

    def __init__(self) -> None:
        self.dumps_ns = 0
        self.loads_ns = 0
        self.dumps_calls = 0
        self.bytes_out = 0

    def install(self) -> None:
        dumps, loads = pickle.dumps, pickle.loads
        clock = time.thread_time_ns

        @functools.wraps(dumps)
        def timed_dumps(obj: Any, *args: Any, **kwargs: Any) -> bytes:
            started = clock()
            out = dumps(obj, *args, **kwargs)
            self.dumps_ns += clock() - started
            self.dumps_calls += 1
            self.bytes_out += len(out)
            return out

        @functools.wraps(loads)
        def timed_loads(data: Any, *args: Any, **kwargs: Any) -> Any:
            started = clock()
            out = loads(data, *args, **kwargs)
            self.loads_ns += clock() - started
            return out

        pickle.dumps = timed_dumps
        pickle.loads = timed_loads


class _GcClock:
    """CPU time of the cyclic garbage collector (all threads)."""

    def __init__(self) -> None:
        self.ns = 0
        self._started: dict[int, int] = {}

    def install(self) -> None:
        import gc

        def callback(phase: str, info: dict[str, int]) -> None:
            me = threading.get_ident()
            if phase == "start":
                self._started[me] = time.thread_time_ns()
            elif me in self._started:
                self.ns += time.thread_time_ns() - self._started.pop(me)

        gc.callbacks.append(callback)


class _ApplyCounter:
    """Shard writes and the source batches / rows each carried."""

    def __init__(self) -> None:
        self.applies = 0
        self.batches = 0
        self.rows = 0

    def install(self) -> None:
        from engine.apply import ShardApplier

        original: Callable[..., None] = ShardApplier.apply

        @functools.wraps(original)
        def counted(applier: ShardApplier, batches: Any, **kwargs: Any) -> None:
            batches = list(batches)
            self.applies += 1
            self.batches += len(batches)
            self.rows += sum(b.row_count for b in batches)
            original(applier, batches, **kwargs)

        setattr(ShardApplier, "apply", counted)  # noqa: B010 (replaces a method: mypy refuses the assignment)


def child(out: Path, processes: int, process_id: int, addresses: str) -> None:
    """One profiled process of the cluster; writes its figures to ``out`` as JSON."""
    from benchmarks.stage_profile import StageClock

    stages = StageClock()
    stages.install()
    exchange = _ExchangeClock()
    exchange.install()
    applies = _ApplyCounter()
    applies.install()
    collector = _GcClock()
    collector.install()
    sampler = _ThreadSampler()
    sampler.start()
    started = time.perf_counter()
    # Start-up (imports, the flow built by dataflows.app) ends when the dataflow starts:
    # ``work_cpu_s`` is what the run costs after it, so start-up noise stays out.
    import dataflows.app  # noqa: F401 (builds the flow now, as cluster_process would)

    startup = resource.getrusage(resource.RUSAGE_SELF)
    if processes == 1:
        from bytewax._bytewax import cli_main

        from dataflows.app import flow
        from dataflows.stream import EPOCH_INTERVAL

        cli_main(flow, workers_per_process=1, epoch_interval=EPOCH_INTERVAL)  # type: ignore[no-untyped-call]
    else:
        from dataflows import cluster_process

        cluster_process.main(["--workers", "1", "--process-id", str(process_id), "--addresses", addresses])
    usage = resource.getrusage(resource.RUSAGE_SELF)
    threads = sampler.stop()
    result = {
        "process": process_id,
        "seconds": round(time.perf_counter() - started, 3),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
        "work_cpu_s": round(usage.ru_utime + usage.ru_stime - startup.ru_utime - startup.ru_stime, 3),
        "threads_cpu_s": threads,
        "stage_cpu_s": {k: round(v / 1e9, 3) for k, v in stages.ns.items()},
        "stage_calls": stages.calls,
        "pickle_dumps_cpu_s": round(exchange.dumps_ns / 1e9, 3),
        "pickle_loads_cpu_s": round(exchange.loads_ns / 1e9, 3),
        "pickle_dumps_calls": exchange.dumps_calls,
        "pickle_bytes_out": exchange.bytes_out,
        "gc_cpu_s": round(collector.ns / 1e9, 3),
        "applies": applies.applies,
        "batches_applied": applies.batches,
        "rows_applied": applies.rows,
        "voluntary_switches": usage.ru_nvcsw,
        "involuntary_switches": usage.ru_nivcsw,
    }
    out.write_text(json.dumps(result))


def _free_addresses(processes: int) -> str:
    from engine.ports import free_ports

    return ";".join(f"127.0.0.1:{port}" for port in free_ports(processes))


def _start(
    work: Path, repo: Path, servers: str, processes: int, label: str, *, tail: bool, tree: Path = ROOT
) -> tuple[list[subprocess.Popen[bytes]], list[Path], Path]:
    """The processes of one cluster; ``tree`` is the checkout whose code they run (this
    file's child, run by path, profiles any checkout: benchmarks/scaling_ab.py)."""
    from engine.state.rocksdb_store import RocksDBStore

    data = work / f"data-{label}"
    streamfeat_cli("apply", "--repo", str(repo), "--data-dir", str(data), "--shards", str(SHARDS), timeout=600)
    RocksDBStore(data / "state", SHARDS).close()  # every shard exists before the children start
    env = {
        **os.environ,
        "PYTHONPATH": str(tree),
        "STREAMFEAT_REPO": str(repo),
        "STREAMFEAT_DATA_DIR": str(data),
        "STREAMFEAT_KAFKA_BOOTSTRAP": servers,
        "STREAMFEAT_RUN_TAIL": "1" if tail else "0",
        "STREAMFEAT_RUN_PROCESSES": str(processes),
        "STREAMFEAT_METRICS_PORT": "0",  # N processes cannot share one metrics port
    }
    addresses = _free_addresses(processes)
    outs = [work / f"{label}-{i}.json" for i in range(processes)]
    procs = [
        subprocess.Popen(
            [
                *_python(tree),
                str(Path(__file__).resolve()),
                "child",
                str(outs[i]),
                str(processes),
                str(i),
                addresses,
            ],
            cwd=tree,
            env=env,
            start_new_session=True,
        )
        for i in range(processes)
    ]
    return procs, outs, data


def _python(tree: Path) -> list[str]:
    venv = tree / ".venv" / "bin" / "python"
    return [str(venv)] if tree != ROOT and venv.exists() else [PY]


def profile_run(work: Path, repo: Path, servers: str, processes: int, label: str, tree: Path = ROOT) -> dict[str, Any]:
    """One until-caught-up run: every process's figures and their sums."""
    procs, outs, data = _start(work, repo, servers, processes, label, tail=False, tree=tree)
    started = time.perf_counter()
    for p in procs:
        if p.wait(timeout=900) != 0:
            raise RuntimeError(f"{label}: a process exited {p.returncode}")
    wall = time.perf_counter() - started
    per_process = [json.loads(o.read_text()) for o in outs]
    shutil.rmtree(data, ignore_errors=True)
    return {"processes": processes, "wall_s": round(wall, 3), "per_process": per_process}


def _proc_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def idle_cost(work: Path, repo: Path, servers: str, processes: int, settle_s: float, window_s: float) -> dict[str, Any]:
    """CPU seconds per second of each process of a tailing cluster over an empty topic."""
    procs, _, data = _start(work, repo, servers, processes, f"idle-{processes}", tail=True)
    try:
        time.sleep(settle_s)
        before = [_proc_cpu_s(p.pid) for p in procs]
        time.sleep(window_s)
        after = [_proc_cpu_s(p.pid) for p in procs]
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    shutil.rmtree(data, ignore_errors=True)
    per_process = [round((a - b) / window_s, 4) for a, b in zip(after, before, strict=True)]
    return {
        "processes": processes,
        "cpu_s_per_s_per_process": per_process,
        "cpu_s_per_s_total": round(sum(per_process), 4),
    }


def per_event_us(run: dict[str, Any], events: int) -> dict[str, Any]:
    """Sums over the processes of one run, in CPU microseconds per event."""
    procs = run["per_process"]

    def us(seconds: float) -> float:
        return round(seconds * 1e6 / events, 3)

    threads: dict[str, float] = {}
    for p in procs:
        for name, seconds in p["threads_cpu_s"].items():
            threads[name] = threads.get(name, 0.0) + seconds
    stages: dict[str, float] = {}
    for p in procs:
        for name, seconds in p["stage_cpu_s"].items():
            stages[name] = stages.get(name, 0.0) + seconds
    applies = sum(p["applies"] for p in procs)
    return {
        "processes": run["processes"],
        "total": us(sum(p["cpu_s"] for p in procs)),
        "work": us(sum(p.get("work_cpu_s", p["cpu_s"]) for p in procs)),
        "threads": {k: us(v) for k, v in sorted(threads.items(), key=lambda kv: -kv[1])},
        "stages": {k: us(v) for k, v in stages.items()},
        "pickle_dumps": us(sum(p["pickle_dumps_cpu_s"] for p in procs)),
        "pickle_loads": us(sum(p["pickle_loads_cpu_s"] for p in procs)),
        "gc": us(sum(p["gc_cpu_s"] for p in procs)),
        "pickle_bytes_per_event": round(sum(p["pickle_bytes_out"] for p in procs) / events, 1),
        "applies": applies,
        "batches_per_apply": round(sum(p["batches_applied"] for p in procs) / max(applies, 1), 2),
        "rows_per_apply": round(sum(p["rows_applied"] for p in procs) / max(applies, 1), 1),
        "decoded_batches": sum(p["stage_calls"]["decode"] for p in procs),
        "involuntary_switches": sum(p["involuntary_switches"] for p in procs),
    }


def main(events: int, users: int, counts: tuple[int, ...]) -> dict[str, Any]:
    from engine.generate import GeneratorConfig, produce_events

    servers, stop = bootstrap()
    work = Path(tempfile.mkdtemp(prefix="cluster_profile_"))
    topic = new_topic(servers, "prof-cpu", partitions=PARTITIONS)
    empty = new_topic(servers, "prof-idle", partitions=PARTITIONS)
    load = os.getloadavg()
    try:
        produce_events(GeneratorConfig(events=events, users=users, seed=9, rate=200.0), topic, servers)
        repo, idle_repo = copy_repo(work, topic), copy_repo(work, empty)
        runs = [profile_run(work, repo, servers, n, f"full-{n}") for n in counts]
        idle = [idle_cost(work, idle_repo, servers, n, settle_s=8.0, window_s=10.0) for n in counts]
    finally:
        delete_topic(servers, topic)
        delete_topic(servers, empty)
        stop()
        shutil.rmtree(work, ignore_errors=True)
    return {
        "events": events,
        "users": users,
        "load_before": load,
        "load_after": os.getloadavg(),
        "summary": [per_event_us(r, events) for r in runs],
        "idle": idle,
        "runs": runs,
    }


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:
        child(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
    else:
        numbers = [int(a) for a in sys.argv[1:]]
        ev = numbers[0] if numbers else 200_000
        us = numbers[1] if len(numbers) > 1 else 20_000
        print(json.dumps(main(ev, us, tuple(numbers[2:]) or (1, 2, 4)), indent=1))
