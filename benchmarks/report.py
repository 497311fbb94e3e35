"""RESULTS.md from one results directory (benchmarks/results/<date>/*.json).

Every number in the file comes from those JSON files; a benchmark that failed shows
its error instead of numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson


def load(directory: Path) -> dict[str, Any]:
    return {p.stem: orjson.loads(p.read_bytes()) for p in sorted(directory.glob("*.json"))}


def _mmm(s: dict[str, Any] | None, fmt: str = "{:,.0f}") -> str:
    if not s:
        return "-"
    return f"{fmt.format(s['median'])} ({fmt.format(s['min'])} - {fmt.format(s['max'])})"


def _met(value: float | None, target: float, higher: bool = True) -> str:
    if value is None:
        return "n/a"
    ok = value >= target if higher else value <= target
    return "yes" if ok else "**no**"


def _error(lines: list[str], entry: dict[str, Any]) -> bool:
    for key in ("error", "skipped"):
        if key in entry:
            text = str(entry[key]).strip().splitlines()
            lines.append(f"{key}: `{text[-1][:300] if text else ''}`\n")
            if len(text) > 1:
                lines.append(
                    "<details><summary>details</summary>\n\n```\n" + "\n".join(text[-15:]) + "\n```\n</details>\n"
                )
            return True
    return False


def ingest(r: dict[str, Any], lines: list[str]) -> None:
    lines.append(
        f"## Ingest ({r['events']:,} events, {r['users']:,} users, {r['partitions']} partitions, "
        "one process each, same topic)\n"
    )
    t = r["targets"]
    ours = r["systems"].get("streamfeat", {}).get("events_per_s", {}).get("median")
    lines.append("| system | events/s median (min - max) | peak RSS MB median | ours / system |")
    lines.append("|---|---|---|---|")
    for name, s in r["systems"].items():
        if "events_per_s" not in s:
            lines.append(f"| {name} | failed (see below) | - | - |")
            continue
        ratio = f"{ours / s['events_per_s']['median']:.2f}" if ours and name != "streamfeat" else "-"
        lines.append(f"| {name} | {_mmm(s['events_per_s'])} | {s['peak_rss_mb']['median']:.0f} | {ratio} |")
    lines.append("")
    for name, s in r["systems"].items():
        if "error" in s:
            lines.append(f"**{name}** failed:\n")
            _error(lines, s)
    q = r["systems"].get("quix", {})
    if "events_per_s_first_to_last" in q:
        lines.append(
            f"Quix Streams {q.get('version')}: events/s above is wall time of `app.run()` (consumer-group "
            f"join included); first-to-last-message only: {_mmm(q['events_per_s_first_to_last'])}.\n"
        )
    ra = r["ratios"]
    lines.append("| target | measured | met |")
    lines.append("|---|---|---|")
    lines.append(
        f"| streamfeat >= {t['streamfeat_events_per_s']:,} ev/s | {ours and f'{ours:,.0f}'} | "
        f"{_met(ours, t['streamfeat_events_per_s'])} |"
    )
    lines.append(
        f"| ours / bare Bytewax >= {t['ratio_vs_bytewax_bare']} | {ra['ratio_vs_bytewax_bare']} | "
        f"{_met(ra['ratio_vs_bytewax_bare'], t['ratio_vs_bytewax_bare'])} |"
    )
    lines.append(
        f"| ours / Quix >= {t['ratio_vs_quix']} | {ra['ratio_vs_quix']} | "
        f"{_met(ra['ratio_vs_quix'], t['ratio_vs_quix'])} |\n"
    )
    _ingest_stages(r, lines)
    many = r.get("many_users")
    if many is None:
        return
    lines.append("Many distinct users: streamfeat alone, one run, on a second topic whose users are drawn uniformly.\n")
    if _error(lines, many):
        return
    stored = many["entities"].get("user_spend", 0)
    enough = stored >= t["many_users_entities"]
    lines.append(
        f"{many['events']:,} events over {many['users_drawn_from']:,} users: {stored:,} users stored "
        f"by user_spend (purchases only), {many['events_per_s']:,.0f} events/s, "
        f"peak RSS {many['peak_rss_mb']:,.0f} MB.\n"
    )
    lines.append("| target | measured | met |")
    lines.append("|---|---|---|")
    lines.append(
        f"| peak RSS <= {t['many_users_peak_rss_mb']:,} MB with >= {t['many_users_entities']:,} users "
        f"in state | {many['peak_rss_mb']:,.0f} MB, {stored:,} users | "
        f"{_met(many['peak_rss_mb'], t['many_users_peak_rss_mb'], higher=False) if enough else 'n/a at this size'} |\n"
    )


def _ingest_stages(r: dict[str, Any], lines: list[str]) -> None:
    """streamfeat's CPU per event by stage, beside the decode limit over the same records."""
    stages = r["systems"].get("streamfeat", {}).get("stage_us_per_event")
    if stages:
        per_batch = r["systems"]["streamfeat"]["events_per_decoded_batch"]["median"]
        lines.append(
            f"streamfeat CPU per event by stage (all threads, us, median (min - max) over the runs; "
            f"{per_batch:,.0f} events per decoded batch; `other` = Bytewax, GC and the rest):\n"
        )
        lines.append("| " + " | ".join(stages) + " |")
        lines.append("|" + "---|" * len(stages))
        lines.append("| " + " | ".join(_mmm(v, "{:.2f}") for v in stages.values()) + " |\n")
    limit = r.get("decode_limit")
    if limit is None:
        return
    if _error(lines, limit):
        return
    lines.append(
        "Decode limit over the same records (CPU us per record, median (min - max) of 3 interleaved "
        f"passes, {limit['batch']:,} records per call; `streamfeat_decoder` is our Decoder alone):\n"
    )
    lines.append("| parser | us per record |")
    lines.append("|---|---|")
    for name, v in limit["us_per_record"].items():
        lines.append(f"| {name} | {_mmm(v, '{:.2f}')} |")
    lines.append("")


