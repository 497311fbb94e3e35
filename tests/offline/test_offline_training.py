"""Training sets: point-in-time values against a brute force, ODFVs, spine errors."""

from __future__ import annotations

import logging
import math
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.definitions import (
    Aggregation,
    Entity,
    EventSource,
    FeatureRepo,
    FeatureService,
    OnDemandFeatureView,
    RequestSource,
    StreamFeatureView,
    col,
)
from engine.io.log_format import DAY_MS
from engine.io.parquet_log import ParquetLogWriter
from engine.kernel.layout import PARTIAL_FUNCTIONS, AggregationSpec
from engine.offline.event_windows import evaluate_windows
from engine.offline.exceptions import (
    OnDemandComputationError,
    SpineValidationError,
    TrainingSetError,
)
from engine.offline.training import get_training_set
from engine.timefmt import time_text
from tests.reference import reference_value

G = 1000  # the view's aggregation interval: 1 s
BASE = 19_800 * DAY_MS + DAY_MS - 5 * G  # 5 s before midnight: the log spans two dates

user = Entity("user", ["user_id"])
txns = EventSource("txns", topic="txns", timestamp_field="ts", schema={"user_id": str, "amount": float})
AGGS = [Aggregation("amount", f, timedelta(seconds=k)) for f in PARTIAL_FUNCTIONS for k in (1, 3)]
AGGS += [
    Aggregation("amount", "mean", timedelta(seconds=2), name="mean_or_minus_one", default=-1.0),
    Aggregation("amount", "count", timedelta(seconds=2), name="count_or_seven", default=7),
]
spend = StreamFeatureView(
    "user_spend",
    source=txns,
    entities=[user],
    aggregations=AGGS,
    aggregation_interval=timedelta(seconds=1),
)
request = RequestSource("txn_request", schema={"req_amount": float})


def spend_ratio(row: dict[str, Any]) -> dict[str, Any]:
    return {"spend_ratio": row["req_amount"] / (row["amount_sum_3s"] + 1.0)}


def weighted(df: pl.DataFrame) -> pl.DataFrame:
    return df.select((pl.col("req_amount") * pl.col("amount_count_3s")).alias("weighted"))


def broken(row: dict[str, Any]) -> dict[str, Any]:
    return {"nothing": 1}


ratio_view = OnDemandFeatureView(
    "ratio", sources=[spend, request], schema={"spend_ratio": float}, fn=f"{__name__}:spend_ratio"
)
weighted_view = OnDemandFeatureView(
    "weighted_view",
    sources=[spend, request],
    schema={"weighted": float},
    mode="batch",
    fn=f"{__name__}:weighted",
)
broken_view = OnDemandFeatureView(
    "broken_view", sources=[spend, request], schema={"out": float}, fn=f"{__name__}:broken"
)
# Same feature name in two views: big_spend's "amount_sum_3s" counts only amounts over 5.
big_spend = StreamFeatureView(
    "big_spend",
    source=txns,
    entities=[user],
    filter=col("amount") > 5.0,
    aggregations=[Aggregation("amount", "sum", timedelta(seconds=3))],
    aggregation_interval=timedelta(seconds=1),
)


def big_ratio(row: dict[str, Any]) -> dict[str, Any]:
    return {"big_ratio": row["req_amount"] / (row["amount_sum_3s"] + 1.0)}


big_ratio_view = OnDemandFeatureView(
    "big_ratio_view",
    sources=[big_spend[["amount_sum_3s"]], request],
    schema={"big_ratio": float},
    fn=f"{__name__}:big_ratio",
)
shadowed = FeatureService("shadowed", [spend[["amount_sum_3s"]], big_ratio_view])
all_features = FeatureService("all_features", [spend])
picked = FeatureService("picked", [spend[["amount_max_3s", "amount_count_1s"]], ratio_view, weighted_view])
broken_service = FeatureService("broken_service", [broken_view])
REPO = FeatureRepo.from_objects(
    [
        spend,
        ratio_view,
        weighted_view,
        broken_view,
        all_features,
        picked,
        broken_service,
        big_spend,
        big_ratio_view,
        shadowed,
    ]
)

Event = tuple[str, int, int, int, float]  # user, event time, partition, offset, amount


