"""The write path's kernel over the example fraud repo's views, with and without the
sketch and list aggregations, side by side.

Events come from the demo generator (``engine.generate``), in batches of 1,000 as a
Kafka poll hands them over. For every stream view of ``feature_defs/`` and every batch
the bench runs what ``engine.view_merge.merge_view_rows`` runs, without RocksDB and
Kafka: aggregate the view's rows into (entity, tile) partials and sketch blobs, then
merge them into the touched entities' stored records (decode, merge, retention with
folding for lifetime windows, encode: one step, ``engine.kernel.record_merge``). The ``plain`` variant is the same repo with every sketch and list
aggregation removed (a view left without aggregations is dropped), which is what the
example repo was before those functions were added.

Reports events per CPU second of each variant, their ratio (issue 16: adding distinct counts and
percentiles should cost at most 30% of ingest; this is the kernel's share), the share of
the time spent building and merging sketch blobs, and state bytes per entity per view.
Not a timed test: a measurement.

    .venv/bin/python -m benchmarks.bench_repo_kernel [smoke|small] [--baseline=REV] [--rounds=N] [--profile]
    .venv/bin/python -m benchmarks.bench_repo_kernel batches [smoke|small] [--baseline=REV] [--rounds=N]
    .venv/bin/python -m benchmarks.bench_repo_kernel batches [smoke|small] --profile [--batch=10]

``batches`` measures the fixed cost per batch instead (issue 19): kernel CPU per batch
of the whole repo at batch sizes 10, 100, 1,000 and 5,000 (:func:`run_batch_sizes`);
with ``--profile``, Python calls and numpy reductions per view per batch.

``--baseline=REV`` also runs the kernel of git revision REV (exported to a temporary
directory) in alternating child processes, and reports the speed-up of this tree.
"""

from __future__ import annotations

import cProfile
import json
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from benchmarks.common import emit
from engine.definitions.repo import load_repo
from engine.generate import GeneratorConfig, generate
from engine.kernel.aggregate import aggregate_batch, aggregate_sketches
from engine.kernel.batch_merge import FlatTiles, decode_many, encode_many, merge_flat, retain
from engine.kernel.layout import LIST_FUNCTIONS, SKETCH_FUNCTIONS, encode_positions
from engine.kernel.view_spec import ViewSpec
from engine.kernel.window import tile_id
from engine.timefmt import NO_EVENT_TS

SIZES = {"smoke": (20_000, 2_000), "small": (200_000, 20_000)}  # events, users
BATCH = 1_000
ROOT = Path(__file__).resolve().parent.parent
BLOB_FUNCTIONS = frozenset(SKETCH_FUNCTIONS + LIST_FUNCTIONS)
Int64Array = npt.NDArray[np.int64]


@dataclass(frozen=True)
class BenchView:
    name: str
    spec: ViewSpec
    entity_columns: tuple[str, ...]
    has_lifetime_window: bool


def repo_views(strip_blob_functions: bool) -> list[BenchView]:
    """The example repo's stream views as kernel specs (optionally without sketch/list functions)."""
    repo = load_repo("feature_defs")
    out = []
    for view in repo.views_for_source("transactions"):
        spec = ViewSpec.from_view(view)
        aggs = spec.aggregations
        if strip_blob_functions:
            aggs = tuple(a for a in aggs if a.function not in BLOB_FUNCTIONS)
            if not aggs:
                continue
        columns = tuple(dict.fromkeys(a.column for a in aggs))
        spec = ViewSpec(spec.interval_ms, columns, aggs, spec.retention_ms)
        entity_columns = tuple(f"{e.name}_id" for e in view.entities)
        out.append(BenchView(view.name, spec, entity_columns, spec.has_lifetime_window))
    return out


def _events(n: int, users: int) -> dict[str, Any]:
    columns = generate(GeneratorConfig(events=n, users=users, merchants=1_000, seed=7, rate=200.0)).columns
    purchase = np.asarray([t == "PURCHASE" for t in columns["event_type"]])
    out: dict[str, Any] = {"index": np.flatnonzero(purchase)}
    for name in ("user_id", "merchant_id", "card_id"):
        out[name] = np.asarray(columns[name], dtype=object)[purchase]
    out["amount"] = np.asarray(columns["amount"], dtype=np.float64)[purchase]
    out["ts"] = np.asarray(columns["ts"], dtype=np.int64)[purchase]
    return out


def _entity_codes(view: BenchView, events: dict[str, Any], sl: slice) -> tuple[list[bytes], Int64Array]:
    """The batch's entity keys and each event's code (what routing hands the kernel)."""
    parts = [np.asarray(events[c], dtype=object)[sl] for c in view.entity_columns]
    joined = parts[0] if len(parts) == 1 else np.asarray(["|".join(p) for p in zip(*parts, strict=True)])
    keys_s, codes = np.unique(joined.astype(str), return_inverse=True)
    return [k.encode() for k in keys_s.tolist()], codes.reshape(-1).astype(np.int64)


