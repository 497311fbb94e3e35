"""Batch scoring: ``score_batch(model, entities, client)`` looks up the features a model
was trained on, for entity keys only, and runs the model.

Lookups go through the feature server (``POST /v1/features/{service}`` with one
``as_of`` per row): rows with a time column are answered as of that time, exactly, from
the online tiles or the Parquet log (docs/serving.md, historical reads), and times the
log does not cover are refused with the covered range; rows without one are answered
as of one "now" taken at the start of the batch. The same code path as online
inference, so a batch score equals the score a live request at that time would get.

The model names its feature service (``trained_on``: name and fingerprint): the caller
gives entity keys (and request data the service needs), never a feature list. A server
whose service has another fingerprint (features, windows or transforms changed since
training) is refused with ModelServiceMismatch.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from engine.clock import wall_clock_ms
from serving.client import FeatureClient
from serving.exceptions import (
    InvalidRequest,
    ModelServiceMismatch,
    PayloadTooLarge,
    ScoringInputError,
    ScoringTimeColumnError,
)
from serving.model_file import TrainedOn

DEFAULT_CHUNK_ROWS = 500  # under the server's default max_entities_per_request (1000)


def _trained_on(model: object) -> TrainedOn:
    trained = getattr(model, "trained_on", None)
    if not isinstance(trained, TrainedOn):
        raise TypeError(
            f"score_batch: model: expected an attribute trained_on=TrainedOn(service, fingerprint), "
            f"got {trained!r}; set it when training (serving.model_file.TrainedOn)"
        )
    features = getattr(model, "features", None)
    if not isinstance(features, Sequence) or isinstance(features, str) or not features:
        raise TypeError(
            f"score_batch: model: expected an attribute features=[names in the model's input order], got {features!r}"
        )
    if not (hasattr(model, "predict_proba") or hasattr(model, "predict")):
        raise TypeError(f"score_batch: model: expected a predict or predict_proba method, got {type(model).__name__}")
    return trained


# Any: the service description as FeatureClient.describe_service returns it; read by key and iterated below
def check_service(model: object, described: dict[str, Any]) -> None:
    """Raises ModelServiceMismatch unless ``described`` (GET /v1/services/{name}) is the
    service the model was trained on, with the same fingerprint and every model feature."""
    trained = _trained_on(model)
    served = described.get("fingerprint")
    if served != trained.fingerprint:
        raise ModelServiceMismatch(
            f"model trained on feature service {trained.service!r} with fingerprint {trained.fingerprint}, "
            f"the server's {trained.service!r} has fingerprint {served}",
            hint="the service's features, windows or transforms changed since training: retrain on a "
            "training set of the current service, or pin the version the model was trained on",
        )
    outputs = {o["name"] for o in described["outputs"]}
    missing = [f for f in model.features if f not in outputs]  # type: ignore[attr-defined]
    if missing:
        raise ModelServiceMismatch(
            f"model features {missing} are not outputs of service {trained.service!r}",
            hint="the model's feature list must name outputs of its service",
        )


def _epoch_ms(column: pl.Series) -> list[int]:
    if isinstance(column.dtype, pl.Datetime):
        if column.dtype.time_zone is None:
            raise ScoringTimeColumnError(
                f"score_batch: time column {column.name!r}: expected epoch milliseconds (int) or "
                f"time-zone-aware datetimes, got naive {column.dtype}; a time zone is never guessed",
                hint=f"attach the zone, e.g. pl.col({column.name!r}).dt.replace_time_zone('UTC'), "
                "or write the times with an offset (2026-01-01T00:00:00Z)",
            )
        column = column.dt.epoch("ms")
    elif not column.dtype.is_integer():
        raise ScoringTimeColumnError(
            f"score_batch: time column {column.name!r}: expected epoch milliseconds (int) or "
            f"time-zone-aware datetimes, got {column.dtype}",
            hint="cast it first, e.g. to Int64 epoch milliseconds",
        )
    if column.null_count():
        row = column.is_null().arg_true()[0]
        raise ScoringTimeColumnError(
            f"score_batch: time column {column.name!r}: row {row} has no time (null), "
            f"{column.null_count()} rows in all",
            hint=f"fill or drop those rows, e.g. entities.drop_nulls({column.name!r}); "
            "or leave out the time column to score every row as of now",
        )
    return [int(v) for v in column.to_list()]


_ROW_FIELD = re.compile(r"(?:entities|request_data)\.(?P<column>.+)\[(?P<row>\d+)\]|as_of\[(?P<time_row>\d+)\]")


def _refused_rows(
    exc: InvalidRequest | PayloadTooLarge, chunk: pl.DataFrame, start: int, time_column: str | None
) -> ScoringInputError:
    """The server's refusal of a chunk, said in the caller's terms: the entities frame's
    column and row (the server's ``[i]`` counts from the chunk's first row) and the value
    the frame holds there (a NaN or infinity reaches the server as null)."""
    if isinstance(exc, PayloadTooLarge):
        return ScoringInputError(
            f"score_batch: a chunk of {chunk.height} rows is more than the server takes in one request: {exc}",
            hint="pass a smaller chunk_rows (streamfeat score-batch --chunk-rows N) at most the server's "
            "max_entities_per_request",
        )
    match = _ROW_FIELD.fullmatch(exc.field or "")
    if match is None:
        return ScoringInputError(f"score_batch: the server refused the entities: {exc}", hint=exc.hint)
    if match["time_row"] is not None:
        row = int(match["time_row"])
        column = time_column or "as_of"
        hint = exc.hint
    else:
        row = int(match["row"])
        column = match["column"]
        hint = (
            f"{exc.hint}; fix or drop that row: every value of {column!r} has the service's declared type "
            f"(no null, NaN or infinity; ids a CSV read as numbers need a cast, e.g. pl.col({column!r}).cast(pl.String))"
        )
    value = chunk[column][row] if column in chunk.columns else None
    return ScoringInputError(
        f"score_batch: entities column {column!r}, row {start + row} (value {value!r}): {exc}", hint=hint
    )


def _scores(model: Any, matrix: list[list[float]]) -> dict[str, list[object]]:  # model: see score_batch
    out: dict[str, list[object]] = {}
    if hasattr(model, "predict_proba"):
        proba = np.asarray(model.predict_proba(matrix), dtype=np.float64)
        out["score"] = (proba[:, -1] if proba.ndim == 2 else proba).tolist()  # 2-D: scikit-learn's [p0, p1]
    if hasattr(model, "predict"):
        out["prediction"] = np.asarray(model.predict(matrix)).tolist()
    return out


def score_batch(
    model: Any,  # the user's model, duck typed: predict_proba and/or predict
    entities: pl.DataFrame,
    client: FeatureClient,
    *,
    time_column: str | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> pl.DataFrame:
    """Entity keys (and time) -> keys, time, the model's features in its order, ``score``
    (with ``predict_proba``) and/or ``prediction`` (with ``predict``), and
    ``cold_start_features``: how many of the row's features were missing and took the
    model's ``defaults`` (a model without defaults refuses missing values)."""
    trained = _trained_on(model)
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise ScoringInputError(
            f"score_batch: chunk_rows: expected a positive integer (rows per request), got {chunk_rows!r}",
            hint=f"leave it out ({DEFAULT_CHUNK_ROWS}), or at most the server's max_entities_per_request",
        )
    described = client.describe_service(trained.service)
    check_service(model, described)
    keys = [e["name"] for e in described["inputs"]["entities"]]
    needed = [*keys, *(r["name"] for r in described["inputs"]["request_data"])]
    absent = [c for c in [*needed, *([time_column] if time_column else [])] if c not in entities.columns]
    if absent:
        raise ScoringInputError(
            f"score_batch: entities: expected columns {absent} (service {trained.service!r} "
            f"needs {needed}), got {entities.columns}",
            hint="add the missing columns to the entities file, one value per row",
        )
    times = _epoch_ms(entities[time_column]) if time_column else [wall_clock_ms()] * entities.height
    features: list[str] = list(model.features)
    defaults: dict[str, float] = dict(getattr(model, "defaults", {}) or {})
    # Any: the answer's feature rows (JSON values by feature kind) as the client returns them; float() reads them
    rows: list[dict[str, Any]] = []
    for start in range(0, entities.height, chunk_rows):
        chunk = entities.slice(start, chunk_rows)
        try:
            answer = client.get_feature_vectors(
                trained.service,
                {k: chunk[k].to_list() for k in keys},
                {c: chunk[c].to_list() for c in needed[len(keys) :]} or None,
                as_of=times[start : start + chunk_rows],
            )
        except (InvalidRequest, PayloadTooLarge) as exc:
            raise _refused_rows(exc, chunk, start, time_column) from exc
        rows.extend(answer["features"])
    matrix: list[list[float]] = []
    cold: list[int] = []
    for index, row in enumerate(rows):
        values, missing = [], 0
        for name in features:
            value = row.get(name)
            if value is None:
                if name not in defaults:
                    raise ScoringInputError(
                        f"score_batch: row {index}: feature {name!r} has no value and the model "
                        "declares no default for it",
                        hint="give the model defaults={...} (the cold-start value of each feature)",
                    )
                value, missing = defaults[name], missing + 1
            values.append(float(value))
        matrix.append(values)
        cold.append(missing)
    # Any: polars frame columns of every kind; list[object] would refuse the list[int] columns (lists are invariant)
    columns: dict[str, list[Any]] = {k: [r[k] for r in rows] for k in keys}
    columns["as_of"] = times
    columns.update({name: [m[i] for m in matrix] for i, name in enumerate(features)})
    columns.update(_scores(model, matrix) if matrix else {"score": [], "prediction": []})
    columns["cold_start_features"] = cold
    frame = pl.DataFrame(columns)
    return frame.with_columns(pl.col("as_of").cast(pl.Datetime("ms", time_zone="UTC")))
