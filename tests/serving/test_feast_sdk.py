"""Feast's own SDK, unchanged, reads a live `streamfeat serve` through Feast's remote online store.

Feast is installed in its own virtualenv (pinned, and the newest release pip finds;
cached under benchmarks/.peers/, git-ignored). A Feast repo describing the example
fraud views (feature_store.yaml: ``online_store: type: remote``) is applied with
Feast, then ``FeatureStore.get_online_features`` is called by feature service and by
``view:feature`` references, with and without full feature names, for several
entities with request data for the on-demand views, and its values and statuses are
compared with ``/v1/features`` asked the same question a moment before and after.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks.peers.install import (
    PEERS,
    Peer,
    PeerInstallError,
    RegistryUnreachable,
    ensure,
    ensure_peer,
    newest_release,
)
from benchmarks.servers import server
from engine.clock import wall_clock_ms
from engine.definitions import FieldType
from engine.plan import apply_plan
from engine.ports import free_port
from serving.client import FeatureClient
from serving.routes_feast import feast_status
from tests.serving.serving_support import N_SHARDS, REPO_DIR, example_repo, write_rocksdb

pytestmark = pytest.mark.slow

SDK_SCRIPT = Path(__file__).with_name("feast_sdk_support.py")
PINNED = PEERS["feast"].requirements[0].removeprefix("feast==")
SERVICE = "fraud_scoring"
MINUTE = 60_000
ROWS: list[dict[str, Any]] = [  # u0/m0 active in every window, u1/m1 only hours ago, the third never seen
    {"user_id": "u0", "merchant_id": "m0", "amount": 25.0},
    {"user_id": "u1", "merchant_id": "m1", "amount": 7.5},
    {"user_id": "u_new", "merchant_id": "m_new", "amount": 3.0},
]
REFS = [
    "user_spend:amount_count_1d",
    "spend_velocity:spend_velocity_ratio",
    "user_spend:amount_mean_15m",
    "merchant_activity:merchant_txn_count_1h",
]
# How they are answered: grouped by view, views in the order they first appear.
REFS_ANSWERED = [
    "user_spend:amount_count_1d",
    "user_spend:amount_mean_15m",
    "spend_velocity:spend_velocity_ratio",
    "merchant_activity:merchant_txn_count_1h",
]
_FEAST_TYPES = {FieldType.STRING: "String", FieldType.INT: "Int64", FieldType.FLOAT: "Float64", FieldType.BOOL: "Bool"}

FEATURE_STORE_YAML = """project: streamfeat_compat
registry: data/registry.db
provider: local
online_store:
  type: remote
  path: http://127.0.0.1:{port}
offline_store:
  type: file
entity_key_serialization_version: 3
"""

# The example repo's views as a Feast team would have declared them; the schemas are
# filled in from streamfeat's definitions, the transforms mirror feature_defs/transforms.py.
DEFINITIONS = """
from datetime import timedelta
from typing import Any

from feast import Entity, FeatureService, FeatureView, Field, FileSource, RequestSource, ValueType
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Array, Bool, Float64, Int64, String

user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING)
merchant = Entity(name="merchant", join_keys=["merchant_id"], value_type=ValueType.STRING)
transactions = FileSource(name="transactions", path="transactions.parquet", timestamp_field="ts")
user_spend = FeatureView(name="user_spend", entities=[user], ttl=timedelta(days=1), source=transactions,
                         schema=[Field(name="user_id", dtype=String), USER_SPEND_FIELDS])
merchant_activity = FeatureView(name="merchant_activity", entities=[merchant], ttl=timedelta(days=1),
                                source=transactions,
                                schema=[Field(name="merchant_id", dtype=String), MERCHANT_FIELDS])
transaction_request = RequestSource(name="transaction_request", schema=[Field(name="amount", dtype=Float64)])


@on_demand_feature_view(sources=[user_spend, transaction_request],
                        schema=[Field(name="spend_velocity_ratio", dtype=Float64)], mode="python")
def spend_velocity(inputs: dict[str, Any]) -> dict[str, Any]:
    return {"spend_velocity_ratio": [a / max(s or 0.0, 0.001)
                                     for a, s in zip(inputs["amount"], inputs["amount_sum_15m"])]}


@on_demand_feature_view(sources=[user_spend, merchant_activity],
                        schema=[Field(name="user_merchant_share_1h", dtype=Float64)], mode="python")
def user_merchant_share(inputs: dict[str, Any]) -> dict[str, Any]:
    return {"user_merchant_share_1h": [(u or 0.0) / m if m else 0.0
                                       for u, m in zip(inputs["amount_sum_1h"], inputs["merchant_amount_sum_1h"])]}


fraud_scoring = FeatureService(name="fraud_scoring", features=[
    user_spend, merchant_activity[["merchant_txn_count_15m", "merchant_txn_count_1h"]],
    spend_velocity, user_merchant_share])
feast_only = FeatureService(name="feast_only", features=[user_spend])

OBJECTS = [user, merchant, transactions, user_spend, merchant_activity, transaction_request, spend_velocity,
           user_merchant_share, fraud_scoring, feast_only]