def write_log(root: str, events: list[Event], replay: bool = False, view: StreamFeatureView = spend) -> None:
    """Write events as the dataflow would, in two publishes (plus a replayed copy)."""
    half = len(events) // 2
    for writer_id, chunk in (("w0", events[:half]), ("w1", events[half:])):
        if replay:
            chunk = chunk + events[:half]  # a replay re-publishes positions already logged
        if not chunk:
            continue
        t = np.asarray([e[1] for e in chunk], dtype=np.int64)
        w = ParquetLogWriter(root, view.name, view.fingerprint_hex, view.join_keys, view.columns, writer_id)
        w.append(
            {
                "user_id": np.asarray([e[0] for e in chunk]),
                "event_time": t,
                "partition": np.asarray([e[2] for e in chunk], dtype=np.int32),
                "offset": np.asarray([e[3] for e in chunk], dtype=np.int64),
                "tile_start": (t // G) * G,
                "value__amount": np.asarray([e[4] for e in chunk]),
            }
        )
        w.publish()


def same(got: Any, want: Any) -> bool:
    if want is None or got is None:
        return got is None and want is None
    if isinstance(want, int) and isinstance(got, int):
        return got == want
    return math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[Event], list[tuple[str, int]]]:
    n = draw(st.integers(0, 40))
    next_offset = [0, 0]
    events: list[Event] = []
    for _ in range(n):
        p = draw(st.integers(0, 1))
        value = draw(st.one_of(st.sampled_from([0.1, 2.5, -3.0]), st.floats(-1e3, 1e3)))
        events.append(
            (
                draw(st.sampled_from("ab")),
                BASE + draw(st.integers(0, 12 * G)),
                p,
                next_offset[p],
                value,
            )
        )
        next_offset[p] += 1
    times = st.one_of(
        st.integers(-4, 15).map(lambda k: BASE + k * G),  # exactly on tile boundaries
        st.integers(BASE - 5 * G, BASE + 15 * G),
        st.integers(BASE - 10 * G, BASE - 1),  # before any event
    )
    if events:
        times = st.one_of(
            times,
            st.sampled_from(events).flatmap(lambda e: st.sampled_from([e[1] - 1, e[1], e[1] + 1])),
        )
    spine = draw(st.lists(st.tuples(st.sampled_from("abz"), times), min_size=1, max_size=25))
    return events, spine


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.booleans(), st.sampled_from([1, 4, 1_000_000]))
def test_matches_reference(
    scenario: tuple[list[Event], list[tuple[str, int]]], replay: bool, spine_chunk_rows: int
) -> None:
    """Every value equals the reference, whether the spine is evaluated at once or in
    event-time pieces of a few rows (put back in spine order)."""
    events, spine_rows = scenario
    with tempfile.TemporaryDirectory() as root:
        write_log(root, events, replay=replay)
        spine = pl.DataFrame(
            {
                "user_id": [u for u, _ in spine_rows],
                "event_timestamp": [t for _, t in spine_rows],
                "label": list(range(len(spine_rows))),
            },
            schema={"user_id": pl.Utf8, "event_timestamp": pl.Int64, "label": pl.Int64},
        )
        out = get_training_set(REPO, "all_features", spine, root, spine_chunk_rows=spine_chunk_rows)
    assert out.columns == ["user_id", "event_timestamp", "label", *spend.feature_names]
    assert out["label"].to_list() == list(range(len(spine_rows)))
    for agg in AGGS:
        got = out[agg.output_name].to_list()
        for (who, t), value in zip(spine_rows, got, strict=True):
            want = reference_value(events, who, t, agg.function, agg.window_ms, G, agg.default)
            assert same(value, want), (agg.output_name, who, t, value, want)
    assert out["amount_count_1s"].dtype == pl.Int64
    assert out["amount_time_since_last_1s"].dtype == pl.Int64
    assert out["amount_sum_1s"].dtype == pl.Float64


def test_identical_values_give_exactly_zero_stddev(tmp_path: Path) -> None:
    events = [("a", BASE + i, 0, i, 0.1) for i in range(7)]
    write_log(str(tmp_path), events)
    spine = pl.DataFrame({"user_id": ["a"], "event_timestamp": [BASE + 10]})
    out = get_training_set(REPO, "all_features", spine, str(tmp_path))
    assert out["amount_stddev_1s"].to_list() == [0.0]
    assert out["amount_stddev_3s"].to_list() == [0.0]