def _load_generator(tool: str) -> str:
    """Which load generator drove the serving runs, and what that means for the figures."""
    if tool == "wrk":
        return (
            "wrk (2 threads on the same 2 cores as the server, so it takes CPU from the server "
            "under test; every system pays the same)"
        )
    return (
        f"{tool}, the Python fallback: wrk was not installed (`make bench` installs it), and the "
        "fallback takes much more CPU from the server under test, so every serving figure is lower"
    )


def serving(r: dict[str, Any], lines: list[str]) -> None:
    lines.append(
        f"## Serving (state for {r['users']:,} users, one uvicorn process each, loopback, "
        f"keep-alive connections, {r['seconds_per_run']:.0f} s per run)\n"
    )
    lines.append(
        "| system | entities/request | connections | requests/s median (min - max) | p50 ms | p90 ms | "
        "p99 ms median (min - max) | server CPU us/request | peak RSS MB |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|")
    scenarios = (
        ("one_entity", 1),
        ("hundred_entities", 100),
        ("hundred_entities_c4", 100),
        ("hundred_entities_c1", 100),
    )
    for name, s in r["systems"].items():
        for scenario, n in scenarios:
            if scenario in s:
                m = s[scenario]
                cpu = m.get("server_cpu_us_per_request")
                cpu_text = f"{cpu['median']:.0f}" if cpu else "-"
                lines.append(
                    f"| {name} | {n} | {m.get('connections', 16)} | {_mmm(m['requests_per_s'])} | "
                    f"{m['p50_ms']['median']:.2f} | {m['p90_ms']['median']:.2f} | "
                    f"{_mmm(m['p99_ms'], '{:.2f}')} | {cpu_text} | {s.get('peak_rss_mb', '-')} |"
                )
    lines.append("")
    for name, s in r["systems"].items():
        if "error" in s or "skipped" in s:
            lines.append(f"**{name}**:\n")
            _error(lines, s)
    ours = r["systems"].get("streamfeat", {})
    feast = r["systems"].get("feast", {})
    lines.append(
        f"Load generator: {_load_generator(ours.get('one_entity', {}).get('tool', '?'))}. "
        f"streamfeat 1 entity = {ours.get('service_one', '-')}; "
        f"100 entities = {ours.get('service_hundred', '-')}. "
        f"Feast {feast.get('version', '-')}: {feast.get('service', '-')}.\n"
    )
    t, ra = r["targets"], r["ratios"]

    def med(sys_: str, sc: str, key: str) -> float | None:
        v = r["systems"].get(sys_, {}).get(sc)
        return float(v[key]["median"]) if v else None

    rps, p99 = med("streamfeat", "one_entity", "requests_per_s"), med("streamfeat", "one_entity", "p99_ms")
    p99_100 = med("streamfeat", "hundred_entities", "p99_ms")
    p99_100_c1 = med("streamfeat", "hundred_entities_c1", "p99_ms")
    fp99 = med("feast", "one_entity", "p99_ms")
    lines.append("| target | measured | met |")
    lines.append("|---|---|---|")
    lines.append(
        f"| 1 entity >= {t['one_entity_requests_per_s']:,} req/s | {rps and f'{rps:,.0f}'} | "
        f"{_met(rps, t['one_entity_requests_per_s'])} |"
    )
    lines.append(
        f"| 1 entity p99 <= {t['one_entity_p99_ms']} ms | {p99} | {_met(p99, t['one_entity_p99_ms'], False)} |"
    )
    lines.append(
        f"| ours / bare FastAPI >= {t['ratio_vs_bare']} | {ra['ratio_vs_bare']} | "
        f"{_met(ra['ratio_vs_bare'], t['ratio_vs_bare'])} |"
    )
    rps_100 = med("streamfeat", "hundred_entities", "requests_per_s")
    rows_100 = None if rps_100 is None else round(rps_100 * 100)
    lines.append(
        f"| 100 entities p99 <= {t['hundred_entities_p99_ms']} ms (16 connections) | {p99_100} | "
        f"{_met(p99_100, t['hundred_entities_p99_ms'], False)} |"
    )
    if "hundred_entity_rows_per_s" in t:
        lines.append(
            f"| 100 entities >= {t['hundred_entity_rows_per_s']:,} entity-rows/s (16 connections) | "
            f"{rows_100 and f'{rows_100:,}'} | {_met(rows_100, t['hundred_entity_rows_per_s'])} |"
        )
    if p99_100_c1 is not None:
        lines.append(
            f"| 100 entities p99 at 1 connection (a request without queueing; for information) | {p99_100_c1} | - |"
        )
    lines.append(
        f"| ours / Feast >= {t['ratio_vs_feast']} (1 entity) | {ra['ratio_vs_feast']} | "
        f"{_met(ra['ratio_vs_feast'], t['ratio_vs_feast'])} |"
    )
    lines.append(f"| ours / Feast, 100 entities (no target) | {ra.get('ratio_vs_feast_hundred')} | - |")
    lower = None if p99 is None or fp99 is None else p99 < fp99
    lines.append(
        f"| ours p99 < Feast p99 (1 entity) | {p99} vs {fp99} | "
        f"{'n/a' if lower is None else ('yes' if lower else '**no**')} |\n"
    )
    cache = ours.get("client_cache")
    if cache:
        hit_p99 = cache["cached"]["p99_us"]
        target = t.get("cache_hit_p99_us", 100.0)
        lines.append(
            f"FeatureClient.get_feature_vector (fraud_scoring, {cache['cache']['entities']} hot users, "
            "one thread, in the calling process):\n"
        )
        lines.append("| call | p50 us | p99 us | calls |")
        lines.append("|---|---|---|---|")
        for name in ("uncached", "cached"):
            lines.append(f"| {name} | {cache[name]['p50_us']} | {cache[name]['p99_us']} | {cache[name]['calls']} |")
        lines.append(
            f"\nCache hit p99 < {target:.0f} us: {hit_p99} ({_met(hit_p99, target, False)}); "
            f"hits {cache['cache']['hits']}, misses {cache['cache']['misses']}.\n"
        )


