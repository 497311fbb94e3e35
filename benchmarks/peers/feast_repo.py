"""Run with the Feast virtualenv's Python (benchmarks/.peers/feast): build a Feast repo with
a SQLite online store holding six user features for every user in FEATURES_PARQUET, plus
an on-demand view computing the same request-time ratio as streamfeat's spend_velocity.

    .peers/feast/bin/python benchmarks/peers/feast_repo.py REPO_DIR FEATURES_PARQUET

Then serve it with: .peers/feast/bin/feast -c REPO_DIR serve -p PORT --no-access-log
Standalone on purpose: it must not import streamfeat (a different environment).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

DEFINITIONS = """
from datetime import timedelta
from typing import Any

from feast import Entity, FeatureService, FeatureView, Field, FileSource, RequestSource
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, Int64

user = Entity(name="user", join_keys=["user_id"])
source = FileSource(path="FEATURES_PATH", timestamp_field="event_timestamp")
user_spend = FeatureView(
    name="user_spend", entities=[user], ttl=timedelta(days=3650), source=source, online=True,
    schema=[Field(name="user_id", dtype=__import__("feast").types.String),
            Field(name="amount_sum_15m", dtype=Float64), Field(name="amount_count_15m", dtype=Int64),
            Field(name="amount_mean_15m", dtype=Float64), Field(name="amount_sum_1h", dtype=Float64),
            Field(name="amount_count_1h", dtype=Int64), Field(name="amount_sum_1d", dtype=Float64)],
)
request = RequestSource(name="transaction_request", schema=[Field(name="amount", dtype=Float64)])


@on_demand_feature_view(sources=[user_spend, request], schema=[Field(name="spend_velocity_ratio", dtype=Float64)],
                        mode="python")
def spend_velocity(inputs: dict[str, Any]) -> dict[str, Any]:
    return {"spend_velocity_ratio": [a / max(s or 0.0, 0.001)
                                     for a, s in zip(inputs["amount"], inputs["amount_sum_15m"])]}


fraud_scoring = FeatureService(name="fraud_scoring", features=[user_spend, spend_velocity])
"""

STORE_YAML = """project: bench
registry: data/registry.db
provider: local
online_store:
  type: sqlite
  path: data/online.db
offline_store:
  type: file
entity_key_serialization_version: 3
"""


def main(repo_dir: str, features_parquet: str) -> None:
    import pandas as pd  # type: ignore[import-untyped]
    from feast import FeatureStore  # type: ignore[import-not-found]

    repo = Path(repo_dir)
    (repo / "data").mkdir(parents=True, exist_ok=True)
    (repo / "feature_store.yaml").write_text(STORE_YAML)
    (repo / "definitions.py").write_text(DEFINITIONS.replace("FEATURES_PATH", str(Path(features_parquet).resolve())))
    sys.path.insert(0, str(repo))
    import definitions as d  # type: ignore[import-not-found]  # the file just written

    store = FeatureStore(repo_path=str(repo))
    store.apply([d.user, d.user_spend, d.request, d.spend_velocity, d.fraud_scoring])
    frame = pd.read_parquet(features_parquet)
    started = time.perf_counter()
    store.write_to_online_store("user_spend", frame)
    seconds = time.perf_counter() - started
    import importlib.metadata

    print(
        json.dumps({"rows": len(frame), "write_seconds": seconds, "feast_version": importlib.metadata.version("feast")})
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
