"""Run with the Python of a Feast virtualenv: build a Feast repo (SQLite online store) whose
views mirror two of streamfeat's example views, and write the given feature rows to its
online store, as a team's Feast materialization job would.

    <feast venv>/bin/python tests/serving/feast_materialize_support.py REPO_DIR < rows.json

stdin: ``{"user_spend": [{"user_id", features..., "event_timestamp_ms"}], "merchant_activity": [...]}``.
Then serve it with ``feast -c REPO_DIR serve``. Standalone on purpose: it runs in Feast's
environment and must not import streamfeat.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

DEFINITIONS = """
from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64, String

user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING)
merchant = Entity(name="merchant", join_keys=["merchant_id"], value_type=ValueType.STRING)
user_spend = FeatureView(
    name="user_spend", entities=[user], ttl=timedelta(days=3650), online=True,
    source=FileSource(path="REPO/data/user_spend.parquet", timestamp_field="event_timestamp"),
    schema=[Field(name="user_id", dtype=String), Field(name="amount_sum_1h", dtype=Float64),
            Field(name="amount_mean_15m", dtype=Float64), Field(name="amount_count_1d", dtype=Int64),
            Field(name="ms_since_last_purchase", dtype=Int64)])
merchant_activity = FeatureView(
    name="merchant_activity", entities=[merchant], ttl=timedelta(days=3650), online=True,
    source=FileSource(path="REPO/data/merchant_activity.parquet", timestamp_field="event_timestamp"),
    schema=[Field(name="merchant_id", dtype=String), Field(name="merchant_txn_count_1h", dtype=Int64),
            Field(name="merchant_txn_count_15m", dtype=Int64)])
"""


def main(repo_dir: str) -> None:
    import pandas as pd  # type: ignore[import-untyped]
    from feast import FeatureStore  # type: ignore[import-not-found]

    # benchmarks/peers/feast_repo.py is standalone too: it owns the SQLite store config.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from benchmarks.peers.feast_repo import STORE_YAML

    repo = Path(repo_dir).resolve()
    (repo / "data").mkdir(parents=True, exist_ok=True)
    (repo / "feature_store.yaml").write_text(STORE_YAML.replace("project: bench", "project: shadow"))
    (repo / "definitions.py").write_text(DEFINITIONS.replace("REPO", str(repo)))
    rows = json.loads(sys.stdin.read())
    frames = {}
    for view, view_rows in rows.items():
        frame = pd.DataFrame(view_rows)
        frame["event_timestamp"] = pd.to_datetime(frame.pop("event_timestamp_ms"), unit="ms", utc=True)
        frame.to_parquet(repo / "data" / f"{view}.parquet")
        frames[view] = frame
    sys.path.insert(0, str(repo))
    import definitions as d  # type: ignore[import-not-found]  # the file just written

    store = FeatureStore(repo_path=str(repo))
    store.apply([d.user, d.merchant, d.user_spend, d.merchant_activity])
    for view, frame in frames.items():
        store.write_to_online_store(view, frame)
    print(json.dumps({view: len(frame) for view, frame in frames.items()}))


if __name__ == "__main__":
    main(sys.argv[1])
