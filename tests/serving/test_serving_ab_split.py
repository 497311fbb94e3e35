"""Two versions of a view served at once: a service with ab_split answers each entity from
one version, chosen by key hash (stable), and says which service answered each row."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from engine.definitions import (
    Aggregation,
    FeatureRepo,
    FeatureService,
    RepoValidationError,
    StreamFeatureView,
)
from engine.plan import apply_plan
from serving.ab_routing import key_bucket
from tests.serving.asgi_support import ASGIClient
from tests.serving.serving_support import META_VIEWS, T_END, USERS, example_repo, rocksdb_client


def _versioned_repo(split: dict[str, float]) -> FeatureRepo:
    base = example_repo()
    v1 = base.view("user_spend")
    # Version 2 counts every transaction (no PURCHASE filter): other values for the same feature.
    v2 = StreamFeatureView(
        name="user_spend",
        version=2,
        source=v1.source,
        entities=v1.entities,
        aggregations=[
            Aggregation("amount", "sum", timedelta(minutes=15)),
            Aggregation("amount", "sum", timedelta(hours=1)),
        ],
    )
    features = ["amount_sum_15m", "amount_sum_1h"]
    pinned_v1 = FeatureService(name="spend_v1", features=[v1[features]])
    pinned_v2 = FeatureService(name="spend_v2", features=[v2[features]])
    ab = FeatureService(name="spend_ab", features=[v1[features]], ab_split=split)
    return FeatureRepo.from_objects([*base.views, *base.on_demand_views, *base.services, v2, pinned_v1, pinned_v2, ab])


@pytest.fixture(scope="module")
def ab_client(events: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ASGIClient]:
    repo = _versioned_repo({"spend_v2": 0.5})
    root: Path = tmp_path_factory.mktemp("ab")
    _, plan = apply_plan(repo, root / "plan.json", shards=4, check_transforms=False)
    with rocksdb_client(root, repo, plan, events, meta_for=META_VIEWS) as client:
        yield client


def _ask(client: ASGIClient, service: str, users: list[str]) -> dict[str, Any]:
    response = client.post(
        f"/v1/features/{service}", json={"entities": {"user_id": users}, "as_of": T_END, "include_metadata": True}
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_each_entity_is_answered_by_its_version(ab_client: ASGIClient) -> None:
    users = list(USERS)
    answer = _ask(ab_client, "spend_ab", users)
    v1, v2 = _ask(ab_client, "spend_v1", users), _ask(ab_client, "spend_v2", users)
    answered = answer["metadata"]["answered_by"]
    assert answer["service"] == "spend_ab" and set(answered) == {"spend_ab", "spend_v2"}
    assert [u for u in answered] == ["spend_v2" if key_bucket((u,)) < 0.5 else "spend_ab" for u in users]
    for row, chosen, old, new in zip(answer["features"], answered, v1["features"], v2["features"], strict=True):
        assert row == (new if chosen == "spend_v2" else old)
    assert v1["features"] != v2["features"]  # the versions really differ on this data
    assert set(answer["metadata"]["views"]) == {"user_spend", "user_spend__v2"}
    # Stable: an entity keeps its version whatever else the request holds.
    alone = _ask(ab_client, "spend_ab", [users[1]])
    assert alone["metadata"]["answered_by"] == [answered[1]] and alone["features"] == [answer["features"][1]]
    described = ab_client.get("/v1/services/spend_ab").json()
    assert described["ab_split"] == {"spend_v2": 0.5}


@pytest.mark.parametrize(
    ("split", "match"),
    [
        ({"nope": 0.2}, "service 'nope' is not defined"),
        ({"fraud_scoring": 0.2}, "same features in the same order"),
        ({"spend_v2": 1.0}, "share between 0 and 1"),
    ],
)
def test_bad_splits_are_refused(split: dict[str, float], match: str) -> None:
    with pytest.raises((RepoValidationError, ValueError), match=match):
        _versioned_repo(split)
