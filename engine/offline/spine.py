"""The spine of a training set: its checks and its timestamps as epoch milliseconds.

A spine row is ``(entity keys..., t, request fields...)``; a bad spine is refused with
the rows and columns at fault, never silently dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import polars as pl

from engine.definitions.base import closest
from engine.exceptions import NaiveTimeError, NotIsoTimeError
from engine.offline.event_windows import I64
from engine.offline.exceptions import SpineValidationError
from engine.timefmt import iso_epoch_ms
from engine.wording import counted, quoted

_SHOWN_ROWS = 20


def _rows_text(rows: Sequence[int]) -> str:
    shown = ", ".join(str(r) for r in rows[:_SHOWN_ROWS])
    more = f" and {len(rows) - _SHOWN_ROWS} more" if len(rows) > _SHOWN_ROWS else ""
    return f"{shown}{more}"


def spine_times_ms(spine: pl.DataFrame, column: str) -> I64:
    """The spine's timestamps as int64 epoch milliseconds (UTC)."""
    dtype = spine.schema[column]
    s = spine.get_column(column)
    if dtype.is_integer():
        return s.cast(pl.Int64).to_numpy()
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is None:
            raise SpineValidationError(
                f"Spine column '{column}': expected int64 epoch milliseconds or a "
                f"time-zone-aware Datetime, got naive {dtype}.",
                columns=[column],
                hint="Attach the zone, e.g. pl.col(c).dt.replace_time_zone('UTC'); a time zone is never guessed.",
            )
        return s.dt.epoch("ms").cast(pl.Int64).to_numpy()
    if dtype == pl.String:
        return _iso_times_ms(s, column)
    raise SpineValidationError(
        f"Spine column '{column}': expected int64 epoch milliseconds or a time-zone-aware Datetime, got {dtype}.",
        columns=[column],
        hint="Convert the column to epoch milliseconds (Int64).",
    )


def _iso_times_ms(s: pl.Series, column: str) -> I64:
    """A text column of ISO 8601 times with offsets (a CSV spine where a reader left them
    text, e.g. because one row lacks its offset), read with the contract's one parser;
    the rows that do not read are named with why."""
    times: list[int] = []
    bad: list[int] = []
    first_reason = ""
    for row, text in enumerate(s.to_list()):
        try:
            times.append(iso_epoch_ms(text))
        except (NotIsoTimeError, NaiveTimeError) as exc:
            times.append(0)
            bad.append(row)
            first_reason = first_reason or str(exc)
    if bad and len(bad) == len(times):  # no row is a time: likely another column is meant
        raise SpineValidationError(
            f"Spine column '{column}': expected ISO 8601 times with a UTC offset, int64 epoch milliseconds or "
            f"a time-zone-aware Datetime; no row reads as a time (row 0: {first_reason}).",
            columns=[column],
            hint="Name the spine's time column with --timestamp-column, or write its times with their offsets.",
        )
    if bad:
        one = len(bad) == 1
        raise SpineValidationError(
            f"Spine column '{column}': {counted(len(bad), 'row')} {'is' if one else 'are'} not an ISO 8601 time "
            f"with a UTC offset: {'row' if one else 'rows'} {_rows_text(bad)} (0-based); the first: {first_reason}.",
            rows=bad,
            columns=[column],
            hint="write each time with its offset (2026-01-01T12:00:00Z or +HH:MM), or as epoch milliseconds; "
            "a time zone is never guessed",
        )
    return np.asarray(times, dtype=np.int64)