def _kernel_step(
    view: BenchView,
    events: dict[str, Any],
    sl: slice,
    keys: list[bytes],
    codes: Int64Array,
    records: dict[bytes, bytes],
    timings: dict[str, float],
) -> None:
    """One batch (the events of ``sl``) of one view through what
    ``engine.view_merge.merge_view_rows`` runs between routing and the state write;
    adds its CPU seconds per step to ``timings``."""
    spec, layout = view.spec, view.spec.layout
    clock = time.process_time  # CPU time: steadier than wall time on a shared machine
    started = clock()
    ts = events["ts"][sl]
    pos = encode_positions(np.zeros(len(ts), dtype=np.int64), events["index"][sl])
    tiles = tile_id(ts, spec.interval_ms)
    amount = events["amount"][sl]
    values = np.stack([amount if c == "amount" else np.zeros(len(ts)) for c in spec.columns], axis=1)
    codes_u, tiles_u, partials = aggregate_batch(layout, codes, tiles, ts, pos, values)
    t1 = clock()
    sketches = None
    if layout.sketch_slots:
        raw = {c: events[c][sl] for c in layout.sketch_columns}
        sketches = aggregate_sketches(layout, codes, tiles, ts, pos, raw)
    t2 = clock()
    batch_max = np.full(len(keys), NO_EVENT_TS, dtype=np.int64)
    np.maximum.at(batch_max, codes, ts)
    new = FlatTiles(codes_u, tiles_u, partials, batch_max, sketches)
    for key, record in zip(keys, _merge_into_records(view, [records.get(k) for k in keys], new), strict=True):
        records[key] = record
    t3 = clock()
    timings["aggregate"] += t1 - started
    timings["build_blobs"] += t2 - t1
    timings["decode_merge_encode"] += t3 - t2


def _ingest_view(view: BenchView, events: dict[str, Any], timings: dict[str, float]) -> tuple[int, int]:
    """Run every batch of ``events`` through the view's write-path kernel; returns
    (entities stored, total state bytes)."""
    records: dict[bytes, bytes] = {}
    n = len(events["ts"])
    for a in range(0, n, BATCH):
        sl = slice(a, a + BATCH)
        started = time.process_time()
        keys, codes = _entity_codes(view, events, sl)
        timings["aggregate"] += time.process_time() - started
        _kernel_step(view, events, sl, keys, codes, records, timings)
    return len(records), sum(map(len, records.values()))


def _merge_into_records(view: BenchView, stored: list[bytes | None], new: FlatTiles) -> list[bytes]:
    """What ``engine.view_merge.merge_view_rows`` runs between reading and writing the
    records (decode, merge, retention, encode), in this tree or an older one."""
    spec, layout = view.spec, view.spec.layout
    try:
        from engine.kernel.record_merge import merge_records
    except ImportError:  # a --baseline tree from before merge_records: the steps it ran
        merged = merge_flat(layout, decode_many(layout, stored), new)
        merged = retain(merged, spec.retention_ms, spec.interval_ms, layout if view.has_lifetime_window else None)
        return encode_many(layout, merged, len(stored))
    return merge_records(layout, stored, new, spec.retention_ms, spec.interval_ms, view.has_lifetime_window)


def run_variant(views: Sequence[BenchView], events: dict[str, Any]) -> dict[str, Any]:
    timings = dict.fromkeys(("aggregate", "build_blobs", "decode_merge_encode"), 0.0)
    state: dict[str, float] = {}
    started = time.process_time()
    for view in views:
        entities, size = _ingest_view(view, events, timings)
        state[view.name] = round(size / max(1, entities))
    seconds = time.process_time() - started
    n = len(events["ts"])
    return {
        "events_per_s": round(n / seconds),
        "us_per_event": round(1e6 * seconds / n, 2),
        "us_per_event_by_step": {k: round(1e6 * v / n, 2) for k, v in timings.items()},
        "state_bytes_per_entity": state,
    }


def run_once(size: str) -> dict[str, Any]:
    """Both variants once, on the kernel this interpreter imports."""
    n, users = SIZES[size]
    events = _events(n, users)
    return {name: run_variant(repo_views(strip), events) for name, strip in (("plain", True), ("with_sketches", False))}


