"""Batch scoring against a real uvicorn server: features as of each row's time equal the
server's answers, the model's score is its formula over them, cold starts take the model's
defaults, a changed service is refused, and `streamfeat score-batch` writes the same."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from cli import main as cli_main
from engine.definitions import FeatureRepo
from serving.client import FeatureClient
from serving.exceptions import ModelFileError, ModelServiceMismatch, ScoringInputError, ScoringTimeColumnError
from serving.model_file import LogisticModel, TrainedOn, fit_logistic, load_model, save_model
from serving.scoring import score_batch
from tests.serving.asgi_support import ASGIClient
from tests.serving.serving_support import T_END, uvicorn_server

FEATURES = ("amount_sum_15m", "amount_count_15m", "spend_velocity_ratio", "ms_since_last_purchase")


@pytest.fixture(scope="module")
def server_url(client: ASGIClient) -> Iterator[str]:
    with uvicorn_server(client.app) as url:
        yield url


def _model(repo: FeatureRepo, fingerprint: str | None = None) -> LogisticModel:
    service = repo.service("fraud_scoring")
    return LogisticModel(
        trained_on=TrainedOn("fraud_scoring", fingerprint or service.fingerprint_hex),
        features=FEATURES,
        coefficients=(0.5, -0.25, 0.75, 0.1),
        intercept=-0.3,
        means=(100.0, 2.0, 1.0, 1.0),
        scales=(50.0, 1.0, 2.0, 60_000.0),
        defaults=dict.fromkeys(FEATURES, 0.0),
    )


def _entities() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user_id": ["u0", "u1", "never_seen"],
            "merchant_id": ["m0", "m1", "m_none"],
            "amount": [20.0, 300.0, 5.0],
            "ts": [T_END, T_END - 60_000, T_END],
        }
    )


def test_score_batch_features_as_of_each_row_and_the_model_formula(repo: FeatureRepo, server_url: str) -> None:
    model = _model(repo)
    entities = _entities()
    with FeatureClient(server_url) as fc:
        scored = score_batch(model, entities, fc, time_column="ts")
        served = [
            fc.get_feature_vector("fraud_scoring", {"user_id": u, "merchant_id": m}, {"amount": a}, as_of=t)
            for u, m, a, t in entities.select("user_id", "merchant_id", "amount", "ts").iter_rows()
        ]
    assert scored.columns == [
        "user_id",
        "merchant_id",
        "as_of",
        *FEATURES,
        "score",
        "prediction",
        "cold_start_features",
    ]
    assert scored["user_id"].to_list() == entities["user_id"].to_list()
    assert [int(t.timestamp() * 1000) for t in scored["as_of"].to_list()] == entities["ts"].to_list()
    for out, want in zip(scored.iter_rows(named=True), served, strict=True):
        values = [0.0 if want[f] is None else float(want[f]) for f in FEATURES]
        assert [out[f] for f in FEATURES] == pytest.approx(values)
        assert out["cold_start_features"] == sum(want[f] is None for f in FEATURES)
        z = model.intercept + sum(
            c * (v - m) / s for c, v, m, s in zip(model.coefficients, values, model.means, model.scales, strict=True)
        )
        assert out["score"] == pytest.approx(1 / (1 + math.exp(-z)))
        assert out["prediction"] == int(out["score"] >= 0.5)
    assert scored.row(0, named=True)["amount_count_15m"] >= 1  # a known user has real values
    assert scored.row(2, named=True)["cold_start_features"] >= 1  # the unknown one starts cold


def test_a_changed_service_is_refused(repo: FeatureRepo, server_url: str) -> None:
    with FeatureClient(server_url) as fc, pytest.raises(ModelServiceMismatch, match="fingerprint 00000000"):
        score_batch(_model(repo, "0000000000000000"), _entities(), fc, time_column="ts")
    with FeatureClient(server_url) as fc, pytest.raises(ValueError, match=r"expected columns \['merchant_id'\]"):
        score_batch(_model(repo), _entities().drop("merchant_id"), fc)


def test_naive_datetimes_in_the_time_column_are_refused_and_aware_ones_equal_epoch_ms(
    repo: FeatureRepo, server_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = _model(repo)
    by_ms = _entities()
    aware = by_ms.with_columns(pl.col("ts").cast(pl.Datetime("ms", time_zone="UTC")))
    naive = by_ms.with_columns(pl.col("ts").cast(pl.Datetime("ms")))
    with FeatureClient(server_url) as fc:
        assert score_batch(model, aware, fc, time_column="ts").equals(score_batch(model, by_ms, fc, time_column="ts"))
        with pytest.raises(ScoringTimeColumnError, match=r"time column 'ts'.*naive Datetime") as refused:
            score_batch(model, naive, fc, time_column="ts")
        with pytest.raises(ScoringTimeColumnError, match=r"time column 'ts'.*got String"):
            score_batch(model, by_ms.with_columns(pl.col("ts").cast(pl.String)), fc, time_column="ts")
    assert refused.value.hint is not None and "replace_time_zone('UTC')" in refused.value.hint
    # The command line answers the same refusal as a usage error, with the fix, and writes nothing.
    save_model(model, tmp_path / "model.json")
    naive.write_parquet(tmp_path / "naive.parquet")
    out = tmp_path / "scores.parquet"
    args = ["score-batch", "--model", str(tmp_path / "model.json"), "--entities", str(tmp_path / "naive.parquet")]
    code = cli_main([*args, "--out", str(out), "--time-column", "ts", "--url", server_url])
    err = capsys.readouterr().err
    assert code == 2 and "time column 'ts'" in err and "naive" in err and "hint: attach the zone" in err
    assert not out.exists()


def test_score_batch_cli_writes_the_same_scores(
    repo: FeatureRepo, server_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = _model(repo)
    save_model(model, tmp_path / "model.json")
    assert load_model(tmp_path / "model.json") == model
    _entities().write_parquet(tmp_path / "entities.parquet")
    code = cli_main(
        [
            "score-batch",
            "--model",
            str(tmp_path / "model.json"),
            "--entities",
            str(tmp_path / "entities.parquet"),
            "--out",
            str(tmp_path / "scores.parquet"),
            "--time-column",
            "ts",
            "--url",
            server_url,
        ]
    )
    assert code == 0 and "scored 3 rows" in capsys.readouterr().out
    with FeatureClient(server_url) as fc:
        want = score_batch(model, _entities(), fc, time_column="ts")
    assert pl.read_parquet(tmp_path / "scores.parquet").equals(want)


def _with_value(frame: pl.DataFrame, column: str, row: int, value: object) -> pl.DataFrame:
    values = frame[column].to_list()
    values[row] = value
    return frame.with_columns(pl.Series(column, values, dtype=frame[column].dtype))


@pytest.mark.parametrize(
    ("column", "row", "value", "says"),
    [
        ("amount", 83, float("nan"), "row 83 (value nan): field 'request_data.amount[3]': expected float, got null"),
        ("amount", 41, float("inf"), "row 41 (value inf): field 'request_data.amount[1]'"),
        ("user_id", 45, None, "row 45 (value None): field 'entities.user_id[5]': expected string, got null"),
        ("ts", 1, T_END // 1000, f"row 1 (value {T_END // 1000}): field 'as_of[1]': {T_END // 1000} looks like epoch"),
    ],
)
def test_a_refused_row_is_named_by_its_row_in_the_entities_and_the_value_it_holds(
    repo: FeatureRepo, server_url: str, column: str, row: int, value: object, says: str
) -> None:
    # 90 rows in chunks of 40: the server counts rows from the chunk's first row (80 for row 83).
    entities = _with_value(pl.concat([_entities()] * 30), column, row, value)
    with FeatureClient(server_url) as fc, pytest.raises(ScoringInputError) as refused:
        score_batch(_model(repo), entities, fc, time_column="ts", chunk_rows=40)
    assert f"score_batch: entities column {column!r}, {says}" in str(refused.value), refused.value
    assert refused.value.hint is not None
    if column == "ts":
        assert refused.value.hint == f"multiply by 1000: send {T_END // 1000 * 1000}"
    else:
        assert (
            "fix or drop that row" in refused.value.hint and f"pl.col({column!r}).cast(pl.String)" in refused.value.hint
        )


def test_a_null_time_and_a_bad_chunk_size_are_refused_before_any_request(repo: FeatureRepo, server_url: str) -> None:
    with FeatureClient(server_url) as fc:
        with pytest.raises(ScoringTimeColumnError, match=r"time column 'ts': row 2 has no time \(null\), 1 rows") as e:
            score_batch(_model(repo), _with_value(_entities(), "ts", 2, None), fc, time_column="ts")
        assert e.value.hint is not None and "drop_nulls('ts')" in e.value.hint
        for bad in (0, -1, True):
            with pytest.raises(ScoringInputError, match=f"chunk_rows: expected a positive integer .*got {bad}"):
                score_batch(_model(repo), _entities(), fc, chunk_rows=bad)


def test_the_cli_names_the_row_of_the_file_and_a_chunk_over_the_server_limit(
    repo: FeatureRepo, server_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    save_model(_model(repo), tmp_path / "model.json")
    # A CSV reader takes ids like 00123 for numbers: the server refuses an integer user_id.
    (tmp_path / "ids.csv").write_text(f"user_id,merchant_id,amount,ts\n00123,m1,1.0,{T_END}\n00124,m1,1.0,{T_END}\n")
    _entities().write_parquet(tmp_path / "entities.parquet")
    out = tmp_path / "scores.parquet"
    common = ["score-batch", "--model", str(tmp_path / "model.json"), "--out", str(out), "--url", server_url]
    assert cli_main([*common, "--entities", str(tmp_path / "ids.csv")]) == 2
    err = capsys.readouterr().err
    assert "error: score_batch: entities column 'user_id', row 0 (value 123): field 'entities.user_id[0]'" in err
    assert "expected string, got integer 123" in err and "pl.col('user_id').cast(pl.String)" in err
    many = tmp_path / "many.parquet"
    pl.concat([_entities()] * 20).write_parquet(many)  # 60 rows; the server takes 50 per request
    assert cli_main([*common, "--entities", str(many), "--chunk-rows", "60"]) == 2
    err = capsys.readouterr().err
    assert "a chunk of 60 rows is more than the server takes in one request" in err
    assert (
        "at most 50 per request" in err
        and "hint: pass a smaller chunk_rows (streamfeat score-batch --chunk-rows N)" in err
    )
    assert not out.exists()
    assert cli_main([*common, "--entities", str(many), "--chunk-rows", "50"]) == 0
    assert "scored 60 rows" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--out", "scores.txt"], "--out: expected a file name ending in .parquet (or .pq) or .csv, got 'scores.txt'"),
        (["--out", "/proc/nope/scores.csv"], "--out: cannot create the directory /proc/nope"),
        (["--out", "scores.csv", "--url", "ftp://x"], "--url: expected an http:// or https:// URL, got 'ftp://x'"),
        (["--out", "scores.csv", "--timeout", "-1"], "argument --timeout: expected a number > 0, got '-1'"),
    ],
)
def test_bad_output_url_and_timeout_are_refused_before_any_request(
    flags: list[str], says: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    # No model file and no server: each refusal comes first, from the flags alone.
    try:
        code = cli_main(["score-batch", "--model", "absent.json", "--entities", "absent.parquet", *flags])
    except SystemExit as refused_by_argparse:
        code = int(str(refused_by_argparse.code))
    assert code == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err, err
    assert not list(tmp_path.iterdir())


def test_model_files_are_json_only(tmp_path: Path) -> None:
    (tmp_path / "pickled.bin").write_bytes(b"\x80\x04\x95 not json")
    with pytest.raises(ModelFileError, match="not JSON"):
        load_model(tmp_path / "pickled.bin")
    (tmp_path / "other.json").write_text('{"format": "sklearn"}')
    with pytest.raises(ModelFileError, match="field 'format'"):
        load_model(tmp_path / "other.json")
    (tmp_path / "short.json").write_text('{"format": "streamfeat.logistic/1", "features": ["a"]}')
    with pytest.raises(ModelFileError, match="missing field 'trained_on'"):
        load_model(tmp_path / "short.json")


def test_fit_logistic_learns_a_separable_rule() -> None:
    rows = [[float(i % 10), float(i % 7)] for i in range(200)]
    labels = [int(r[0] > 4.5) for r in rows]
    model = fit_logistic(rows, labels, ["a", "b"], TrainedOn("s", "f"), {"a": 0.0, "b": 0.0}, epochs=800)
    accuracy = sum(p == y for p, y in zip(model.predict(rows), labels, strict=True)) / len(rows)
    assert accuracy >= 0.95 and model.coefficients[0] > abs(model.coefficients[1])
