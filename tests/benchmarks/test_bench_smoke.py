"""The whole benchmark harness at smoke size against a real broker: every benchmark
writes its JSON with the expected keys and positive measurements, RESULTS.md and the
plots are regenerated. No timing thresholds: this checks the harness, not the speed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def _positive(value: Any, where: str) -> None:
    assert isinstance(value, int | float) and value > 0, f"{where}: expected a positive number, got {value!r}"


def _stats(entry: dict[str, Any], where: str) -> None:
    assert set(entry) == {"median", "min", "max", "runs"}, where
    assert entry["runs"] >= 3, where
    for key in ("median", "min", "max"):
        _positive(entry[key], f"{where}.{key}")
    assert entry["min"] <= entry["median"] <= entry["max"], where


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("bench")
    results_md = out / "RESULTS.md"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.run",
            "--size",
            "smoke",
            "--out",
            str(out / "results"),
            "--results-md",
            str(results_md),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,  # a hang guard, not a speed limit (peers install on first use)
        env={**os.environ, "KAFKA_BOOTSTRAP": kafka_bootstrap},
    )
    assert done.returncode == 0, f"benchmarks.run failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return out / "results", results_md


def _load(smoke: tuple[Path, Path], name: str) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads((smoke[0] / f"{name}.json").read_bytes())
    assert "benchmark_error" not in doc, doc.get("benchmark_error")
    assert doc["machine"]["cpu_count"] >= 1 and doc["machine"]["python"]
    assert set(doc["peers"]) == {"quix", "feast"}
    return doc


def test_ingest_measures_all_three_systems(smoke: tuple[Path, Path]) -> None:
    doc = _load(smoke, "ingest")
    assert set(doc["systems"]) == {"streamfeat", "bytewax_bare", "quix"}
    for name, system in doc["systems"].items():
        assert "error" not in system, system.get("error")
        _stats(system["events_per_s"], f"{name}.events_per_s")
        _stats(system["peak_rss_mb"], f"{name}.peak_rss_mb")
        assert all(run["events"] == doc["events"] for run in system["runs"]), name
    stages = doc["systems"]["streamfeat"]["stage_us_per_event"]
    assert {"poll", "decode", "route", "kernel", "state_write", "log", "other", "total"} == set(stages)
    for stage in ("poll", "decode", "route", "kernel", "state_write", "log", "total"):
        _stats(stages[stage], f"stage_us_per_event.{stage}")
    limit = doc["decode_limit"]
    assert "error" not in limit, limit.get("error")
    assert limit["events"] == doc["events"]
    for parser in (
        "orjson",
        "polars_ndjson",
        "pyarrow_json",
        "msgspec",
        "streamfeat_decoder",
        "streamfeat_decoder_orjson",
    ):
        _stats(limit["us_per_record"][parser], f"decode_limit.{parser}")
    _positive(doc["ratios"]["ratio_vs_bytewax_bare"], "ratio_vs_bytewax_bare")
    _positive(doc["ratios"]["ratio_vs_quix"], "ratio_vs_quix")
    many = doc["many_users"]
    assert "error" not in many, many.get("error")
    assert many["run"]["events"] == many["events"]
    # Uniform draws: most drawn users are distinct, and only purchasers are stored.
    assert 0 < many["entities"]["user_spend"] <= many["events"]
    _positive(many["peak_rss_mb"], "many_users.peak_rss_mb")


def test_serving_measures_ours_and_bare_fastapi(smoke: tuple[Path, Path]) -> None:
    doc = _load(smoke, "serving")
    for name, scenarios in (("streamfeat", ("one_entity", "hundred_entities")), ("fastapi_bare", ("one_entity",))):
        for scenario in scenarios:
            m = doc["systems"][name][scenario]
            for key in ("requests_per_s", "p50_ms", "p90_ms", "p99_ms"):
                _stats(m[key], f"{name}.{scenario}.{key}")
            assert m["p50_ms"]["median"] <= m["p99_ms"]["median"]
            assert all(r["errors"] == 0 and r["non_2xx"] == 0 for r in m["runs"])
    _positive(doc["ratios"]["ratio_vs_bare"], "ratio_vs_bare")
    assert "skipped" in doc["systems"]["feast"] or "one_entity" in doc["systems"]["feast"]


def test_freshness_sees_every_probe(smoke: tuple[Path, Path]) -> None:
    doc = _load(smoke, "freshness")
    assert doc["rates"], doc
    for rate in doc["rates"]:
        assert rate["missed"] == 0 and rate["probes"] == len(rate["lags_ms"]) > 0
        for key in ("p50_ms", "p99_ms"):
            _positive(rate[key], key)
        assert rate["p50_ms"] <= rate["p99_ms"] <= rate["max_ms"]


def test_scaling_offline_and_report(smoke: tuple[Path, Path]) -> None:
    scaling = _load(smoke, "scaling")
    assert "error" not in scaling["processes"], scaling["processes"].get("error")
    for n in (1, 2):
        _positive(scaling["processes"][f"processes_{n}"]["events_per_s"]["median"], f"processes_{n}")
    for entry in scaling["entities"]:
        for key in ("backfill_seconds", "backfill_peak_rss_mb", "state_mb"):
            _positive(entry[key], f"entities {entry['users']} {key}")
    for name in ("backfill", "training"):
        doc = _load(smoke, name)
        _stats(doc["ours"], f"{name}.ours")
        _stats(doc["polars"], f"{name}.polars")
        _positive(doc["ratio_ours_over_polars"], f"{name} ratio")
    text = smoke[1].read_text()
    for heading in ("## Ingest", "## Serving", "## Freshness", "## Scaling", "## Backfill", "## Training"):
        assert heading in text
    pngs = {p.name for p in smoke[0].glob("*.png")}
    assert {
        "ingest_throughput.png",
        "serving_latency_cdf.png",
        "freshness_histogram.png",
        "memory_vs_entities.png",
    } <= pngs