def _child(size: str, tree: Path, function: str = "run_once") -> dict[str, Any]:
    """``function(size)`` (:func:`run_once` or :func:`run_batch_sizes`) in a child process
    importing ``engine`` from ``tree``."""
    script = f"import json, sys; sys.path.insert(0, {str(tree)!r}); " + (
        f"from benchmarks.bench_repo_kernel import {function}; print(json.dumps({function}({size!r})))"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=tree, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _export(revision: str, into: Path) -> Path:
    """The engine, example repo and this bench as they are at ``revision`` (the bench and
    its helpers from the working tree, so both sides measure the same way)."""
    archive = subprocess.run(
        ["git", "archive", revision, "engine", "feature_defs"], cwd=ROOT, capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    (into / "benchmarks").mkdir()
    for name in ("__init__.py", "common.py", "bench_repo_kernel.py"):
        shutil.copy(ROOT / "benchmarks" / name, into / "benchmarks" / name)
    return into


def run(size: str = "smoke", rounds: int = 3, baseline: str | None = None) -> dict[str, Any]:
    """``rounds`` alternating runs of each tree (this one, and ``baseline``'s kernel when
    given), each child running the plain and the sketch variant on the same events."""
    trees = {"current": ROOT}
    with tempfile.TemporaryDirectory(prefix="bench-repo-kernel-") as tmp:
        if baseline is not None:
            trees["baseline"] = _export(baseline, Path(tmp))
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
        for _ in range(rounds):  # alternate, so drift on a noisy machine hits every side alike
            for name, tree in trees.items():
                runs[name].append(_child(size, tree))
    out: dict[str, Any] = {"bench": "repo_kernel", "size": size, "rounds": rounds, "baseline": baseline}
    for name, results in runs.items():
        out[name] = _summary(results)
    if baseline is not None:
        for variant in ("plain", "with_sketches"):
            ratios = [
                c[variant]["events_per_s"] / b[variant]["events_per_s"]
                for c, b in zip(runs["current"], runs["baseline"], strict=True)
            ]
            out[f"speedup_{variant}_vs_baseline"] = round(float(np.median(ratios)), 3)
    return out


def _summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    ratios = [r["with_sketches"]["events_per_s"] / r["plain"]["events_per_s"] for r in results]
    return {
        "ratio_with_sketches_vs_plain": round(float(np.median(ratios)), 3),
        "ratio_runs": [round(x, 3) for x in ratios],
        **{
            variant: {
                "events_per_s_median": round(float(np.median([r[variant]["events_per_s"] for r in results]))),
                "events_per_s_runs": [r[variant]["events_per_s"] for r in results],
                "last_run": results[-1][variant],
            }
            for variant in ("plain", "with_sketches")
        },
    }


# Batch sizes of the fixed-cost sweep, and the events each runs after the warm-up:
# enough batches for a steady mean, the same events for every size.
BATCH_SIZES = (10, 100, 1_000, 5_000)
SWEEP_EVENTS = {"smoke": 2_000, "small": 20_000}
SWEEP_BATCHES_MIN = 4


def run_batch_sizes(size: str) -> dict[str, Any]:
    """Kernel CPU per batch of the whole example repo (every stream view with its sketch
    and list aggregations) at each of :data:`BATCH_SIZES`, on the kernel this interpreter
    imports.

    The first half of the events is applied in batches of :data:`BATCH` (not measured),
    so the records hold realistic state; then, from a copy of that state, each batch
    size runs over the next events (:data:`SWEEP_EVENTS`, at least
    :data:`SWEEP_BATCHES_MIN` batches). Per batch: the sum over the views of
    aggregate, blob build and decode + merge + retention + encode (routing's entity
    codes are computed before and not counted)."""
    n, users = SIZES[size]
    events = _events(n, users)
    views = repo_views(False)
    warm = len(events["ts"]) // 2
    stored: dict[str, dict[bytes, bytes]] = {v.name: {} for v in views}
    unused = dict.fromkeys(("aggregate", "build_blobs", "decode_merge_encode"), 0.0)
    for a in range(0, warm, BATCH):
        for view in views:
            sl = slice(a, min(a + BATCH, warm))
            keys, codes = _entity_codes(view, events, sl)
            _kernel_step(view, events, sl, keys, codes, stored[view.name], unused)
    out: dict[str, Any] = {}
    for batch in BATCH_SIZES:
        count = max(SWEEP_BATCHES_MIN, SWEEP_EVENTS[size] // batch)
        slices = [slice(warm + i * batch, warm + (i + 1) * batch) for i in range(count)]
        by_view: dict[str, float] = {}
        steps = dict.fromkeys(unused, 0.0)
        for view in views:
            records = dict(stored[view.name])
            batches = [(sl, *_entity_codes(view, events, sl)) for sl in slices]
            timings = dict.fromkeys(unused, 0.0)
            for sl, keys, codes in batches:
                _kernel_step(view, events, sl, keys, codes, records, timings)
            by_view[view.name] = 1e3 * sum(timings.values()) / count
            for step, seconds in timings.items():
                steps[step] += seconds
        total = sum(by_view.values())
        out[str(batch)] = {
            "batches": count,
            "ms_per_batch": round(total, 4),
            "us_per_event": round(1e3 * total / batch, 3),
            "ms_per_batch_by_view": {k: round(v, 4) for k, v in by_view.items()},
            "ms_per_batch_by_step": {k: round(1e3 * v / count, 4) for k, v in steps.items()},
        }
    return out


def run_batches(size: str = "small", rounds: int = 3, baseline: str | None = None) -> dict[str, Any]:
    """:func:`run_batch_sizes` in ``rounds`` alternating child processes of this tree
    and, when given, of ``baseline``'s kernel; medians, every round, and the median
    per-round ratio baseline / current of CPU per batch at each size."""
    trees = {"current": ROOT}
    with tempfile.TemporaryDirectory(prefix="bench-repo-kernel-") as tmp:
        if baseline is not None:
            trees["baseline"] = _export(baseline, Path(tmp))
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
        for _ in range(rounds):
            for name, tree in trees.items():
                runs[name].append(_child(size, tree, "run_batch_sizes"))
    out: dict[str, Any] = {"bench": "repo_kernel_batch_sizes", "size": size, "rounds": rounds, "baseline": baseline}
    for name, results in runs.items():
        out[name] = {
            batch: {
                "ms_per_batch_median": round(float(np.median([r[batch]["ms_per_batch"] for r in results])), 4),
                "ms_per_batch_runs": [r[batch]["ms_per_batch"] for r in results],
                "last_run": results[-1][batch],
            }
            for batch in results[0]
        }
    if baseline is not None:
        out["speedup_vs_baseline"] = {
            batch: round(
                float(
                    np.median(
                        [
                            b[batch]["ms_per_batch"] / c[batch]["ms_per_batch"]
                            for c, b in zip(runs["current"], runs["baseline"], strict=True)
                        ]
                    )
                ),
                3,
            )
            for batch in runs["current"][0]
        }
    return out


def profile_batches(size: str, batch: int) -> None:
    """cProfile of every view at one batch size after the warm-up of
    :func:`run_batch_sizes`: Python calls and numpy reductions per view per batch, and
    the top functions by own time."""
    n, users = SIZES[size]
    events = _events(n, users)
    views = repo_views(False)
    warm = len(events["ts"]) // 2
    unused = dict.fromkeys(("aggregate", "build_blobs", "decode_merge_encode"), 0.0)
    stored: dict[str, dict[bytes, bytes]] = {v.name: {} for v in views}
    for a in range(0, warm, BATCH):
        for view in views:
            sl = slice(a, min(a + BATCH, warm))
            _kernel_step(view, events, sl, *_entity_codes(view, events, sl), stored[view.name], unused)
    count = max(SWEEP_BATCHES_MIN, SWEEP_EVENTS[size] // batch)
    work = []
    for view in views:
        for i in range(count):
            sl = slice(warm + i * batch, warm + (i + 1) * batch)
            work.append((view, sl, *_entity_codes(view, events, sl)))
    profiler = cProfile.Profile()
    profiler.enable()
    for view, sl, keys, codes in work:
        _kernel_step(view, events, sl, keys, codes, stored[view.name], unused)
    profiler.disable()
    stats = pstats.Stats(profiler)
    view_batches = len(work)
    # Any: pstats' table of (file, line, name) -> (calls, primitive calls, own s, total s, callers).
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    calls = sum(row[1] for row in table.values())
    reductions = sum(row[1] for key, row in table.items() if key[2] == "<method 'reduce' of 'numpy.ufunc' objects>")
    print(
        f"batch {batch}: {view_batches} view-batches, {calls / view_batches:.0f} Python-level calls "
        f"and {reductions / view_batches:.1f} numpy reductions per view per batch"
    )
    stats.sort_stats("tottime").print_stats(40)


def profile(size: str) -> None:
    n, users = SIZES[size]
    events = _events(n, users)
    views = repo_views(False)
    profiler = cProfile.Profile()
    profiler.enable()
    run_variant(views, events)
    profiler.disable()
    pstats.Stats(profiler).sort_stats("cumtime").print_stats(40)


def _main(argv: Sequence[str]) -> None:
    size = next((a for a in argv if a in SIZES), "smoke")
    baseline = next((a.split("=", 1)[1] for a in argv if a.startswith("--baseline=")), None)
    rounds = int(next((a.split("=", 1)[1] for a in argv if a.startswith("--rounds=")), "3"))
    if "batches" in argv:
        if "--profile" in argv:
            batch = int(next((a.split("=", 1)[1] for a in argv if a.startswith("--batch=")), "10"))
            profile_batches(size, batch)
            return
        emit(run_batches(size, rounds, baseline))
        return
    if "--profile" in argv:
        profile(size)
        return
    emit(run(size, rounds, baseline))


if __name__ == "__main__":
    _main(sys.argv[1:])