"""


def _fields(view_name: str) -> str:
    view = example_repo().view(view_name)
    # A list feature (last_n, ...) is a Feast Array of its column's type.
    columns = {a.output_name: view.column_types[a.column] for a in view.aggregations}
    dtypes = {
        n: f"Array({_FEAST_TYPES[columns[n]]})" if t == FieldType.LIST else _FEAST_TYPES[t]
        for n, t in view.feature_types.items()
    }
    return ", ".join(f'Field(name="{n}", dtype={d})' for n, d in dtypes.items())


def write_feast_repo(root: Path, port: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "feature_store.yaml").write_text(FEATURE_STORE_YAML.format(port=port))
    (root / "definitions.py").write_text(
        DEFINITIONS.replace("USER_SPEND_FIELDS", _fields("user_spend")).replace(
            "MERCHANT_FIELDS", _fields("merchant_activity")
        )
    )
    return root


def recent_events(now: int) -> list[dict[str, Any]]:
    """Events placed so no window boundary passes during the test (none leaves a 15-minute
    window within 9 minutes), the newest 20 s old so the views stay fresh."""
    rng = np.random.default_rng(3)
    bands = [
        ("u0", "m0", now - 6 * MINUTE, now - 3 * MINUTE, 6),
        ("u0", "m0", now - 50 * MINUTE, now - 45 * MINUTE, 4),
        ("u0", "m1", now - 20 * 60 * MINUTE, now - 2 * 60 * MINUTE, 12),
        ("u1", "m1", now - 20 * 60 * MINUTE, now - 2 * 60 * MINUTE, 8),
    ]
    events: list[dict[str, Any]] = []
    for user, merchant, start, end, n in bands:
        for ts in rng.integers(start, end, size=n).tolist():
            events.append(
                {
                    "user_id": user,
                    "merchant_id": merchant,
                    "card_id": "c0",
                    "amount": round(float(rng.uniform(1, 300)), 2),
                    "event_type": "PURCHASE" if rng.random() < 0.85 else "REFUND",
                    "ts": int(ts),
                }
            )
    events.append(
        {
            "user_id": "u0",
            "merchant_id": "m0",
            "card_id": "c0",
            "amount": 12.0,
            "event_type": "PURCHASE",
            "ts": now - 20_000,
        }
    )
    events.sort(key=lambda e: e["ts"])
    return [{**e, "transaction_id": f"t{i}", "partition": 0, "offset": i} for i, e in enumerate(events)]


@pytest.fixture(params=["pinned", "newest"])
def feast_python(request: pytest.FixtureRequest) -> Path:
    """The Python of a virtualenv with Feast: the pinned version, or the newest release."""
    try:
        if request.param == "pinned":
            return ensure("feast").python
        version = newest_release("feast")
        if version == PINNED:
            return ensure("feast").python
        return ensure_peer(Peer(f"feast-{version}", (f"feast=={version}",), "feast")).python
    except RegistryUnreachable as exc:
        pytest.skip(f"the package index is unreachable, Feast ({request.param}) cannot be installed: {exc}")
    except PeerInstallError as exc:
        pytest.fail(f"Feast ({request.param}) did not install: {exc}")


@pytest.fixture
def streamfeat_url(tmp_path: Path) -> Iterator[str]:
    """`streamfeat serve` of the example repo over RocksDB state holding recent events."""
    repo = example_repo()
    data = tmp_path / "data"
    apply_plan(repo, data / "plan.json", shards=N_SHARDS)
    write_rocksdb(data / "state", repo.views, recent_events(wall_clock_ms()), meta_for=("user_spend",))
    port = free_port()
    cmd = [sys.executable, "-m", "cli", "serve", "--repo", str(REPO_DIR), "--port", str(port)]
    with server(cmd, "/readyz", port=port, env={"STREAMFEAT_DATA_DIR": str(data)}):
        yield f"http://127.0.0.1:{port}"


def run_feast_sdk(python: Path, repo: Path, calls: list[dict[str, Any]]) -> dict[str, Any]:
    done = subprocess.run(
        [str(python), str(SDK_SCRIPT), str(repo)],
        input=json.dumps(calls),
        capture_output=True,
        text=True,
        timeout=600,
        cwd=repo,
    )
    assert done.returncode == 0, f"Feast SDK script failed:\n{done.stderr[-3000:]}"
    answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


def v1_answer(url: str) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    entities = {k: [r[k] for r in ROWS] for k in ("user_id", "merchant_id")}
    with FeatureClient(url, timeout=10.0) as client:
        answer = client.get_feature_vectors(
            SERVICE, entities, {"amount": [r["amount"] for r in ROWS]}, include_metadata=True
        )
    return answer["features"], answer["metadata"]["statuses"]


def clock_features() -> set[str]:
    """Features whose value moves with the evaluation time itself (time_since_last)."""
    return {
        agg.output_name
        for view in example_repo().views
        for agg in view.aggregations
        if agg.function == "time_since_last"
    }


def without(rows: list[dict[str, Any]], names: set[str]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k not in names} for row in rows]


def assert_same_as_v1(
    call_id: str,
    got: dict[str, Any],
    wanted_names: list[str],
    full: bool,
    rows: list[dict[str, Any]],
    statuses: list[dict[str, str]],
    later_rows: list[dict[str, Any]] | None = None,
) -> None:
    assert got["ok"], f"{call_id}: Feast raised {got}"
    names = [f"{view}__{feature}" if full else feature for view, feature in (n.split(":") for n in wanted_names)]
    assert got["names"] == ["user_id", "merchant_id", *names], call_id
    assert got["values"]["user_id"] == [r["user_id"] for r in ROWS], call_id
    clock = clock_features()
    for ref, name in zip(wanted_names, names, strict=True):
        feature = ref.split(":")[1]
        # An empty list reaches Feast as null (serving/routes_feast.py: Feast cannot type []).
        values = [None if row[feature] == [] else row[feature] for row in rows]
        if later_rows is not None and feature in clock:
            # Evaluated at the SDK call's own wall-clock time: between the two /v1 answers.
            later = [row[feature] for row in later_rows]
            for mine, lo, hi in zip(got["values"][name], values, later, strict=True):
                assert (mine is None and lo is None) or lo <= mine <= hi, f"{call_id}: {name}"
        else:
            assert got["values"][name] == values, f"{call_id}: {name}"
        want = [feast_status(s[feature], v) for s, v in zip(statuses, values, strict=True)]
        assert got["statuses"][name] == want, f"{call_id}: {name}"


def test_feast_sdk_reads_streamfeat(feast_python: Path, streamfeat_url: str, tmp_path: Path) -> None:
    port = int(streamfeat_url.rsplit(":", 1)[1])
    repo = write_feast_repo(tmp_path / "feast_repo", port)
    service_refs = [f"{ref.view.name}:{f}" for ref in example_repo().service(SERVICE).refs for f in ref.features]
    no_amount = [{k: v for k, v in r.items() if k != "amount"} for r in ROWS]
    calls: list[dict[str, Any]] = [
        {"id": "service", "feature_service": SERVICE, "entity_rows": ROWS},
        {"id": "service_full", "feature_service": SERVICE, "entity_rows": ROWS, "full_feature_names": True},
        {"id": "refs", "features": REFS, "entity_rows": ROWS},
        {"id": "refs_full", "features": REFS, "entity_rows": ROWS, "full_feature_names": True},
        {"id": "async", "mode": "async", "feature_service": SERVICE, "entity_rows": ROWS},
        {"id": "unknown_view", "features": ["user_spnd:amount_sum_1d"], "entity_rows": ROWS},
        {"id": "unknown_feature", "features": ["user_spend:amount_sum_2d"], "entity_rows": ROWS},
        {"id": "unknown_service", "feature_service": "feast_only", "entity_rows": ROWS},
        {"id": "no_request_data", "feature_service": SERVICE, "entity_rows": no_amount},
    ]
    before = v1_answer(streamfeat_url)
    sdk = run_feast_sdk(feast_python, repo, calls)
    after = v1_answer(streamfeat_url)
    clock = clock_features()
    assert (without(before[0], clock), before[1]) == (without(after[0], clock), after[1]), (
        "a window boundary passed during the SDK calls: the events are placed wrongly"
    )
    rows, statuses = before
    later = after[0]
    assert rows[0]["amount_count_15m"] >= 1 and rows[1]["amount_mean_15m"] is None  # PRESENT and NULL_VALUE
    assert statuses[2]["amount_count_1d"] == "NOT_FOUND"
    results = sdk["results"]
    assert_same_as_v1("service", results["service"], service_refs, False, rows, statuses, later)
    assert_same_as_v1("service_full", results["service_full"], service_refs, True, rows, statuses, later)
    assert_same_as_v1("refs", results["refs"], REFS_ANSWERED, False, rows, statuses, later)
    assert_same_as_v1("refs_full", results["refs_full"], REFS_ANSWERED, True, rows, statuses, later)
    # Feast's remote online store has no async read (its base class raises); if a Feast
    # release adds one, its answer must match too.
    if results["async"]["ok"] or results["async"]["class"] != "NotImplementedError":
        assert_same_as_v1("async", results["async"], service_refs, False, rows, statuses, later)
    else:
        assert "RemoteOnlineStore" in results["async"]["message"], results["async"]
    errors = {k: results[k] for k in ("unknown_view", "unknown_feature", "unknown_service", "no_request_data")}
    assert all(e["module"] == "feast.errors" for e in errors.values()), errors
    assert errors["unknown_view"]["class"] == "FeatureViewNotFoundException"
    assert "did you mean 'user_spend'" in errors["unknown_view"]["message"]
    assert errors["unknown_feature"]["class"] == "FeastError"
    assert "no feature 'amount_sum_2d'" in errors["unknown_feature"]["message"]
    assert errors["unknown_service"]["class"] == "FeatureServiceNotFoundException"
    assert "'feast_only'" in errors["unknown_service"]["message"]
    assert "entities.amount" in errors["no_request_data"]["message"]
    print(f"Feast {sdk['feast_version']} SDK read streamfeat: {len(calls)} calls checked")