def freshness(r: dict[str, Any], lines: list[str]) -> None:
    lines.append(f"## Freshness (produced -> visible through the API; a probe every {r['probe_every_s']} s)\n")
    if _error(lines, r):
        return
    lines.append("| background rate ev/s | probes | missed | p50 ms | p90 ms | p99 ms | max ms |")
    lines.append("|---|---|---|---|---|---|---|")
    for x in r["rates"]:
        lines.append(
            f"| {x['rate_events_per_s']:,} | {x['probes']} | {x['missed']} | {x['p50_ms']} | "
            f"{x['p90_ms']} | {x['p99_ms']} | {x['max_ms']} |"
        )
    p = r.get("p99_ms_at_10k")
    lines.append(
        f"\nTarget p99 <= {r['targets']['p99_ms_at_10k']:.0f} ms at 10k ev/s: "
        f"{'not measured at this size' if p is None else _met(p, r['targets']['p99_ms_at_10k'], False)}"
        f" (p99 of {r['rates'][0]['probes']} probes is close to the max).\n"
    )


def offline(r: dict[str, Any], lines: list[str], title: str, ours: str, base: str, target: float | None) -> None:
    lines.append(f"## {title}\n")
    if _error(lines, r):
        return
    lines.append(f"Size {r['rows']:,}. Medians over {r['ours']['runs']} runs (min - max).\n")
    lines.append("| system | per second |")
    lines.append("|---|---|")
    lines.append(f"| streamfeat ({ours}) | {_mmm(r['ours'])} |")
    lines.append(f"| plain polars ({base}) | {_mmm(r['polars'])} |")
    ratio = r["ratio_ours_over_polars"]
    met = f"; target >= {target}: {_met(ratio, target)}" if target else ""
    lines.append(f"\nours / polars = {ratio}{met}. {r.get('note', '')}\n")


