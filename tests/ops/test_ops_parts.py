"""The summary's building blocks: histogram quantiles and summing dataflow endpoints."""

from __future__ import annotations

import math

import numpy as np
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from engine.metrics import DataflowMetrics
from serving.routes_ops import histogram_quantiles, parse_dataflow_metrics, serving_latency


def test_quantiles_interpolate_inside_buckets_like_prometheus() -> None:
    # 100 observations spread evenly over (0, 1] with buckets every 0.1: quantile q ~ q.
    bounds = [round(0.1 * i, 1) for i in range(1, 11)]
    buckets = {b: float(round(b * 100)) for b in bounds} | {math.inf: 100.0}
    got = histogram_quantiles(buckets, (0.5, 0.9, 0.99))
    for q, value in got.items():
        assert value is not None and abs(value - q) < 1e-9, (q, value)
    assert histogram_quantiles({math.inf: 0.0}, (0.5,)) == {0.5: None}
    # Everything above the last finite bound: the bound is the best answer there is.
    assert histogram_quantiles({1.0: 0.0, math.inf: 5.0}, (0.5,)) == {0.5: 1.0}


def test_serving_latency_reads_a_real_histogram() -> None:
    registry = CollectorRegistry()
    hist = Histogram(
        "streamfeat_request_duration_seconds",
        "t",
        ("route", "service"),
        buckets=(0.001, 0.002, 0.004, 0.008),
        registry=registry,
    )
    rng = np.random.default_rng(1)
    samples = rng.uniform(0.0, 0.004, 2000)
    for i, s in enumerate(samples):
        hist.labels("/v1/features/{service}", "a" if i % 2 else "b").observe(float(s))
    out = serving_latency(registry)
    assert out["requests"] == 2000
    # Uniform data: bucket interpolation lands close to the true quantiles (in ms).
    for key, q in (("p50_ms", 50), ("p90_ms", 90), ("p99_ms", 99)):
        value = out[key]
        assert value is not None and abs(value - np.percentile(samples, q) * 1000) < 0.1, key


def test_two_endpoints_are_summed() -> None:
    texts = []
    for n in (3, 4):
        metrics = DataflowMetrics(end_offsets=lambda _b, _t: {})
        metrics.events_in.labels("tx").inc(n * 10)
        metrics.dead_letters.labels("tx", "invalid_json").inc(n)
        metrics.rows_applied.labels("v").inc(n * 5)
        texts.append(generate_latest(metrics.registry).decode())
    sample = parse_dataflow_metrics(texts)
    assert sample.endpoints == 2
    assert sample.events_in == 70
    assert sample.dead_letters == {"invalid_json": 7}
    assert sample.rows_applied == {"v": 35}


def test_the_run_summary_says_letters_sent_and_letters_already_there_apart() -> None:
    """Nested parentheses read badly: "13 (wrong_type 5, ... 2 (and 210 refused ...))"."""
    from engine.run_counts import RunCounts

    counts = RunCounts(400, {"wrong_type": 5, "invalid_json": 8}, {"v": 380}, {0: 400}, {"invalid_timestamp": 33})
    assert counts.dead_text() == (
        "invalid_json 8, wrong_type 5; and 33 refused records whose letter was already in the topic, "
        "not sent again: invalid_timestamp 33"
    )
    assert RunCounts(1, {}, {}, {}).dead_text() == "none"