def test_empty_window_rules(tmp_path: Path) -> None:
    write_log(str(tmp_path), [("a", BASE, 0, 0, 5.0)])
    spine = pl.DataFrame({"user_id": ["a", "nobody"], "event_timestamp": [BASE - 1, BASE]})
    out = get_training_set(REPO, "all_features", spine, str(tmp_path))
    row = out.row(0, named=True)
    assert row["amount_count_3s"] == 0 and row["amount_sum_3s"] == 0.0
    for f in ("mean", "min", "max", "last", "stddev"):
        assert row[f"amount_{f}_3s"] is None
    assert row["mean_or_minus_one"] == -1.0 and row["count_or_seven"] == 7
    assert out.row(1, named=True)["count_or_seven"] == 7


def test_rows_before_the_log_are_noted_at_warning_through_logging(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The Python API says what the CLI says: spine rows before the view's first logged
    event get empty windows, and a WARNING of the module's logger says how many."""
    events = [("a", BASE + 500, 0, 0, 5.0), ("b", BASE + 2500, 1, 0, 1.0)]
    write_log(str(tmp_path), events)
    times = [BASE - 1, BASE + 500, BASE - 3000, BASE + 4000]
    spine = pl.DataFrame({"user_id": ["a", "a", "b", "b"], "event_timestamp": times})
    first = min(t for _, t, *_ in events)
    before = sum(t < first for t in times)
    with caplog.at_level(logging.WARNING, logger="engine.offline.training"):
        out = get_training_set(REPO, "all_features", spine, str(tmp_path))
    assert out.height == len(times)
    (record,) = [r for r in caplog.records if r.name == "engine.offline.training"]
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        f"note: {before} spine rows are before the first event in the Parquet log of {spend.name}, "
        f"{time_text(first)}: their windows of that view are empty (their empty-window values: 0, null, [] or the declared default), as if nothing happened before; "
        "if something did, backfill that history first (`streamfeat backfill`)"
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="engine.offline.training"):
        get_training_set(REPO, "all_features", spine.filter(pl.col("event_timestamp") >= first), str(tmp_path))
    assert caplog.records == []  # every row within the log: nothing to say


def test_on_note_receives_the_notes_instead_of_the_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spine = pl.DataFrame({"user_id": ["a"], "event_timestamp": [BASE]})
    notes: list[str] = []
    with caplog.at_level(logging.WARNING, logger="engine.offline.training"):
        out = get_training_set(
            REPO, "picked", spine.with_columns(req_amount=pl.lit(1.0)), str(tmp_path), on_note=notes.append
        )
    assert out["amount_count_1s"].to_list() == [0]
    assert notes == [
        f"note: the Parquet log of {spend.name} holds no events yet, so every row's windows of it are empty "
        "(their empty-window values: 0, null, [] or the declared default); apply events first (`streamfeat run` or `streamfeat backfill`)"
    ]
    assert caplog.records == []
    with pytest.raises(TrainingSetError, match=r"on_note: expected a callable taking one str, got list") as refused:
        get_training_set(REPO, "all_features", spine, str(tmp_path), on_note=notes)  # type: ignore[arg-type]
    assert refused.value.hint is not None and "on_note=print" in refused.value.hint


def test_selection_order_and_on_demand_views(tmp_path: Path) -> None:
    events = [("a", BASE + 100, 0, 0, 10.0), ("a", BASE + 1500, 1, 0, 4.0), ("b", BASE, 0, 1, 1.0)]
    write_log(str(tmp_path), events)
    spine = pl.DataFrame(
        {
            "event_timestamp": [BASE + 2000, BASE + 2000, BASE - 10],
            "user_id": ["a", "b", "a"],
            "req_amount": [28.0, 3.0, 5.0],
        }
    )
    out = get_training_set(REPO, "picked", spine, str(tmp_path))
    assert out.columns == [
        "event_timestamp",
        "user_id",
        "req_amount",
        "amount_max_3s",
        "amount_count_1s",
        "spend_ratio",
        "weighted",
    ]
    assert out["amount_max_3s"].to_list() == [10.0, 1.0, None]
    assert out["amount_count_1s"].to_list() == [1, 0, 0]
    # spend_ratio = req / (amount_sum_3s + 1); weighted = req * amount_count_3s
    assert out["spend_ratio"].to_list() == [28.0 / 15.0, 3.0 / 2.0, 5.0]
    assert out["weighted"].to_list() == [56.0, 3.0, 0.0]


