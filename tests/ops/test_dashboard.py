"""The dashboard in Debian's headless chromium over a real pipeline's state and a live dataflow."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from engine.definitions import load_repo
from engine.ports import free_port
from tests.engine.streaming_support import streamfeat
from tests.ops.cdp_support import Browser, chromium_or_skip
from tests.ops.ops_support import START_MS, make_pipeline, produce, running_dataflow, wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.browser]

ARTIFACT = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard.png"


def test_dashboard_draws_ingest_latency_and_quality(
    tmp_path: Path, kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    binary = chromium_or_skip()
    topic = kafka_topic(partitions=3)
    p = make_pipeline(tmp_path, kafka_bootstrap, topic)
    # 6,000 events at 0.4 events/s of event time: about four hours, so four quality points.
    produce(p, 6_000, seed=31, rate=0.4)
    streamfeat("run", *p.common, "--until-caught-up", timeout=300)
    streamfeat("quality", "--repo", str(p.repo), "--data-dir", str(p.data))

    metrics_port = free_port()
    serve_port = free_port()
    env = {**os.environ, "STREAMFEAT_METRICS_PORT": str(metrics_port)}
    server_log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cli",
            "serve",
            "--repo",
            str(p.repo),
            "--data-dir",
            str(p.data),
            "--port",
            str(serve_port),
        ],
        env=env,
        stdout=server_log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{serve_port}"
    try:
        with running_dataflow(p, metrics_port), httpx.Client(base_url=base, timeout=10) as client:

            def up() -> bool:
                try:
                    return client.get("/healthz").status_code == 200
                except httpx.HTTPError:
                    return False

            wait_until(up, 60, "the feature server")
            for i in range(60):
                reply = client.post(
                    "/v1/features/fraud_scoring",
                    json={
                        "entities": {"user_id": [f"user_{i % 40:06d}"], "merchant_id": [f"merchant_{i % 7:05d}"]},
                        "request_data": {"amount": [float(i)]},
                    },
                )
                assert reply.status_code == 200, reply.text
            quality = client.get("/v1/quality/user_spend").json()
            assert len(quality["rows"]) >= 3
            assert client.get("/v1/quality/nope").status_code == 404

            # New events arrive while the page is open, so the ingest chart has a rate.
            feeder = threading.Timer(3.0, lambda: produce(p, 20_000, seed=32, start_ms=START_MS + 20_000_000))
            feeder.start()
            try:
                with Browser(tmp_path / "chromium-profile", binary) as browser:
                    browser.call("Page.enable")
                    browser.call("Page.navigate", url=f"{base}/ui")
                    browser.wait_for("document.readyState === 'complete'", 30)
                    assert browser.evaluate("document.title") == "streamfeat operations"
                    browser.wait_for("Number(document.body.dataset.refreshes || 0) >= 3", 30)
                    browser.wait_for(
                        "Number(document.getElementById('chart-ingest').dataset.points) >= 2"
                        " && document.querySelectorAll('#chart-ingest path').length > 0",
                        60,
                    )
                    latency_points = browser.wait_for(
                        "Number(document.getElementById('chart-latency').dataset.points)", 10
                    )
                    assert latency_points >= 2
                    quality_points = browser.evaluate(
                        "[...document.querySelectorAll('svg.quality-chart')].map(s => Number(s.dataset.points))"
                    )
                    assert quality_points and min(quality_points) >= 3, quality_points
                    views = browser.evaluate(
                        "[...document.querySelectorAll('#views tbody tr td:first-child')].map(td => td.textContent)"
                    )
                    assert sorted(views) == sorted(v.name for v in load_repo(p.repo).views)
                    dlq_bars = browser.evaluate("document.querySelectorAll('#chart-dlq rect').length")
                    assert dlq_bars >= 1
                    assert browser.evaluate("document.getElementById('error').hidden") is True
                    browser.screenshot(ARTIFACT)
            finally:
                feeder.join()
    finally:
        server.terminate()
        server.wait(timeout=20)
        server_log.close()
    assert ARTIFACT.stat().st_size > 10_000
