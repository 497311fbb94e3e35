"""A renamed view keeps its fingerprint, its state and its Parquet log: the log of a view
is every ``view=*/fp=<fingerprint>`` directory, so training sets, serving's first logged
time and every other reader see the rows logged under its earlier names."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import polars as pl

from engine.definitions import Aggregation, Entity, EventSource, FeatureRepo, FeatureService, StreamFeatureView
from engine.io.log_format import DAY_MS
from engine.io.log_reader import first_event_time, list_log_files, read_log
from engine.io.parquet_log import ParquetLogWriter
from engine.offline.training import get_training_set
from engine.plan import apply_plan, compute_plan, load_applied_plan
from engine.quality import run_quality
from serving.history import HistoricalReads

G = 1000
BASE = 19_800 * DAY_MS + DAY_MS - 3 * G  # the log spans two dates

user = Entity("user", ["user_id"])
tx = EventSource("tx", topic="tx", timestamp_field="ts", schema={"user_id": str, "amount": float})
spend = StreamFeatureView(
    "spend",
    source=tx,
    entities=[user],
    aggregations=[
        Aggregation("amount", "count", timedelta(hours=1), name="n"),
        Aggregation("amount", "sum", timedelta(hours=1), name="total"),
    ],
    aggregation_interval=timedelta(seconds=1),
)
spend_v = dataclasses.replace(spend, name="spend_v")


def repo_of(view: StreamFeatureView) -> FeatureRepo:
    return FeatureRepo.from_objects([view, FeatureService("svc", [view])])


def log_events(root: str, view: StreamFeatureView, events: list[tuple[int, int]]) -> None:
    """Publish events ``(event time, offset)`` of user u1 (amount 1.0) as the applier
    would, under the view's current name."""
    t = np.asarray([e[0] for e in events], dtype=np.int64)
    writer = ParquetLogWriter(root, view.name, view.fingerprint_hex, view.join_keys, view.columns, "shard-000")
    writer.append(
        {
            "user_id": np.asarray(["u1"] * len(events)),
            "event_time": t,
            "partition": np.zeros(len(events), dtype=np.int32),
            "offset": np.asarray([e[1] for e in events], dtype=np.int64),
            "tile_start": (t // G) * G,
            "value__amount": np.ones(len(events)),
        }
    )
    assert writer.publish() is not None


def counts(repo: FeatureRepo, root: str, times: list[int]) -> list[Any]:
    spine = pl.DataFrame({"user_id": ["u1"] * len(times), "event_timestamp": times})
    return get_training_set(repo, "svc", spine, root)["n"].to_list()


def test_a_renamed_view_reads_the_log_of_its_earlier_names(tmp_path: Path) -> None:
    assert spend_v.fingerprint_hex == spend.fingerprint_hex
    root = str(tmp_path / "log")
    plan_file = tmp_path / "plan.json"
    apply_plan(repo_of(spend), plan_file, check_transforms=False)
    before = [(BASE + i * 500, i) for i in range(5)]  # the last two on the next date
    log_events(root, spend, before)
    before_rename = counts(repo_of(spend), root, [BASE + 2600, BASE + 5000])
    assert before_rename == [5, 5]

    # The rename: plan says the state is reused and nothing needs a backfill ...
    plan = compute_plan(repo_of(spend_v), load_applied_plan(plan_file))
    (new,) = [c for c in plan.changes if c.name == "spend_v"]
    assert new.action == "new" and "state is reused" in " ".join(new.details)
    assert plan.needs_backfill == ()
    apply_plan(repo_of(spend_v), plan_file, check_transforms=False)
    # ... and it holds for the log: the renamed view answers what the old name did.
    assert counts(repo_of(spend_v), root, [BASE + 2600, BASE + 5000]) == before_rename

    # The applier resumes the log where it ended, now under the new name.
    log_events(root, spend_v, [(BASE + 6000, 5), (BASE + 8000, 6)])
    assert counts(repo_of(spend_v), root, [BASE + 7000, BASE + 9000]) == [6, 7]
    assert read_log(root, "spend_v", spend_v.fingerprint_hex).height == 7
    assert first_event_time(root, "spend_v", spend_v.fingerprint_hex) == BASE

    # Serving's first logged time (its as_of range check and log coverage).
    view = SimpleNamespace(
        name="spend_v",
        definition=SimpleNamespace(offline=True, name="spend_v", fingerprint_hex=spend_v.fingerprint_hex),
    )
    reads = HistoricalReads(online=None, log_root=root, first_ttl_s=0.0)  # type: ignore[arg-type]
    assert reads.first_logged(view) == BASE  # type: ignore[arg-type]

    # Renaming back reads what was logged under either name.
    apply_plan(repo_of(spend), plan_file, check_transforms=False)
    log_events(root, spend, [(BASE + 10_000, 7)])
    assert counts(repo_of(spend), root, [BASE + 11_000]) == [8]
    _, files = list_log_files(root, "spend", spend.fingerprint_hex)
    assert {Path(f).parts[-4] for f in files} == {"view=spend", "view=spend_v"}
    # `streamfeat quality` reads the view's log by its fingerprint too.
    (quality,) = run_quality(root, ["spend"], fingerprints={"spend": spend.fingerprint_hex}).values()
    assert quality["count"].sum() == 8


def test_rows_published_under_both_names_count_once(tmp_path: Path) -> None:
    """A replay across the rename re-publishes positions under the new name: deduplicated."""
    root = str(tmp_path / "log")
    log_events(root, spend, [(BASE + i * 500, i) for i in range(4)])
    log_events(root, spend_v, [(BASE + 1000, 2), (BASE + 1500, 3), (BASE + 2000, 4)])
    assert counts(repo_of(spend_v), root, [BASE + 3000]) == [5]


def test_another_fingerprint_under_the_same_name_is_not_read(tmp_path: Path) -> None:
    root = str(tmp_path / "log")
    log_events(root, spend, [(BASE, 0), (BASE + 500, 1)])
    other = dataclasses.replace(spend, name="spend_v", aggregation_interval=timedelta(seconds=2))
    assert other.fingerprint_hex != spend.fingerprint_hex
    log_events(root, other, [(BASE + 1000, 2)])
    assert read_log(root, "spend_v", other.fingerprint_hex).height == 1
    assert read_log(root, "spend", spend.fingerprint_hex).height == 2