def test_a_feature_name_in_two_views_is_read_from_its_declared_view(tmp_path: Path) -> None:
    events = [("a", BASE + 100, 0, 0, 10.0), ("a", BASE + 1500, 1, 0, 4.0), ("b", BASE, 0, 1, 1.0)]
    write_log(str(tmp_path), events)
    write_log(str(tmp_path), [e for e in events if e[4] > 5.0], view=big_spend)  # what its filter keeps
    spine = pl.DataFrame(
        {"event_timestamp": [BASE + 2000, BASE + 2000], "user_id": ["a", "b"], "req_amount": [28.0, 3.0]}
    )
    out = get_training_set(REPO, "shadowed", spine, str(tmp_path))
    assert out["amount_sum_3s"].to_list() == [14.0, 1.0]  # user_spend's, as the service declares
    assert out["big_ratio"].to_list() == [28.0 / 11.0, 3.0 / 1.0]  # from big_spend's 10.0 and 0.0


def test_on_demand_errors(tmp_path: Path) -> None:
    spine = pl.DataFrame({"user_id": ["a"], "event_timestamp": [BASE]})
    with pytest.raises(SpineValidationError, match="req_amount") as info:
        get_training_set(REPO, "picked", spine, str(tmp_path))
    assert info.value.columns == ("req_amount",)
    spine = spine.with_columns(req_amount=pl.lit(1.0))
    with pytest.raises(
        OnDemandComputationError, match=r"on spine row 0: output 'out': expected an output of that name"
    ):
        get_training_set(REPO, "broken_service", spine, str(tmp_path))


def test_spine_request_data_of_another_type_is_refused_naming_the_values(tmp_path: Path) -> None:
    """A CSV spine with one non-number in a float request field reads the column as text: the
    spine is refused naming the column and the rows, not the transform that received text."""
    write_log(str(tmp_path), [("a", BASE + 100, 0, 0, 10.0)])
    base = {"event_timestamp": [BASE + 2000] * 3, "user_id": ["a", "a", "b"]}
    text = pl.DataFrame({**base, "req_amount": ["28.0", "abc", "x"]})
    with pytest.raises(SpineValidationError, match=r"Spine column 'req_amount': expected numbers") as info:
        get_training_set(REPO, "picked", text, str(tmp_path))
    assert info.value.rows == (1, 2) and info.value.columns == ("req_amount",)
    assert "row 1 holds 'abc' (2 rows like this)" in str(info.value)
    flags = pl.DataFrame({**base, "req_amount": [True, False, True]})
    with pytest.raises(SpineValidationError, match=r"expected numbers .* got Boolean; row 0 holds True"):
        get_training_set(REPO, "picked", flags, str(tmp_path))
    # Whole numbers are numbers: an integer column feeds a float field as its values.
    whole = get_training_set(REPO, "picked", pl.DataFrame({**base, "req_amount": [28, 3, 5]}), str(tmp_path))
    floats = get_training_set(REPO, "picked", pl.DataFrame({**base, "req_amount": [28.0, 3.0, 5.0]}), str(tmp_path))
    assert whole["spend_ratio"].to_list() == floats["spend_ratio"].to_list()


def test_spine_rows_with_nulls_are_reported(tmp_path: Path) -> None:
    spine = pl.DataFrame({"user_id": ["a", None, "b", "c", "d"], "event_timestamp": [BASE, BASE, BASE, None, BASE]})
    with pytest.raises(SpineValidationError, match=r"rows 1, 3 \(0-based\)") as info:
        get_training_set(REPO, "all_features", spine, str(tmp_path))
    assert info.value.rows == (1, 3)
    assert set(info.value.columns) == {"user_id", "event_timestamp"}


def test_spine_missing_columns_are_named(tmp_path: Path) -> None:
    spine = pl.DataFrame({"ts": [BASE]})
    with pytest.raises(SpineValidationError) as info:
        get_training_set(REPO, "all_features", spine, str(tmp_path))
    assert str(info.value).startswith(
        "Spine: expected columns 'user_id' (join key), 'event_timestamp' (each row's as-of time), missing; it has 'ts'."
    )
    assert info.value.columns == ("user_id", "event_timestamp")
    with pytest.raises(SpineValidationError) as info:
        get_training_set(REPO, "all_features", spine.with_columns(user=pl.lit("a")), str(tmp_path), "ts")
    assert (
        info.value.hint is not None and "rename 'user' to 'user_id': pl.col('user').alias('user_id')" in info.value.hint
    )
    out = get_training_set(REPO, "all_features", spine.with_columns(user_id=pl.lit("a")), str(tmp_path), "ts")
    assert out["amount_count_1s"].to_list() == [0]


