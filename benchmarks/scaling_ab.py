"""CPU per event at 1 and N processes for two checkouts side by side (issue #18 item 4).

    .venv/bin/python -m benchmarks.scaling_ab OUT_DIR ROUNDS TREE [TREE ...] [--events E] [--users U] [--processes N]

One topic (4 partitions) is produced once; then every round runs, for each checkout in
turn, the same until-caught-up cluster at 1 and at N processes (benchmarks/cluster_profile.py
children: per process, per thread and per stage CPU, pickled bytes). The order of the
checkouts alternates between rounds, so load drifting over time falls on both.

Per run the figure is ``work`` CPU: each process's CPU time after its dataflow was built
(imports and start-up left out), summed over the processes, per event. A round's ratio
is its N-process figure over its 1-process figure of the same checkout, measured back to
back. Bytes per event are those Bytewax pickled to send to other processes (exact, not
sampled from sockets). Each round's JSON goes to ``OUT_DIR/rounds.jsonl`` as it ends;
the summary is printed and written to ``OUT_DIR/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.cluster_profile import PARTITIONS, per_event_us, profile_run
from benchmarks.common import bootstrap, copy_repo, delete_topic, new_topic


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scaling_ab")
    parser.add_argument("out", type=Path)
    parser.add_argument("rounds", type=int)
    parser.add_argument("trees", type=Path, nargs="+", help="checkouts, each with its own .venv")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--processes", type=int, default=4)
    return parser.parse_args()


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3), "max": round(max(values), 3)}


def _figures(run: dict[str, Any], events: int) -> dict[str, Any]:
    summary = per_event_us(run, events)
    worker = summary["threads"].get("timely:work-", 0.0) if run["processes"] > 1 else summary["threads"]["python"]
    return {
        "work_us": summary["work"],
        "total_us": summary["total"],
        "stages_us": summary["stages"],
        "stage_sum_us": round(sum(summary["stages"].values()), 3),
        "pickle_us": round(summary["pickle_dumps"] + summary["pickle_loads"], 3),
        "gc_us": summary["gc"],
        "worker_thread_us": worker,
        "bytes_per_event": summary["pickle_bytes_per_event"],
        "applies": summary["applies"],
        "involuntary_switches": summary["involuntary_switches"],
        "wall_s": run["wall_s"],
    }


def main() -> None:
    args = _arguments()
    args.out.mkdir(parents=True, exist_ok=True)
    from engine.generate import GeneratorConfig, produce_events

    servers, stop = bootstrap()
    work = Path(tempfile.mkdtemp(prefix="scaling_ab_"))
    topic = new_topic(servers, "scaling-ab", partitions=PARTITIONS)
    rows: list[dict[str, Any]] = []
    try:
        produce_events(GeneratorConfig(events=args.events, users=args.users, seed=9, rate=200.0), topic, servers)
        repo = copy_repo(work, topic)
        for r in range(args.rounds):
            order = args.trees if r % 2 == 0 else list(reversed(args.trees))
            for tree in order:
                row: dict[str, Any] = {"round": r, "tree": str(tree), "load_1m": os.getloadavg()[0]}
                for n in (1, args.processes):
                    run = profile_run(work, repo, servers, n, f"{tree.name}-{n}-{r}", tree=tree.resolve())
                    row[f"p{n}"] = _figures(run, args.events)
                row["ratio"] = round(row[f"p{args.processes}"]["work_us"] / row["p1"]["work_us"], 3)
                rows.append(row)
                with (args.out / "rounds.jsonl").open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(
                    f"round {r} {tree}: ratio {row['ratio']} "
                    f"(1: {row['p1']['work_us']} us/event, {args.processes}: "
                    f"{row[f'p{args.processes}']['work_us']} us/event, "
                    f"{row[f'p{args.processes}']['bytes_per_event']} B/event) load {row['load_1m']:.1f}",
                    flush=True,
                )
    finally:
        delete_topic(servers, topic)
        stop()
        shutil.rmtree(work, ignore_errors=True)
    summary = {}
    for tree in args.trees:
        mine = [row for row in rows if row["tree"] == str(tree)]
        n = f"p{args.processes}"
        summary[str(tree)] = {
            "rounds": len(mine),
            "ratio": _spread([row["ratio"] for row in mine]),
            "work_us_1": _spread([row["p1"]["work_us"] for row in mine]),
            f"work_us_{args.processes}": _spread([row[n]["work_us"] for row in mine]),
            f"bytes_per_event_{args.processes}": _spread([row[n]["bytes_per_event"] for row in mine]),
            f"pickle_us_{args.processes}": _spread([row[n]["pickle_us"] for row in mine]),
            "stage_sum_us_1": _spread([row["p1"]["stage_sum_us"] for row in mine]),
            f"stage_sum_us_{args.processes}": _spread([row[n]["stage_sum_us"] for row in mine]),
        }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
