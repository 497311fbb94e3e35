"""min, max and last of an int column are served as ints (docs/semantics.md section 3,
"Types of values"; docs/serving.md): JSON integers on /v1, int64 values on the
Feast-compatible route, type "int" in a service's outputs, and ints in the inputs of
on-demand transforms (python and batch mode). sum of the column stays a float.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.definitions import FeatureRepo, FeatureService
from engine.plan import apply_plan
from engine.state import RocksDBOnlineTable
from tests.engine.payments_support import INT_FEATURES, doubled, payment_source, payment_view
from tests.engine.streaming_support import assert_close, expected_values
from tests.serving.asgi_support import ASGIClient
from tests.serving.serving_support import N_SHARDS, T_END, make_app, write_log, write_rocksdb

MINUTE = 60_000
SERVICE = "cents_service"
USERS = ["u0", "big", "nobody"]

VIEW = payment_view(payment_source())


DOUBLED, DOUBLED_BATCH = doubled(VIEW, "python"), doubled(VIEW, "batch")


def payments() -> list[dict[str, Any]]:
    """u0 pays small amounts over the last 40 minutes; "big" pays next to 2**53 (the
    largest int a field read as a double holds), its last payment 10 minutes ago."""
    rows = [("u0", -250 + 97 * i, 1.5 * i, T_END - 40 * MINUTE + 3 * MINUTE * i) for i in range(13)]
    rows += [("big", 2**53 - i, 10.25, T_END - 30 * MINUTE + 5 * MINUTE * i) for i in range(5)]
    rows.sort(key=lambda r: r[3])
    return [
        {"user_id": u, "cents": c, "price": p, "ts": ts, "partition": 0, "offset": i}
        for i, (u, c, p, ts) in enumerate(rows)
    ]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ASGIClient, list[dict[str, Any]]]]:
    repo = FeatureRepo.from_objects(
        [
            VIEW.source,
            *VIEW.entities,
            VIEW,
            DOUBLED,
            DOUBLED_BATCH,
            FeatureService(SERVICE, features=[VIEW, DOUBLED, DOUBLED_BATCH]),
        ]
    )
    root: Path = tmp_path_factory.mktemp("ints")
    _, plan = apply_plan(repo, root / "plan.json", shards=N_SHARDS, check_transforms=True)
    events = payments()
    write_log(str(root / "log"), repo.views, events)
    write_rocksdb(root / "state", repo.views, events, meta_for=[VIEW.name])
    table = RocksDBOnlineTable(root / "state", N_SHARDS, root / "secondary", background=False)
    client = ASGIClient(make_app(repo, plan, table, log_root=str(root / "log")))
    try:
        yield client, events
    finally:
        client.close()
        table.close()


def reference(events: list[dict[str, Any]], user: str, t: int) -> dict[str, Any]:
    rows = [{**e, "entity": e["user_id"], "e": e["ts"]} for e in events]
    return expected_values(VIEW, rows, user, t, filter=None)


# -20 min: before the newest events, answered from the Parquet log (serving/history.py).
@pytest.mark.parametrize("offset_ms", [-20 * MINUTE, 0, 12 * MINUTE, 2 * 60 * MINUTE])
def test_v1_serves_ints_and_transforms_read_them(
    served: tuple[ASGIClient, list[dict[str, Any]]], offset_ms: int
) -> None:
    client, events = served
    t = T_END + offset_ms
    body = {"entities": {"user_id": USERS}, "as_of": t, "include_metadata": True}
    response = client.post(f"/v1/features/{SERVICE}", json=body)
    assert response.status_code == 200, response.text
    rows = response.json()["features"]
    answered_by = {row[VIEW.name] for row in response.json()["metadata"]["sources"]}
    assert ("log" in answered_by) == (offset_ms < 0), answered_by
    for user, row in zip(USERS, rows, strict=True):
        want = reference(events, user, t)
        assert_close({n: row[n] for n in want}, want, f"/v1 {user} at {t}")  # ints are ints, floats floats
        # One entity per request takes serving's one-entity path (WindowPlan), the others evaluate_many.
        single = client.post(f"/v1/features/{SERVICE}", json={"entities": {"user_id": [user]}, "as_of": t})
        alone = single.json()["features"][0]
        assert_close({n: alone[n] for n in want}, want, f"/v1 {user} alone at {t}")
        doubled = None if want["cents_max_1h"] is None else 2 * want["cents_max_1h"]
        assert row["cents_max_doubled"] == doubled and row["cents_max_doubled_batch"] == doubled, row
        assert type(row["cents_max_doubled"]) is type(doubled), row
    big = rows[1]
    if offset_ms == 0:
        assert big["cents_max_1h"] == 2**53 and big["cents_last_1h"] == 2**53 - 4, big
        assert type(big["cents_sum_1h"]) is float, big  # a sum stays a float
    # The raw JSON holds integers, never 1234.0.
    assert b'"cents_max_lifetime":9007199254740992,' in response.content


def test_service_outputs_and_the_feast_route_type_them_int(
    served: tuple[ASGIClient, list[dict[str, Any]]],
) -> None:
    client, events = served
    outputs = {o["name"]: o["type"] for o in client.get(f"/v1/services/{SERVICE}").json()["outputs"]}
    assert {outputs[n] for n in INT_FEATURES} == {"int"}, outputs
    assert outputs["cents_sum_1h"] == outputs["price_max_1h"] == "float", outputs
    response = client.post(
        "/get-online-features", json={"feature_service": SERVICE, "entities": {"user_id": USERS}, "as_of": T_END}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    columns = dict(zip(body["metadata"]["feature_names"], body["results"], strict=True))
    for i, user in enumerate(USERS):
        want = reference(events, user, T_END)
        got = {n: columns[n]["values"][i] for n in want}
        assert_close(got, want, f"feast route {user}")  # Feast's client reads an int as int64_val