@pytest.mark.parametrize("ids", [[1.0], [True], [[1]]])
def test_spine_ids_of_another_type_than_the_join_key_are_refused(tmp_path: Path, ids: list[object]) -> None:
    # user_id is a string key: 1.0 and true would have been matched as "1.0" and "true"
    # (serving refuses them with 422); a user "1" exists here. Integers (a CSV spine's
    # numeric-looking ids) are read as their decimal text.
    write_log(str(tmp_path), [("1", BASE, 0, 0, 5.0)])
    spine = pl.DataFrame({"user_id": ids, "event_timestamp": [BASE]})
    with pytest.raises(SpineValidationError, match=r"Spine column 'user_id': expected strings") as info:
        get_training_set(REPO, "all_features", spine, str(tmp_path))
    assert info.value.columns == ("user_id",)
    text = pl.DataFrame({"user_id": ["1", "\x00", ""], "event_timestamp": [BASE] * 3})
    out = get_training_set(REPO, "all_features", text, str(tmp_path))
    assert out["amount_count_1s"].to_list() == [1, 0, 0]
    integers = pl.DataFrame({"user_id": [1, 10], "event_timestamp": [BASE] * 2})
    assert get_training_set(REPO, "all_features", integers, str(tmp_path))["amount_count_1s"].to_list() == [1, 0]
    categorical = text.with_columns(pl.col("user_id").cast(pl.Categorical))
    assert get_training_set(REPO, "all_features", categorical, str(tmp_path))["amount_count_1s"].to_list() == [1, 0, 0]


def test_spine_datetimes(tmp_path: Path) -> None:
    write_log(str(tmp_path), [("a", BASE, 0, 0, 5.0)])
    when = datetime.fromtimestamp(BASE / 1000, tz=UTC)
    aware = pl.DataFrame({"user_id": ["a"], "event_timestamp": [when]})
    out = get_training_set(REPO, "all_features", aware, str(tmp_path))
    assert out["amount_sum_1s"].to_list() == [5.0]
    assert out["event_timestamp"].to_list() == [when]  # spine columns come back unchanged
    naive = aware.with_columns(pl.col("event_timestamp").dt.replace_time_zone(None))
    with pytest.raises(SpineValidationError, match="naive"):
        get_training_set(REPO, "all_features", naive, str(tmp_path))
    floats = pl.DataFrame({"user_id": ["a"], "event_timestamp": [1.5]})
    with pytest.raises(SpineValidationError, match="Float64"):
        get_training_set(REPO, "all_features", floats, str(tmp_path))


def test_unknown_service_and_offline_false(tmp_path: Path) -> None:
    spine = pl.DataFrame({"user_id": ["a"], "event_timestamp": [BASE]})
    with pytest.raises(TrainingSetError, match="'nope' is not defined"):
        get_training_set(REPO, "nope", spine, str(tmp_path))
    online_only = StreamFeatureView(
        "online_only",
        source=txns,
        entities=[user],
        aggregations=AGGS[:1],
        aggregation_interval=timedelta(seconds=1),
        offline=False,
    )
    repo = FeatureRepo.from_objects([online_only, FeatureService("s", [online_only])])
    with pytest.raises(TrainingSetError, match="'offline'"):
        get_training_set(repo, "s", spine, str(tmp_path))


