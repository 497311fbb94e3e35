"""Serving's request log, recomputed offline: zero skew for every served answer (as_of
reads inside a tile with later events included, since serving answers them from the
Parquet log), and reported skew for a logged value that differs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from engine.config import load_settings
from engine.definitions import load_repo
from engine.generate import GeneratorConfig, produce_events
from engine.io.request_log import read_request_log
from engine.offline.consistency import check_request_log, same_value
from serving.app import create_app
from tests.engine.streaming_support import copy_repo, read_topic, reference_events, streamfeat
from tests.serving.asgi_support import ASGIClient

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_same_value_tolerance() -> None:
    assert same_value(3, 3) and not same_value(3, 4)
    assert same_value(1.0, 1.0 + 1e-12) and not same_value(1.0, 1.0001)
    assert same_value(None, None) and not same_value(None, 0.0)
    assert same_value(0.0, 5e-10)


def test_logged_requests_recompute_exactly_offline(
    tmp_path: Path, kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    topic = kafka_topic(partitions=3)
    produce_events(
        GeneratorConfig(events=6_000, users=150, merchants=20, seed=3, start_ms=1_780_000_000_000, rate=5.0),
        topic,
        kafka_bootstrap,
    )
    repo_dir = copy_repo(tmp_path, topic)
    data = tmp_path / "data"
    common = ["--repo", str(repo_dir), "--data-dir", str(data)]
    streamfeat("apply", *common, "--shards", "2")
    streamfeat("run", *common, "--bootstrap", kafka_bootstrap, "--until-caught-up")

    events = [e for e in reference_events(read_topic(kafka_bootstrap, topic, 3)) if e["valid"]]
    t_end = max(e["e"] for e in events)
    users = sorted({e["entity"] for e in events})[:40]
    merchants = sorted({e["merchant"] for e in events})
    request_log = tmp_path / "requests"
    settings = load_settings(
        env={}, overrides={"repo": repo_dir, "data_dir": data, "request_log_dir": str(request_log)}
    )
    app = create_app(settings)
    client = ASGIClient(app)
    try:
        for t in (t_end, t_end + 600_000, t_end + 7_200_000):
            body = {
                "entities": {
                    "user_id": users,
                    "merchant_id": [merchants[i % len(merchants)] for i in range(len(users))],
                },
                "request_data": {"amount": [10.0 + i for i in range(len(users))]},
                "as_of": t,
            }
            plain = client.post("/v1/features/fraud_scoring", json=body)
            assert plain.status_code == 200 and "metadata" not in plain.json(), plain.text
        # As of a time inside the last tile, the online table already holds later events
        # of that tile (semantics section 3): serving answers those rows from the log.
        early = (t_end // 60_000) * 60_000 + 1
        body = {
            "entities": {"user_id": users, "merchant_id": [merchants[0]] * len(users)},
            "request_data": {"amount": [1.0] * len(users)},
            "as_of": early,
            "include_metadata": True,
        }
        answer = client.post("/v1/features/fraud_scoring", json=body).json()
        assert any(row["user_spend"] == "log" for row in answer["metadata"]["sources"])
    finally:
        client.close()
    # Every logged row keeps its statuses, also of requests that asked for no metadata
    # (and those answers carried none).
    app.state.serving.request_log.flush()
    logged = read_request_log(request_log, "fraud_scoring")
    assert logged.num_rows == 4 * len(users)
    assert all(orjson.loads(text)["amount_count_15m"] for text in logged["statuses_json"].to_pylist())
    # One logged value that is not what the features are: the check must report it.
    wrong = {**answer["features"][0], "amount_count_15m": answer["features"][0]["amount_count_15m"] + 1}
    app.state.serving.request_log.record(
        "fraud_scoring", early, {"user_id": [users[0]], "merchant_id": [merchants[0]]}, {"amount": [1.0]}, [wrong]
    )
    app.state.serving.request_log.flush()

    repo = load_repo(repo_dir)
    reports = check_request_log(repo, request_log, settings.log_uri)
    assert [r.service for r in reports] == ["fraud_scoring"]
    report = reports[0]
    assert report.rows == 4 * len(users) + 1
    rates = {f.feature: f.mismatches for f in report.features}
    # Every served answer recomputes exactly; only the altered row disagrees.
    assert rates == {**dict.fromkeys(rates, 0), "amount_count_15m": 1}, report.render()

    done = streamfeat("consistency-check", *common, "--request-log", str(request_log), check=False)
    assert done.returncode == 1 and "amount_count_15m" in done.stdout
