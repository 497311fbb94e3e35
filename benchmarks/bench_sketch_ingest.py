"""End-to-end ingest of the example repo with and without its sketch and list functions,
and of its plain views with a distinct count and percentiles added to each, on this tree
and (optionally) on an older revision's engine, side by side in one run.

One pre-filled topic; each run is ``benchmarks.peers.ours_ingest`` (Kafka -> decode ->
route -> kernel -> RocksDB + Parquet log, one worker) in its own child process. The
``plain`` variant strips every sketch and list aggregation from the example repo's views
(a view left without aggregations is dropped): the repo as it was before issue 16's
functions. Runs alternate (tree, variant) round by round, so drift on a noisy machine
hits every configuration alike. Reports events/s per configuration, the with/without
ratio of each tree (issue 16: at least 0.7) and the speed-up over the baseline.

    .venv/bin/python -m benchmarks.bench_sketch_ingest [smoke|small|full] [--baseline=REV] [--revision=REV]

``full`` is the full-size ingest's shape (1M events, 100k users, so 300k cards): more
distinct card ids than the value-hash memo holds, as in production data.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import PY, bootstrap, delete_topic, emit, new_topic, run_child
from engine.generate import GeneratorConfig, produce_events
from engine.kernel.layout import LIST_FUNCTIONS, SKETCH_FUNCTIONS

SIZES = {"smoke": (20_000, 2_000), "small": (200_000, 20_000), "full": (1_000_000, 100_000)}  # events, users
ROUNDS = 3
ROOT = Path(__file__).resolve().parent.parent
BLOB_FUNCTIONS = frozenset(SKETCH_FUNCTIONS + LIST_FUNCTIONS)
VARIANTS = ("plain", "with_sketches", "plain_plus_distinct_percentiles")
#: The variants measured against ``plain``: the whole example repo (its sketch and list
#: views included), and the issue's own wording: a distinct count and percentiles added
#: to every plain view.
MEASURED = VARIANTS[1:]


class _StrippedRepo:
    """The example repo whose stream views keep only their float64-partial aggregations."""

    def __init__(self, repo: Any) -> None:
        self._repo = repo

    def source(self, name: str) -> Any:
        return self._repo.source(name)

    def views_for_source(self, name: str) -> tuple[Any, ...]:
        out = []
        for view in self._repo.views_for_source(name):
            kept = [a for a in view.aggregations if str(getattr(a.function, "value", a.function)) not in BLOB_FUNCTIONS]
            if kept:
                out.append(dataclasses.replace(view, aggregations=kept))
        return tuple(out)


class _DistinctAndPercentiles(_StrippedRepo):
    """The plain views, each with a HyperLogLog distinct count of cards and the 50th,
    95th and 99th percentile of amounts over its longest window (issue 16 item 5:
    "adding distinct counts and percentiles to every view")."""

    def views_for_source(self, name: str) -> tuple[Any, ...]:
        from engine.definitions import Aggregation

        out = []
        for view in super().views_for_source(name):
            finite = [a.window for a in view.aggregations if a.window is not None]
            window = max(finite) if finite else None
            added = [
                Aggregation(
                    column="card_id", function="count_distinct_approx", window=window, name=f"{view.name}_bench_cards"
                ),
                Aggregation(
                    column="amount",
                    function="percentile",
                    q=(0.5, 0.95, 0.99),
                    window=window,
                    name=f"{view.name}_bench_amount",
                ),
            ]
            out.append(dataclasses.replace(view, aggregations=[*view.aggregations, *added]))
        return tuple(out)


_REPO_OF_VARIANT = {"plain": _StrippedRepo, "plain_plus_distinct_percentiles": _DistinctAndPercentiles}


def child(bootstrap_servers: str, topic: str, workdir: str, variant: str) -> None:
    """One ingest run (``ours_ingest``) of the variant's repo."""
    from benchmarks.peers import ours_ingest

    wrapper = _REPO_OF_VARIANT.get(variant)
    if wrapper is not None:
        namespace = vars(ours_ingest)
        load = namespace["load_repo"]
        namespace["load_repo"] = lambda path: wrapper(load(path))
    ours_ingest.main(bootstrap_servers, topic, Path(workdir), 8)


