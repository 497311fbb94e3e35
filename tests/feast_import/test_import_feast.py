"""`streamfeat import-feast` on a Feast repo written here: what translates, what is listed and why."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from cli import main as cli_main
from engine.definitions import load_repo
from engine.feast_import import read_feast_repo, translate

ENTITIES = """
from feast import Entity, ValueType

user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING, description="A card holder.")
merchant = Entity(name="merchant", join_keys=["merchant_id"], value_type=ValueType.STRING)
"""

SOURCES = """
from datetime import timedelta

from feast import FileSource, KafkaSource, PushSource, RequestSource, Field
from feast.data_format import JsonFormat
from feast.types import Float64

history = FileSource(name="transactions_history", path="data/transactions.parquet", timestamp_field="ts")
transactions = KafkaSource(
    name="transactions",
    kafka_bootstrap_servers="broker:9092",
    topic="card_transactions",
    timestamp_field="ts",
    batch_source=history,
    message_format=JsonFormat(schema_json="transaction_id string, user_id string, merchant_id string, "
                                          "amount double, event_type string, ts timestamp"),
    watermark_delay_threshold=timedelta(minutes=5),
)
pushed = PushSource(name="pushed_transactions", batch_source=history)
transaction_request = RequestSource(name="transaction_request", schema=[Field(name="amount", dtype=Float64)])
"""

FEATURES = """
from datetime import timedelta
from typing import Any

import pandas as pd
from feast import Aggregation, FeatureService, FeatureView, Field, StreamFeatureView
from feast.on_demand_feature_view import on_demand_feature_view
from feast.stream_feature_view import stream_feature_view
from feast.types import Float64, Int64

from entities import merchant, user
from sources import history, transaction_request, transactions

WINDOWS = [timedelta(minutes=m) for m in (15, 60)]


@stream_feature_view(
    entities=[user], ttl=timedelta(days=2), mode="spark", source=transactions,
    aggregations=[
        Aggregation(column="amount", function="sum", time_window=timedelta(minutes=15)),
        Aggregation(column="amount", function="count", time_window=timedelta(hours=1)),
        Aggregation(column="amount", function="mean", time_window=timedelta(days=1), name="amount_mean_1d"),
        Aggregation(column="amount", function="max", time_window=timedelta(seconds=90),
                    slide_interval=timedelta(seconds=30)),
        Aggregation(column="merchant_id", function="count_distinct", time_window=timedelta(hours=1)),
    ],
    timestamp_field="ts", online=True, tags={"team": "risk"},
)
def user_spend(df):
    return df.filter(df.event_type == "PURCHASE")


merchant_activity = StreamFeatureView(
    name="merchant_activity", entities=[merchant], source=transactions, timestamp_field="ts",
    aggregations=[Aggregation(column="amount", function="count", time_window=timedelta(minutes=15))],
)
windowed = StreamFeatureView(
    name="windowed", entities=[user], source=transactions, timestamp_field="ts",
    aggregations=[Aggregation(column="amount", function="sum", time_window=w) for w in WINDOWS],
)
user_profile = FeatureView(name="user_profile", entities=[user], source=history,
                           schema=[Field(name="age", dtype=Int64)])


@on_demand_feature_view(sources=[user_spend, transaction_request],
                        schema=[Field(name="spend_velocity_ratio", dtype=Float64)], mode="python")
def spend_velocity(inputs: dict[str, Any]) -> dict[str, Any]:
    return {"spend_velocity_ratio": [a / max(s or 0.0, 0.001)
                                     for a, s in zip(inputs["amount"], inputs["sum_amount_900s"])]}


@on_demand_feature_view(sources=[user_spend], schema=[Field(name="doubled", dtype=Float64)], mode="pandas")
def doubled(df: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"doubled": df["sum_amount_900s"] * 2})


fraud_scoring = FeatureService(name="fraud_scoring", features=[
    user_spend, merchant_activity[["count_amount_900s"]], spend_velocity], description="Real-time fraud model.")
