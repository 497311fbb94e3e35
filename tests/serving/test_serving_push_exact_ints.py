"""POST /v1/push with the ints at the boundaries of docs/semantics.md's exactness rule
(tests/exact_int_repo.py), then served back: a record whose summed int a double cannot hold
is refused with HTTP 422 naming the field (the stream would dead-letter it as
value_out_of_range); card numbers anywhere in int64 are accepted, written to the topic as
sent, and served by POST /v1/features exactly, as JSON ints."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from bytewax.testing import run_main

from dataflows.stream import build_flow
from engine.plan import apply_plan
from engine.state import RocksDBStore
from tests import exact_int_repo as ints
from tests.backfill.backfill_support import START_MS
from tests.engine.streaming_support import applied_events, make_job, read_topic
from tests.reference import inexact_int_fields
from tests.serving.serving_support import N_SHARDS, state_client

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_push_refuses_inexact_summed_ints_and_big_card_numbers_are_served_exactly(
    tmp_path: Path, kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    topic = kafka_topic(partitions=1)
    source, views, repo = ints.definitions(topic)
    _, plan = apply_plan(repo, tmp_path / "plan.json", shards=N_SHARDS, check_transforms=False)
    state_dir = tmp_path / "state"
    RocksDBStore(state_dir, N_SHARDS).close()
    records = [(ints.inexact_payment if i % 4 == 3 else ints.payment)(i, START_MS + i * 7_000) for i in range(60)]
    read = ints.aggregations_read(views)
    refused = [i for i, r in enumerate(records) if inexact_int_fields(r, ints.schema_kinds(source), read)]
    assert refused == list(range(3, 60, 4)), "the reference refuses exactly the inexact amounts"

    with state_client(
        state_dir, tmp_path / "sec", repo, plan, kafka_bootstrap=kafka_bootstrap, push_sources="*"
    ) as client:
        answer = client.post("/v1/push/payments", json={"records": records})
        assert answer.status_code == 422, answer.text
        error = answer.json()["error"]
        assert [(r["index"], r["reason"]) for r in error["rejected"]] == [(i, "value_out_of_range") for i in refused]
        for rejection in error["rejected"]:
            amount = records[rejection["index"]]["amount"]
            assert f"field 'amount': {amount} is beyond +-2**53" in rejection["detail"], rejection
        assert error["accepted"] == len(records) - len(refused)
        # A request of good records only, holding card numbers at the int64 ends, is accepted whole.
        ends = [
            {**ints.payment(60 + i, START_MS + (60 + i) * 7_000), "card_number": c}
            for i, c in enumerate((ints.INT64_MAX, ints.INT64_MIN))
        ]
        ok = client.post("/v1/push/payments", json={"records": ends})
        assert ok.status_code == 200 and ok.json()["accepted"] == 2, ok.text

    good = [r for i, r in enumerate(records) if i not in refused] + ends
    written = [json.loads(r.value) for r in read_topic(kafka_bootstrap, topic, 1)]
    assert written == good, "the topic holds the good records as sent, card numbers exact"

    job = make_job(
        tmp_path / "stream", topic, kafka_bootstrap, shards=N_SHARDS, source=source, views=views, state_dir=state_dir
    )
    run_main(build_flow(job))  # type: ignore[no-untyped-call]
    applied = applied_events(
        [ints.reference_event(doc, 0, offset) for offset, doc in enumerate(good)], source.allowed_lateness_ms
    )
    assert len(applied) == len(good)
    t = max(int(e["e"]) for e in applied) + 60_000

    pairs = sorted({(str(e["user_id"]), int(e["card_number"])) for e in applied})
    body = {"entities": {"user_id": [u for u, _ in pairs], "card_number": [c for _, c in pairs]}, "as_of": t}
    with state_client(state_dir, tmp_path / "sec2", repo, plan) as client:
        answer = client.post(f"/v1/features/{ints.SERVICE}", json=body)
    assert answer.status_code == 200, answer.text
    rows = answer.json()["features"]
    big = 0
    keys = dict(ints.VIEW_KEYS)
    for row, pair in zip(rows, pairs, strict=True):
        assert (row["user_id"], row["card_number"]) == pair
        for view in views:
            key = pair[0] if keys[view.name] == "user_id" else pair[1]
            got = {n: row[n] for n in view.feature_names}
            big += ints.check_values(view, got, applied, keys[view.name], key, t, f"served {view.name} {key!r}")
    assert big > 0 and any(abs(c) > ints.LIMIT for _, c in pairs), "card numbers beyond 2**53 were served"