def scaling(r: dict[str, Any], lines: list[str]) -> None:
    lines.append(f"## Scaling ({r['events']:,} events, {r['users']:,} users, {r['partitions']} partitions)\n")
    p = r["processes"]
    if not _error(lines, p):
        lines.append("`streamfeat run --until-caught-up --processes N`, wall time including start-up:\n")
        lines.append("| processes | events/s median (min - max) | peak RSS MB (all processes) |")
        lines.append("|---|---|---|")
        for n in (1, 2):
            e = p.get(f"processes_{n}")
            if e:
                lines.append(f"| {n} | {_mmm(e['events_per_s'])} | {e['peak_rss_mb']['median']:.0f} |")
        lines.append(f"\nspeed-up 2 vs 1: {p.get('speedup_2_vs_1')}\n")
    lines.append("State size and memory against entity count (Parquet backfill of 5 events per user, one run each):\n")
    lines.append("| users | events | backfill s | peak RSS MB | RocksDB state MB | Parquet log MB |")
    lines.append("|---|---|---|---|---|---|")
    for e in r["entities"]:
        lines.append(
            f"| {e['users']:,} | {e['events']:,} | {e['backfill_seconds']} | {e['backfill_peak_rss_mb']} | "
            f"{e['state_mb']} | {e['log_mb']} |"
        )
    lines.append("")


