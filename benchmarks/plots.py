"""PNG plots of one results directory: throughput bars, latency CDFs, freshness histogram,
memory and state size against entity count. Each plot is skipped when its data is absent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on a build machine
import matplotlib.pyplot as plt


def _bars(ax: Any, labels: list[str], entries: list[dict[str, Any]], ylabel: str) -> None:
    med = [e["median"] for e in entries]
    err = [
        [m - e["min"] for m, e in zip(med, entries, strict=True)],
        [e["max"] - m for m, e in zip(med, entries, strict=True)],
    ]
    ax.bar(labels, med, yerr=err, capsize=4, color="#4c72b0")
    ax.set_ylabel(ylabel)
    for i, m in enumerate(med):
        ax.annotate(f"{m:,.0f}", (i, m), ha="center", va="bottom", fontsize=8)


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def throughput(results: dict[str, Any], out: Path) -> list[Path]:
    written = []
    ingest = results.get("ingest", {}).get("systems", {})
    ok = {k: v for k, v in ingest.items() if "events_per_s" in v}
    if ok:
        fig, ax = plt.subplots(figsize=(6, 4))
        _bars(ax, list(ok), [v["events_per_s"] for v in ok.values()], "events/s (median, min-max)")
        ax.set_title(f"Ingest, {results['ingest']['events']:,} events, one process each")
        written.append(_save(fig, out / "ingest_throughput.png"))
    serving = results.get("serving", {}).get("systems", {})
    labels, entries = [], []
    for name, v in serving.items():
        for scenario in ("one_entity", "hundred_entities"):
            if scenario in v:
                labels.append(f"{name}\n{'1' if scenario == 'one_entity' else '100'} ent.")
                entries.append(v[scenario]["requests_per_s"])
    if entries:
        fig, ax = plt.subplots(figsize=(8, 4))
        _bars(ax, labels, entries, "requests/s (median, min-max)")
        ax.set_title("Serving, one process each, 16 connections")
        written.append(_save(fig, out / "serving_throughput.png"))
    return written


def latency_cdf(results: dict[str, Any], out: Path) -> list[Path]:
    serving = results.get("serving", {}).get("systems", {})
    curves = []
    for name, v in serving.items():
        for scenario in ("one_entity", "hundred_entities"):
            if scenario in v:
                runs = sorted(v[scenario]["runs"], key=lambda r: r["p99_ms"])
                pct = runs[len(runs) // 2]["percentiles_ms"]  # the median run by p99
                xs = [pct[k] for k in pct]
                ys = [float(k) / 100 for k in pct]
                curves.append((f"{name} {'1' if scenario == 'one_entity' else '100'} ent.", xs, ys))
    if not curves:
        return []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, xs, ys in curves:
        ax.plot(xs, ys, marker=".", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("fraction of requests")
    ax.set_title("Serving latency CDF (median run)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return [_save(fig, out / "serving_latency_cdf.png")]


def freshness(results: dict[str, Any], out: Path) -> list[Path]:
    rates = results.get("freshness", {}).get("rates", [])
    if not rates:
        return []
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in rates:
        ax.hist(r["lags_ms"], bins=30, alpha=0.6, label=f"{r['rate_events_per_s']:,} ev/s")
    ax.set_xlabel("produced -> visible via API (ms)")
    ax.set_ylabel("probes")
    ax.set_title("Freshness")
    ax.legend()
    return [_save(fig, out / "freshness_histogram.png")]


def memory(results: dict[str, Any], out: Path) -> list[Path]:
    entities = results.get("scaling", {}).get("entities", [])
    if not entities:
        return []
    users = [e["users"] for e in entities]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(users, [e["backfill_peak_rss_mb"] for e in entities], marker="o", label="peak RSS of backfill (MB)")
    ax.plot(users, [e["state_mb"] for e in entities], marker="s", label="RocksDB state on disk (MB)")
    ax.set_xscale("log")
    ax.set_xlabel("users (entities)")
    ax.set_ylabel("MB")
    ax.set_title("Memory and state size vs entity count")
    ax.grid(True, alpha=0.3)
    ax.legend()
    return [_save(fig, out / "memory_vs_entities.png")]


def cpu_per_event(results: dict[str, Any], out: Path) -> list[Path]:
    """CPU seconds per million events summed over processes, at 1, 2 and 4 processes
    (``bench_scaling <size> cpu``), with the bytes exchanged between processes per event."""
    cpu = results.get("scaling_cpu", {}).get("cpu", {})
    keys = sorted((k for k in cpu if k.startswith("processes_")), key=lambda k: int(k.split("_")[1]))
    if not keys:
        return []
    labels = [f"{k.split('_')[1]} process(es)" for k in keys]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    _bars(
        left, labels, [cpu[k]["cpu_s_per_million_events"] for k in keys], "CPU s per million events (median, min-max)"
    )
    left.set_title("CPU per event, all processes summed")
    _bars(right, labels, [cpu[k]["peer_bytes_per_event"] for k in keys], "bytes per event (median, min-max)")
    right.set_title("Bytes exchanged between processes")
    return [_save(fig, out / "cpu_per_event.png")]


def all_plots(results: dict[str, Any], out: Path) -> list[Path]:
    return [
        *throughput(results, out),
        *latency_cdf(results, out),
        *freshness(results, out),
        *memory(results, out),
        *cpu_per_event(results, out),
    ]
