"""Child program: streamfeat's dataflow (example fraud views, one worker) over a pre-filled
topic until caught up; prints {"events", "seconds", "cpu_seconds", "stage_us_per_event",
"peak_rss_kb", "entities"} as JSON.

    python -m benchmarks.peers.ours_ingest BOOTSTRAP TOPIC WORKDIR [SHARDS]

``entities`` (view name -> entities stored in the state) is counted after the timed run.
``stage_us_per_event`` is the CPU breakdown of ``benchmarks/stage_profile.py``.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

from bytewax.testing import run_main

from benchmarks.common import emit, own_peak_rss_kb
from benchmarks.stage_profile import StageClock
from dataflows.stream import EPOCH_INTERVAL, StreamJob, build_flow
from engine.definitions import load_repo
from engine.state.rocksdb_store import RocksDBStore
from engine.state.secondary import resume_positions

REPO = Path(__file__).resolve().parents[2] / "feature_defs"


def main(bootstrap: str, topic: str, workdir: Path, shards: int) -> None:
    repo = load_repo(REPO)
    source = dataclasses.replace(repo.source("transactions"), topic=topic)
    views = tuple(dataclasses.replace(v, source=source) for v in repo.views_for_source("transactions"))
    job = StreamJob(
        source=source,
        views=views,
        bootstrap=bootstrap,
        state_dir=workdir / "state",
        shards=shards,
        log_root=str(workdir / "log"),
        tail=False,
    )
    stages = StageClock()
    stages.install()
    flow = build_flow(job)
    started = time.perf_counter()
    cpu_started = time.process_time()
    run_main(flow, epoch_interval=EPOCH_INTERVAL)  # type: ignore[no-untyped-call]
    cpu_seconds = time.process_time() - cpu_started
    seconds = time.perf_counter() - started
    # Events consumed = next offsets the shards recorded (not the count we asked for).
    positions = resume_positions(job.state_dir, shards, topic)
    events = sum(p.next_offset for p in positions.values())
    peak_rss_kb = own_peak_rss_kb()  # before counting: the count is not part of the run
    with RocksDBStore(job.state_dir, shards) as store:
        entities = {v.name: sum(1 for p in store.partitions for _ in p.iter_view(v.fingerprint)) for v in views}
    emit(
        {
            "system": "streamfeat",
            "events": events,
            "seconds": seconds,
            "cpu_seconds": cpu_seconds,
            "stage_us_per_event": stages.per_event_us(events, cpu_seconds),
            "events_per_decoded_batch": round(events / max(stages.calls["decode"], 1), 1),
            "peak_rss_kb": peak_rss_kb,
            "views": [v.name for v in views],
            "shards": shards,
            "batch_size": job.batch_size,
            "entities": entities,
        }
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 8)