def _headline(doc: dict[str, Any]) -> str:
    """The few numbers of a superseded run worth comparing with the current one."""
    parts = []
    if "ratios" in doc:
        parts.append(str(doc["ratios"]))
    systems = doc.get("systems", {})
    for name in ("streamfeat",):
        for key in ("events_per_s",):
            if key in systems.get(name, {}):
                parts.append(f"{name} {key} median {systems[name][key]['median']:,.0f}")
        if "one_entity" in systems.get(name, {}):
            parts.append(f"{name} 1-entity req/s median {systems[name]['one_entity']['requests_per_s']['median']:,.0f}")
    if "ratio_ours_over_polars" in doc:
        parts.append(f"ours {doc['ours']['median']:,.0f}/s, ours/polars {doc['ratio_ours_over_polars']}")
    processes = doc.get("processes", {})
    for n in (1, 2):
        if f"processes_{n}" in processes:
            parts.append(f"{n} process(es) {processes[f'processes_{n}']['events_per_s']['median']:,.0f} ev/s")
    return "; ".join(parts) or "-"


def render(directory: Path, plots: list[Path]) -> str:
    results = load(directory)
    any_result: dict[str, Any] = next(iter(results.values()), {})
    machine = any_result.get("machine", {})
    sizes = sorted({str(r.get("size")) for r in results.values()})
    lines = [
        "# Benchmark results\n",
        f"Run {directory.name}, size {', '.join(sizes)}; generated by `python -m benchmarks.run` from "
        f"`benchmarks/results/{directory.name}/*.json`. Do not edit by hand.\n",
        f"Machine: {machine.get('cpu_count')} CPUs ({machine.get('cpu_model')}), {machine.get('memory_gb')} GB, "
        f"Python {machine.get('python')}. "
        "This 2-core machine is noisy (the load averages below include the benchmarks' own servers, "
        "load generator and dataflows, and at times other work on the machine): every figure is the "
        "median over >= 3 runs with min - max unless stated, and each system is compared with its "
        "baseline in the same run.\n",
        f"Packages: {machine.get('packages')}; peers: {any_result.get('peers')}.\n",
        "Per benchmark (1-minute load average at its start / finished at / wall seconds): "
        + "; ".join(
            f"{name} {round(r.get('machine', {}).get('load_avg_at_start', [0.0])[0], 2)} / "
            f"{r.get('finished_at')} / {r.get('wall_seconds')}"
            for name, r in results.items()
        )
        + ".\n",
    ]
    order = [("ingest", ingest), ("serving", serving), ("freshness", freshness), ("scaling", scaling)]
    for name, fn in order:
        if name in results:
            r = results[name]
            if "benchmark_error" in r:
                lines.append(f"## {name}\n\nfailed: `{r['benchmark_error'][-300:]}`\n")
                continue
            fn(r, lines)
    offline_sections = (
        (
            "backfill",
            "Backfill (Parquet history -> RocksDB tiles + Parquet log)",
            "events/s",
            "group_by of the same partials, no state",
            0.5,
        ),
        (
            "training",
            "Training set (point-in-time sum/count/mean, 1 h window)",
            "rows/s incl. log read",
            "per-entity prefix sums + join_asof, incl. log read",
            None,
        ),
    )
    for name, title, ours, base, target in offline_sections:
        if name not in results:
            continue
        r = results[name]
        if "benchmark_error" in r:
            lines.append(f"## {name}\n\nfailed: `{r['benchmark_error'][-300:]}`\n")
        else:
            offline(r, lines, title, ours, base, target)
    earlier = sorted((directory / "earlier").glob("*.json"))
    if earlier:
        lines.append("## Earlier runs of the same day (superseded, kept for the spread)\n")
        lines.append("| file | finished | load average at start | headline |")
        lines.append("|---|---|---|---|")
        for path in earlier:
            doc = orjson.loads(path.read_bytes())
            load_avg = [round(x, 2) for x in doc.get("machine", {}).get("load_avg_at_start", [])]
            lines.append(f"| earlier/{path.name} | {doc.get('finished_at')} | {load_avg} | {_headline(doc)} |")
        lines.append("")
    if plots:
        lines.append("## Plots\n")
        for p in plots:
            lines.append(f"![{p.stem}](results/{directory.name}/{p.name})\n")
    return "\n".join(lines)