def test_wide_time_span_fallback_matches() -> None:
    # Entity codes x time span beyond int64 keys use the per-entity search path.
    rng = np.random.default_rng(7)
    codes = np.repeat(np.arange(4, dtype=np.int64), 50)
    times = np.sort(rng.integers(0, 2**61, size=(4, 50)), axis=1).ravel().astype(np.int64)
    times[0] = 0
    times[-1] = 2**61
    values = {"x": rng.normal(size=200)}
    q_codes = rng.integers(-1, 4, size=300).astype(np.int64)
    q_times = rng.integers(0, 2**61, size=300).astype(np.int64)
    aggs = [AggregationSpec("s", "x", "sum", 2**59), AggregationSpec("m", "x", "max", 2**59)]
    got = evaluate_windows(codes, times, values, q_codes, q_times, 2**20, aggs)
    for i in range(300):
        c, t = int(q_codes[i]), int(q_times[i])
        start = (t // 2**20) * 2**20 - 2**59
        sel = (codes == c) & (times >= start) & (times <= t)
        xs = values["x"][sel]
        assert math.isclose(got["s"][i], float(xs.sum()), rel_tol=1e-9, abs_tol=1e-9)
        assert got["m"][i] == (float(xs.max()) if len(xs) else None)


def test_window_sums_stay_exact_next_to_huge_prefixes() -> None:
    # Entity 0 pushes the running prefix to ~1e15; entity 1's small, cancelling values
    # must still sum to what fsum gives (a plain float64 prefix loses them entirely).
    rng = np.random.default_rng(3)
    big = rng.uniform(1e12, 2e12, 1000)
    small = rng.choice([0.1, -0.1, 0.003, -0.007, 1e-6], 1000)
    codes = np.repeat(np.arange(2, dtype=np.int64), 1000)
    times = np.tile(np.arange(1000, dtype=np.int64) * 10, 2)
    q_times = rng.integers(0, 10_000, 200).astype(np.int64)
    q_codes = np.ones(200, dtype=np.int64)
    got = evaluate_windows(
        codes,
        times,
        {"x": np.concatenate((big, small))},
        q_codes,
        q_times,
        100,
        [AggregationSpec("s", "x", "sum", 1000)],
    )["s"].to_list()
    for value, t in zip(got, q_times.tolist(), strict=True):
        start = (t // 100) * 100 - 1000
        want = math.fsum(small[(times[1000:] >= start) & (times[1000:] <= t)])
        assert math.isclose(value, want, rel_tol=1e-9, abs_tol=1e-9), (t, value, want)


def test_an_overflowing_entity_does_not_poison_the_others_and_reads_as_null() -> None:
    # Entity 0 holds two 1e308 values: its sums overflow. The running prefix over all
    # events used to turn every later entity's sum into inf - inf = NaN (and warn); now
    # entity 1 is exact and entity 0's results stay non-finite (serving answers them
    # null, INVALID; a training set holds null once its transforms have seen them as
    # invalid), while its count and max stay values.
    codes = np.array([0, 0, 1, 1], dtype=np.int64)
    times = np.array([10, 20, 10, 20], dtype=np.int64)
    values = {"x": np.array([1e308, 1e308, 2.0, 3.0])}
    aggs = [
        AggregationSpec("s", "x", "sum", 1000),
        AggregationSpec("m", "x", "mean", 1000),
        AggregationSpec("sd", "x", "stddev", 1000),
        AggregationSpec("c", "x", "count", 1000),
        AggregationSpec("mx", "x", "max", 1000),
    ]
    got = evaluate_windows(
        codes,
        times,
        values,
        np.array([0, 1, 0, -1], dtype=np.int64),
        np.array([50, 50, 15, 50], dtype=np.int64),
        100,
        aggs,
    )
    assert got["s"].to_list() == [math.inf, 5.0, 1e308, 0.0]  # empty: 0.0
    assert got["m"].to_list() == [math.inf, 2.5, 1e308, None]
    assert math.isnan(got["sd"].to_list()[0]) and got["sd"].to_list()[1] == 0.5
    assert got["c"].to_list() == [2, 2, 1, 0]
    assert got["mx"].to_list() == [1e308, 3.0, 1e308, None]


def test_window_values_with_no_answer_are_null_for_counts_and_non_finite_for_floats() -> None:
    from engine.offline.event_windows import _finish

    nonempty = np.array([True, True, False])
    # An exact count_distinct over its bound has no exact answer: null (OVER_BOUND), never
    # an int made of NaN; an empty window is its empty value.
    distinct = AggregationSpec("d", "x", "count_distinct", 1000, params=(("max_distinct", 2),))
    assert _finish(distinct, np.array([2.0, math.nan, math.nan]), nonempty).to_list() == [2, None, 0]
    # A float window's non-finite value is kept for the training set's transforms (and
    # made null after them); an empty window is null.
    mean = AggregationSpec("m", "x", "mean", 1000)
    got = _finish(mean, np.array([math.inf, math.nan, 0.0]), nonempty).to_list()
    assert got[0] == math.inf and math.isnan(got[1]) and got[2] is None
