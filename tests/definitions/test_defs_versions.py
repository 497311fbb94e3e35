"""View versions: a version > 1 gets its own name and fingerprint, runs beside the old one,
a service pins one, and the plan says which view a new version belongs to."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from engine.definitions import (
    Aggregation,
    DefinitionError,
    FeatureRepo,
    FeatureService,
    StreamFeatureView,
    load_repo,
)
from engine.plan import compute_plan, repo_entries
from tests.serving.serving_support import REPO_DIR


def _versions() -> tuple[StreamFeatureView, StreamFeatureView, FeatureRepo]:
    example = load_repo(REPO_DIR)
    v1 = example.view("user_spend")
    v2 = StreamFeatureView(
        name="user_spend",
        source=v1.source,
        entities=v1.entities,
        version=2,
        aggregations=[Aggregation(column="amount", function="sum", window=timedelta(minutes=15))],
        filter=v1.filter,
    )
    return v1, v2, example


def test_a_second_version_has_its_own_name_and_fingerprint() -> None:
    v1, v2, _ = _versions()
    assert (v2.name, v2.family, v2.version) == ("user_spend__v2", "user_spend", 2)
    assert (v1.name, v1.family, v1.version) == ("user_spend", "user_spend", 1)
    same_partials = dataclasses.replace(v2, version=1, name="user_spend_copy")
    assert same_partials.fingerprint != v2.fingerprint  # version counts, even with equal partials
    assert "version" not in v1.fingerprint_dict() and "version" not in v1.to_dict()  # v1 state unchanged
    assert dataclasses.replace(v2, description="x").name == "user_spend__v2"  # not suffixed twice


@pytest.mark.parametrize(
    ("name", "version", "match"),
    [
        ("user_spend", 0, "field 'version'"),
        ("user_spend", True, "field 'version'"),
        ("user_spend__v3", 2, "field 'name'"),
    ],
)
def test_bad_versions_are_refused(name: str, version: object, match: str) -> None:
    v1, _, _ = _versions()
    with pytest.raises(DefinitionError, match=match):
        StreamFeatureView(
            name=name,
            source=v1.source,
            entities=v1.entities,
            aggregations=v1.aggregations,
            version=version,  # type: ignore[arg-type]
        )


def test_both_versions_run_and_a_service_pins_one() -> None:
    v1, v2, example = _versions()
    pinned = FeatureService(name="fraud_scoring_v2", features=[v2])
    repo = FeatureRepo.from_objects([*example.views, *example.on_demand_views, *example.services, v2, pinned])
    assert repo.views_for_source("transactions") == tuple(
        sorted([*example.views_for_source("transactions"), v2], key=lambda v: v.name)
    )
    assert pinned.views == (v2,) and pinned.feature_names == ("amount_sum_15m",)
    assert (
        pinned.fingerprint_hex
        != FeatureService(name="fraud_scoring_v1", features=[v1[["amount_sum_15m"]]]).fingerprint_hex
    )
    # Applied first without v2, the plan adds it as a new view and says whose version it is.
    before = compute_plan(example, None)
    from engine.plan import AppliedPlan

    applied = AppliedPlan(shards=before.shards, entries=repo_entries(example), applied_at="")
    rendered = compute_plan(repo, applied).render()
    assert (
        "view user_spend__v2: new  [needs backfill] (version 2 of user_spend; other versions keep running)" in rendered
    )
    assert "view user_spend:" not in rendered  # the running version is unchanged