def _export(revision: str, into: Path) -> Path:
    """``engine``, ``dataflows`` and ``feature_defs`` as at ``revision``; the benchmark
    harness from this tree, so every side is measured the same way."""
    archive = subprocess.run(
        ["git", "archive", revision, "engine", "dataflows", "feature_defs"], cwd=ROOT, capture_output=True, check=True
    )
    into.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    shutil.copytree(ROOT / "benchmarks", into / "benchmarks", ignore=shutil.ignore_patterns("results", "__pycache__"))
    return into


def _once(tree: Path, servers: str, topic: str, variant: str, events: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"bench_sketch_ingest_{variant}_"))
    try:
        script = (
            f"import sys; sys.path.insert(0, {str(tree)!r}); from benchmarks.bench_sketch_ingest import child; "
            f"child({servers!r}, {topic!r}, {str(work)!r}, {variant!r})"
        )
        result = run_child([PY, "-c", script], timeout=1800, env={"PYTHONPATH": str(tree)})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if result["events"] < events:
        raise RuntimeError(f"ingest {variant} in {tree}: consumed {result['events']} of {events} events")
    return result


def run(size: str = "smoke", baseline: str | None = None, revision: str | None = None) -> dict[str, Any]:
    """``revision``: measure that commit instead of the working tree (so editing the tree
    during a long run does not change what is measured)."""
    events, users = SIZES[size]
    servers, stop = bootstrap()
    topic = new_topic(servers, "bench-sketch-ingest")
    trees = {"current": ROOT}
    rates: dict[str, dict[str, list[float]]] = {}
    cpu_rates: dict[str, dict[str, list[float]]] = {}
    stages: dict[str, dict[str, Any]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-sketch-ingest-tree-") as tmp:
            if revision is not None:
                trees["current"] = _export(revision, Path(tmp) / "current")
            if baseline is not None:
                trees["baseline"] = _export(baseline, Path(tmp) / "baseline")
            produce_events(
                GeneratorConfig(events=events, users=users, merchants=1_000, seed=7, rate=200.0), topic, servers
            )
            rates = {tree: {variant: [] for variant in VARIANTS} for tree in trees}
            cpu_rates = {tree: {variant: [] for variant in VARIANTS} for tree in trees}
            for _ in range(ROUNDS):
                for tree, path in trees.items():
                    for variant in VARIANTS:
                        result = _once(path, servers, topic, variant, events)
                        rates[tree][variant].append(round(result["events"] / result["seconds"]))
                        cpu_rates[tree][variant].append(round(result["events"] / result["cpu_seconds"]))
                        stages[f"{tree}/{variant}"] = result["stage_us_per_event"]
    finally:
        delete_topic(servers, topic)
        stop()
    out: dict[str, Any] = {
        "bench": "sketch_ingest",
        "size": size,
        "events": events,
        "revision": revision or "working tree",
        "baseline_revision": baseline,  # "baseline" itself holds that tree's runs
    }
    for tree, by_variant in rates.items():
        cpu = cpu_rates[tree]
        # Events per CPU second of the child: steadier than wall time on a shared machine.
        out[tree] = {"events_per_s_runs": by_variant, "events_per_cpu_s_runs": cpu}
        for variant in MEASURED:
            ratios = np.asarray(by_variant[variant]) / np.asarray(by_variant["plain"])
            cpu_ratios = np.asarray(cpu[variant]) / np.asarray(cpu["plain"])
            out[tree][f"ratio_{variant}_vs_plain"] = round(float(np.median(ratios)), 3)
            out[tree][f"ratio_{variant}_runs"] = [round(float(r), 3) for r in ratios]
            out[tree][f"cpu_ratio_{variant}_vs_plain"] = round(float(np.median(cpu_ratios)), 3)
    if baseline is not None:
        for variant in VARIANTS:
            speedups = np.asarray(rates["current"][variant]) / np.asarray(rates["baseline"][variant])
            out[f"speedup_{variant}_vs_baseline"] = round(float(np.median(speedups)), 3)
            cpu_speedups = np.asarray(cpu_rates["current"][variant]) / np.asarray(cpu_rates["baseline"][variant])
            out[f"cpu_speedup_{variant}_vs_baseline"] = round(float(np.median(cpu_speedups)), 3)
    out["stage_us_per_event_last_run"] = stages
    return out


def _main(argv: Sequence[str]) -> None:
    size = next((a for a in argv if a in SIZES), "smoke")
    options = dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a)
    emit(run(size, options.get("baseline"), options.get("revision")))


if __name__ == "__main__":
    _main(sys.argv[1:])