def validate_spine(
    spine: object,
    join_keys: Sequence[str],
    timestamp_column: str,
    request_fields: Sequence[str],
    join_key_kinds: Mapping[str, str] | None = None,
    request_field_kinds: Mapping[str, str] | None = None,
) -> None:
    """Refuse a spine that is not a DataFrame, lacks a column, has a null key or time, has
    a join-key column whose type differs from the key's kind in its source schema
    (``join_key_kinds``: ``"string"``/``"int"``), as serving refuses such values, or a
    request-data column that cannot hold its RequestSource type (``request_field_kinds``)."""
    if not isinstance(spine, pl.DataFrame):
        raise SpineValidationError(
            f"Spine: expected a polars.DataFrame, got {type(spine).__name__}.",
            hint="Build it with pl.DataFrame(...) or pl.from_pandas(...).",
        )
    required = [*join_keys, timestamp_column]
    missing = [c for c in required if c not in spine.columns]
    missing_req = [c for c in request_fields if c not in spine.columns and c not in required]
    if missing or missing_req:
        parts = []
        missing_keys = [c for c in missing if c != timestamp_column]
        if missing_keys:
            parts.append(f"{quoted(missing_keys)} (join {'keys' if len(missing_keys) > 1 else 'key'})")
        if timestamp_column in missing:
            parts.append(f"{timestamp_column!r} (each row's as-of time)")
        if missing_req:
            parts.append(f"{quoted(missing_req)} (request data)")
        spare = [c for c in spine.columns if c not in required and c not in request_fields]
        renames = [(close, c) for c in (*missing, *missing_req) if (close := closest(c, spare)) is not None]
        fix = "; ".join(f"rename {old!r} to {new!r}: pl.col({old!r}).alias({new!r})" for old, new in renames)
        raise SpineValidationError(
            f"Spine: expected columns {', '.join(parts)}, missing; it has {quoted(spine.columns, 'no columns')}.",
            columns=[*missing, *missing_req],
            hint=f"{fix}; or add the columns {_NAMED_LIKE}" if fix else f"Add the columns {_NAMED_LIKE}",
        )
    null_cols = [c for c in required if spine.get_column(c).null_count() > 0]
    if null_cols:
        bad = spine.select(pl.any_horizontal([pl.col(c).is_null() for c in null_cols])).to_series().arg_true().to_list()
        raise SpineValidationError(
            f"Spine has {counted(len(bad), 'row')} with a null in {null_cols}: rows {_rows_text(bad)} (0-based).",
            rows=bad,
            columns=null_cols,
            hint="Fill or remove those rows; training sets never drop rows silently.",
        )
    for column, kind in (join_key_kinds or {}).items():
        _check_key_type(spine, column, kind)
    for column, kind in (request_field_kinds or {}).items():
        if column in spine.columns:
            _check_request_type(spine, column, kind)


# What a request-data column may be for each RequestSource type: numbers for a float (an
# integer column is a float column whose values happen to be whole), exact types otherwise;
# and the type its values are read as, to find the ones that are not.
_REQUEST_DTYPES: Mapping[str, tuple[str, Callable[[pl.DataType], bool], pl.DataType]] = {
    "float": ("numbers", lambda d: d.is_numeric(), pl.Float64()),
    "int": ("integers", lambda d: d.is_integer(), pl.Int64()),
    "bool": ("booleans", lambda d: d == pl.Boolean, pl.Boolean()),
    "string": ("strings", lambda d: d == pl.String or d == pl.Categorical or isinstance(d, pl.Enum), pl.String()),
}


def _check_request_type(spine: pl.DataFrame, column: str, kind: str) -> None:
    """A request-data column the on-demand transforms cannot read as declared is refused here,
    naming the column and its bad values (a CSV column with one non-number is read as text),
    not later as a failure of the transform."""
    expected = _REQUEST_DTYPES.get(kind)
    dtype = spine.schema[column]
    if expected is None or dtype == pl.Null or expected[1](dtype):
        return
    what, _, read_as = expected
    values = spine.get_column(column)
    unreadable = (values.is_not_null() & values.cast(read_as, strict=False).is_null()).arg_true().to_list()
    bad = unreadable or values.is_not_null().arg_true().to_list()[:1]
    example = f"; row {bad[0]} holds {values[bad[0]]!r}" if bad else ""
    raise SpineValidationError(
        f"Spine column '{column}': expected {what} (the request field's type {kind} in its "
        f"RequestSource), got {dtype}{example}"
        + (f" ({counted(len(unreadable), 'row')} like this)." if unreadable else "."),
        columns=[column],
        rows=bad,
        hint="a CSV column is read as text when one of its values is not a number: fix or remove those "
        f"rows, or cast the column, e.g. pl.col('{column}').cast(pl.{read_as})",
    )


def _check_key_type(spine: pl.DataFrame, column: str, kind: str) -> None:
    """A string id is matched by its text: integers (a CSV spine's numeric-looking ids) by their
    decimal text, never floats or bools (1.0 and true would be matched as "1.0" and "true");
    an int id is never matched with text."""
    dtype = spine.schema[column]
    if kind == "string":
        ok = dtype == pl.String or dtype == pl.Categorical or isinstance(dtype, pl.Enum) or dtype.is_integer()
    elif kind == "int":
        ok = dtype.is_integer()
    else:
        return
    if not ok:
        raise SpineValidationError(
            f"Spine column '{column}': expected {'strings (or integers)' if kind == 'string' else 'integers'} "
            f"(the join key's type in the source schema), got {dtype}.",
            columns=[column],
            hint=f"Cast the column, e.g. pl.col('{column}').cast(pl.{'String' if kind == 'string' else 'Int64'}); "
            "ids are compared as they are, never converted.",
        )


_NAMED_LIKE = "(request data columns are named like the RequestSource schema fields)."
