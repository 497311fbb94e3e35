"""Run every benchmark at one size, write benchmarks/results/<date>/<bench>.json, then
regenerate benchmarks/RESULTS.md and the PNG plots from that directory.

    .venv/bin/python -m benchmarks.run --size smoke|small|full [--only NAME ...] [--no-report]

A benchmark that fails writes its error into its JSON and the others still run.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from benchmarks import (
    bench_freshness,
    bench_ingest,
    bench_offline,
    bench_scaling,
    bench_serving,
    plots,
    report,
)
from benchmarks.common import machine_info
from benchmarks.peers import install

HERE = Path(__file__).resolve().parent
BENCHES: dict[str, Callable[[str], dict[str, Any]]] = {
    "ingest": bench_ingest.run,
    "serving": bench_serving.run,
    "freshness": bench_freshness.run,
    "scaling": bench_scaling.run,
    "backfill": bench_offline.run_backfill,
    "training": bench_offline.run_training,
}
SIZES = ("smoke", "small", "full")


def peers_info() -> dict[str, Any]:
    return {
        name: {"pinned": list(p.requirements), "installed": install.installed_version(p)}
        for name, p in install.PEERS.items()
    }


def run_one(name: str, size: str, out_dir: Path) -> dict[str, Any]:
    started = time.perf_counter()
    machine = machine_info()
    try:
        result = BENCHES[name](size)
    except Exception:
        result = {"benchmark": name, "size": size, "benchmark_error": traceback.format_exc()[-4000:]}
    result["machine"] = machine
    result["peers"] = peers_info()
    result["wall_seconds"] = round(time.perf_counter() - started, 2)
    result["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return result


def regenerate(out_dir: Path, results_md: Path) -> list[Path]:
    images = plots.all_plots(report.load(out_dir), out_dir)
    results_md.write_text(report.render(out_dir, images))
    return images


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=SIZES, default="smoke")
    parser.add_argument("--only", action="append", choices=sorted(BENCHES), help="run only this one (repeatable)")
    parser.add_argument("--out", type=Path, default=None, help="results directory (default results/<date>)")
    parser.add_argument("--results-md", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--no-report", action="store_true", help="write JSON only (no RESULTS.md, no plots)")
    args = parser.parse_args(argv)
    out_dir = args.out or HERE / "results" / datetime.now(UTC).strftime("%Y-%m-%d")
    failed = []
    for name in args.only or list(BENCHES):
        print(f"== {name} ({args.size})", flush=True)
        result = run_one(name, args.size, out_dir)
        if "benchmark_error" in result:
            failed.append(name)
            print(result["benchmark_error"][-1500:], file=sys.stderr)
        print(f"   {result['wall_seconds']} s -> {out_dir / (name + '.json')}", flush=True)
    if not args.no_report:
        images = regenerate(out_dir, args.results_md)
        print(f"{args.results_md} and {len(images)} plots written")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
