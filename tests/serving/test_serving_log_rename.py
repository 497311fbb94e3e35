"""``as_of`` reads answered from the Parquet log after a view is renamed (same
fingerprint: plan reuses its state) read what was logged under its earlier name: they
answer what the training set of the repo before the rename answers."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from engine.definitions import load_repo
from engine.offline.training import get_training_set
from engine.plan import apply_plan
from engine.state.online_rocksdb import RocksDBOnlineTable
from tests.backfill.backfill_support import SHARDS, START_MS, random_events, run_backfill, write_history
from tests.serving.asgi_support import ASGIClient
from tests.serving.serving_support import REPO_DIR, make_app

HOUR = 3_600_000


@pytest.fixture
def renamed_repo(tmp_path: Path) -> Iterator[Path]:
    """The example repo as a package of its own, with user_spend renamed user_spend_v."""
    repo = tmp_path / "renamed_defs"
    shutil.copytree(REPO_DIR, repo, ignore=shutil.ignore_patterns("__pycache__"))
    views = repo / "views.py"
    views.write_text(views.read_text().replace('name="user_spend"', 'name="user_spend_v"'))
    saved = list(sys.path)
    yield repo
    sys.path[:] = saved
    for name in [m for m in sys.modules if m == "renamed_defs" or m.startswith("renamed_defs.")]:
        del sys.modules[name]


def test_as_of_reads_after_a_rename_read_the_earlier_names_log(tmp_path: Path, renamed_repo: Path) -> None:
    rng = np.random.default_rng(3)
    span = 6 * HOUR
    events = random_events(rng, 400, users=4, merchants=3, start_ms=START_MS, span_ms=span)
    files = [write_history(events, tmp_path / "history" / "part-0.parquet")]
    run_backfill(tmp_path, files, START_MS - HOUR, START_MS + span + HOUR)  # logged as user_spend
    before = load_repo(REPO_DIR)
    apply_plan(before, tmp_path / "plan.json", shards=SHARDS, check_transforms=False)
    after = load_repo(renamed_repo)
    assert after.view("user_spend_v").fingerprint_hex == before.view("user_spend").fingerprint_hex
    plan, applied = apply_plan(after, tmp_path / "plan.json", shards=SHARDS, check_transforms=False)
    assert plan.needs_backfill == () and "state is reused" in plan.render()

    purchases = sorted(e["ts"] for e in events if e["event_type"] == "PURCHASE")
    # Times between events, well before each user's newest event: the log answers them.
    times = [int(t) + 1 for t in purchases[10 : len(purchases) // 2 : 7]]
    users = [f"u{i % 4}" for i in range(len(times))]
    merchants = [f"m{i % 3}" for i in range(len(times))]
    amounts = [10.0] * len(times)
    spine = pl.DataFrame(
        {
            "user_id": users,
            "merchant_id": merchants,
            "amount": amounts,
            "event_timestamp": pl.Series(times, dtype=pl.Int64),
        }
    )
    log_root = str(tmp_path / "log")
    want = get_training_set(before, "fraud_scoring", spine, log_root)
    table = RocksDBOnlineTable(tmp_path / "state", SHARDS, tmp_path / "secondary", background=False)
    client = ASGIClient(make_app(after, applied, table, log_root=log_root))
    try:
        body = {
            "entities": {"user_id": users, "merchant_id": merchants},
            "request_data": {"amount": amounts},
            "as_of": times,
            "include_metadata": True,
        }
        response = client.post("/v1/features/fraud_scoring", json=body)
        assert response.status_code == 200, response.text
        answer = response.json()
    finally:
        client.close()
        table.close()
    origins = [row["user_spend_v"] for row in answer["metadata"]["sources"]]
    assert origins.count("log") > 5, origins
    for i, row in enumerate(answer["features"]):
        expected = want.row(i, named=True)
        for name in ("amount_sum_1d", "amount_count_1h", "amount_mean_15m"):
            wanted = expected[name]
            assert row[name] == (wanted if wanted is None else pytest.approx(wanted, rel=1e-9)), (i, name, origins[i])
