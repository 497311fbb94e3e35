"""Training sets of the list functions: Arrow list columns of the column's type, also
for a spine whose entities have no events (an empty log slice), equal to the reference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from engine.definitions import FeatureRepo, FeatureService, load_repo
from engine.offline.training import get_training_set
from tests.engine.streaming_support import REPO
from tests.reference import reference_value
from tests.serving.serving_support import write_log

MINUTE = 60_000
T0 = 1_780_000_000_000


def _events() -> list[dict[str, Any]]:
    merchants = ["m1", "m2", "m1", "m3", "m2", "m4"]
    return [
        {
            "user_id": "u1",
            "merchant_id": m,
            "card_id": f"c{i % 2}",  # the example source's card column (a distinct count reads it)
            "amount": float(10 + i),
            "event_type": "PURCHASE",
            "ts": T0 + i * MINUTE // 2,
            "partition": i % 2,
            "offset": i,
        }
        for i, m in enumerate(merchants)
    ]


def _repo() -> FeatureRepo:
    base = load_repo(REPO)
    lists = FeatureService(
        name="lists",
        features=[
            base.view("user_spend")[["last_5_merchants_1d"]],
            base.view("merchant_activity")[["merchant_first_3_amounts_1h"]],
        ],
    )
    return FeatureRepo.from_objects([*base.views, *base.on_demand_views, *base.services, lists])


def _spine(rows: list[tuple[str, str, int]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user_id": [u for u, _, _ in rows],
            "merchant_id": [m for _, m, _ in rows],
            "event_timestamp": pl.Series([t for _, _, t in rows], dtype=pl.Int64).cast(pl.Datetime("ms", "UTC")),
        }
    )


def test_list_columns_are_typed_and_exact(tmp_path: Path) -> None:
    repo = _repo()
    events = _events()
    write_log(str(tmp_path / "log"), repo.views, events)
    rows = [("u1", "m1", T0 + 3 * MINUTE), ("u1", "m2", T0 + MINUTE), ("nobody", "m9", T0 + MINUTE)]
    frame = get_training_set(repo, "lists", _spine(rows), str(tmp_path / "log"))
    assert frame.schema["last_5_merchants_1d"] == pl.List(pl.String)
    assert frame.schema["merchant_first_3_amounts_1h"] == pl.List(pl.Float64)
    reference = [
        {"entity": e["user_id"], "e": e["ts"], "partition": e["partition"], "offset": e["offset"], **e} for e in events
    ]
    by_merchant = [{**e, "entity": e["merchant_id"], "value": e["amount"]} for e in reference]
    for row, (user, merchant, t) in zip(frame.iter_rows(named=True), rows, strict=True):
        want_user = reference_value(reference, user, t, "last_n", 86_400_000, MINUTE, n=5, column="merchant_id")
        want_merchant = reference_value(by_merchant, merchant, t, "first_n", 3_600_000, MINUTE, n=3)
        assert row["last_5_merchants_1d"] == want_user
        assert row["merchant_first_3_amounts_1h"] == want_merchant
    assert frame.row(0, named=True)["last_5_merchants_1d"] == ["m4", "m2", "m3", "m1", "m2"]
    # Evaluated one spine row at a time (in event-time order, put back in spine order):
    # the same typed frame.
    one_by_one = get_training_set(repo, "lists", _spine(rows), str(tmp_path / "log"), spine_chunk_rows=1)
    assert one_by_one.schema == frame.schema and one_by_one.equals(frame)
    # Entities without any event: an empty log slice still gives typed (empty) lists.
    empty = get_training_set(repo, "lists", _spine([("nobody", "m9", T0)]), str(tmp_path / "log"))
    assert empty.schema["merchant_first_3_amounts_1h"] == pl.List(pl.Float64)
    assert empty.row(0, named=True)["merchant_first_3_amounts_1h"] == []