profile_service = FeatureService(name="profile_service", features=[user_profile])
"""


def write_feast_repo(root: Path) -> Path:
    root.mkdir()
    (root / "feature_store.yaml").write_text("project: cards\nprovider: local\nregistry: data/registry.db\n")
    for name, text in (("entities.py", ENTITIES), ("sources.py", SOURCES), ("features.py", FEATURES)):
        (root / name).write_text(text)
    (root / "test_features.py").write_text("raise RuntimeError('tests of the Feast repo are not read')\n")
    return root


def test_import_feast_writes_a_valid_repo_and_lists_what_it_could_not_translate(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    feast_repo = write_feast_repo(tmp_path / "feast_repo")
    out = tmp_path / "imported_defs"
    assert cli_main(["import-feast", str(feast_repo), "--out", str(out)]) == 0
    printed = capsys.readouterr().out

    repo = load_repo(out)
    assert [e.name for e in repo.entities] == ["merchant", "user"]
    source = repo.source("transactions")
    assert (source.topic, source.timestamp_field, source.timestamp_format) == ("card_transactions", "ts", "iso8601")
    assert source.allowed_lateness == timedelta(minutes=5)
    assert dict(source.field_types) == {
        "transaction_id": "string",
        "user_id": "string",
        "merchant_id": "string",
        "amount": "float",
        "event_type": "string",
    }
    user_spend = repo.view("user_spend")
    # Feast's output names are kept: {function}_{column}_{seconds}s unless the aggregation is named.
    assert user_spend.feature_names == (
        "sum_amount_900s",
        "count_amount_3600s",
        "amount_mean_1d",
        "max_amount_90s",
        "count_distinct_merchant_id_3600s",
    )
    # Feast's exact distinct count is only approximated here: translated, and said so.
    (distinct,) = [a for a in user_spend.aggregations if a.column == "merchant_id"]
    assert distinct.function == "count_distinct_approx"
    approximated = printed.split("\ntranslated approximately (1):\n")[1].split("\nnot translated (")[0]
    assert approximated.startswith(
        "  StreamFeatureView 'user_spend' aggregation 'count_distinct_merchant_id_3600s': count_distinct -> "
        "count_distinct_approx: approximated: an exact distinct count in Feast, a HyperLogLog estimate here"
    ), approximated
    assert "write function='count_distinct' with max_distinct=N" in approximated
    # Counts agree in number with what they count.
    assert "wrote " in printed and ": 2 stream views, 1 on-demand view, 1 service; it validates" in printed, printed
    assert user_spend.aggregation_interval == timedelta(seconds=30)  # divides the 90 s window
    assert dict(user_spend.tags) == {"team": "risk"}
    assert repo.view("merchant_activity").feature_names == ("count_amount_900s",)
    assert [s.name for s in repo.services] == ["fraud_scoring"]
    assert repo.service("fraud_scoring").feature_names == (
        *user_spend.feature_names,
        "count_amount_900s",
        "spend_velocity_ratio",
    )

    # Feast's python-mode transform runs unchanged, one row at a time.
    velocity = repo.on_demand_view("spend_velocity").resolve()
    assert velocity({"amount": 50.0, "sum_amount_900s": 200.0, "count_amount_3600s": 3}) == {
        "spend_velocity_ratio": 0.25
    }

    not_translated = printed.split("\nnot translated (")[1]
    assert "count_distinct" not in not_translated  # translated approximately, above
    for expected in (
        "slide_interval",  # streamfeat windows slide per tile
        "udf",  # the Spark filter of user_spend
        "ttl not translated",
        "'windowed'",  # a list comprehension is not read statically
        "'user_profile'",  # batch view
        "'profile_service'",  # reads the batch view
        "'doubled'",  # pandas mode
        "'pushed_transactions'",
        "batch_source",
        "kafka_bootstrap_servers",
    ):
        assert expected in not_translated, expected
    assert "mode 'pandas'" in not_translated and "FeatureView 'user_profile' is not translated" in not_translated
    assert "test_features.py" not in printed
    written = (out / "definitions.py").read_text()
    assert "Not translated:" in written and "ttl not translated" in written  # the module says it too
    assert (
        "Translated approximately:\n- StreamFeatureView 'user_spend' aggregation 'count_distinct_merchant_id_3600s'"
        in written
    )

    # Never overwrites without --force.
    assert cli_main(["import-feast", str(feast_repo), "--out", str(out)]) == 2
    assert "already exist" in capsys.readouterr().err
    assert cli_main(["import-feast", str(feast_repo), "--out", str(out), "--force"]) == 0


def test_reader_runs_nothing_and_reports_unreadable_files(tmp_path: Path) -> None:
    feast_repo = write_feast_repo(tmp_path / "feast_repo")
    (feast_repo / "broken.py").write_text("def (:\n")
    source = read_feast_repo(feast_repo)
    assert [f for f, _ in source.skipped_files] == ["broken.py"]
    translation = translate(source, str(feast_repo))
    assert any(what == "broken.py" and "not readable Python" in why for what, why in translation.not_translated)
    assert "StreamFeatureView 'user_spend'" in translation.translated


def test_missing_repo_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["import-feast", str(tmp_path / "nope"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "expected a directory" in err and "feature_store.yaml" in err


def test_a_directory_without_feast_definitions_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "feature_store.yaml").write_text("project: x\n")
    (tmp_path / "repo" / "helpers.py").write_text("def f():\n    return 1\n")
    assert cli_main(["import-feast", str(tmp_path / "repo"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "no Feast definition found" in err and "nothing was written" in err, err
    assert not (tmp_path / "out").exists()
