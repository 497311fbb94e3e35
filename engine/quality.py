"""Data quality of a view's Parquet log (layer 3 of docs/operations.md).

For each view and each interval of event time (default one hour), every aggregated
column of the log gets: row count, null rate, mean, population standard deviation,
min, max and the 1st/50th/99th percentiles (linear interpolation, like numpy's
default). A string column (``merchant_id`` feeding ``count_distinct``) has no numeric
statistics: its log value is a placeholder, so they stay blank (null), and when the log
keeps its decoded strings (the ``raw__`` column of a sketch aggregation) it gets the rate
of empty strings as ``null_rate`` and its ``distinct`` count instead. A statistic is flagged when it lies more than ``DRIFT_SIGMAS`` standard
deviations from its baseline: the same statistic over the intervals of the preceding
``baseline`` (default 7 days), once at least ``MIN_BASELINE_POINTS`` intervals exist.

The table is written to ``<log_root>/_quality/view=<name>/quality.parquet`` (rewritten
whole by each pass; it is small: one row per interval and column). It is computed
by ``streamfeat quality`` over the deduplicated log (``read_log``), so every event is
counted once however often the log was published.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import polars as pl
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from engine.definitions.base import timedelta_ms
from engine.exceptions import StreamfeatError
from engine.io.log_format import EVENT_TIME, VALUE_PREFIX, raw_column, resolve_root
from engine.io.log_reader import read_log
from engine.kernel.window import tile_start_ms

QUALITY_DIR = "_quality"
QUALITY_FILE = "quality.parquet"
DRIFT_SIGMAS = 3.0
MIN_BASELINE_POINTS = 6  # fewer hourly points make 3-sigma alerts mostly noise
#: Values of the ``kind`` column: which statistics a column has.
NUMERIC = "numeric"
STRING = "string"
STATISTICS: tuple[str, ...] = ("null_rate", "distinct", "mean", "std", "min", "max", "p1", "p50", "p99")
_NUMERIC_STATISTICS: tuple[str, ...] = ("mean", "std", "min", "max", "p1", "p50", "p99")


class QualityError(StreamfeatError, ValueError):
    """Invalid quality settings (interval, baseline) or an unreadable quality table."""


@dataclass(frozen=True, kw_only=True)
class QualityConfig:
    """How a quality pass slices and judges the log."""

    interval: timedelta = timedelta(hours=1)
    baseline: timedelta = timedelta(days=7)
    sigmas: float = DRIFT_SIGMAS
    min_baseline_points: int = MIN_BASELINE_POINTS

    def __post_init__(self) -> None:
        if not isinstance(self.interval, timedelta) or self.interval < timedelta(seconds=1):
            raise QualityError(
                f"QualityConfig: field 'interval': expected a timedelta of at least 1 s, got {self.interval!r}",
                hint="use timedelta(hours=1) for hourly statistics",
            )
        if not isinstance(self.baseline, timedelta) or self.baseline < self.interval:
            raise QualityError(
                f"QualityConfig: field 'baseline': expected a timedelta >= interval "
                f"({self.interval}), got {self.baseline!r}",
                hint="the baseline spans several intervals, e.g. timedelta(days=7)",
            )
        if not self.sigmas > 0:
            raise QualityError(f"QualityConfig: field 'sigmas': expected > 0, got {self.sigmas}")
        if self.min_baseline_points < 2:
            raise QualityError(
                f"QualityConfig: field 'min_baseline_points': expected >= 2, got {self.min_baseline_points}",
                hint="a standard deviation needs at least two baseline intervals",
            )

    @property
    def interval_ms(self) -> int:
        return timedelta_ms(self.interval)

    @property
    def baseline_ms(self) -> int:
        return timedelta_ms(self.baseline)


QUALITY_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "interval_start": pl.Int64,
    "feature": pl.Utf8,
    "kind": pl.Utf8,  # NUMERIC or STRING: which statistics the column has
    "count": pl.Int64,
    **{s: pl.Float64 for s in STATISTICS},
    "alert": pl.Boolean,
    "drifted": pl.Utf8,  # comma-separated statistics that drifted ("" when none)
}


def interval_stats(log: pl.DataFrame, interval_ms: int, text_columns: Collection[str] = ()) -> pl.DataFrame:
    """One row per (interval, value column) with the statistics of the module docstring.

    ``text_columns`` names the aggregated columns of schema type string; a column whose
    decoded values the log keeps as strings is taken as one too."""
    columns = [c[len(VALUE_PREFIX) :] for c in log.columns if c.startswith(VALUE_PREFIX)]
    if log.is_empty() or not columns:
        return pl.DataFrame(schema={k: v for k, v in QUALITY_SCHEMA.items() if k not in ("alert", "drifted")})
    start = tile_start_ms(pl.col(EVENT_TIME), interval_ms)
    frames = []
    for column in columns:
        raw = raw_column(column)
        kept_strings = raw in log.columns and log.schema[raw] == pl.String
        is_text = column in text_columns or kept_strings
        if is_text:
            statistics = _string_statistics(pl.col(raw) if kept_strings else None)
        else:
            statistics = _numeric_statistics(pl.col(VALUE_PREFIX + column))
        frames.append(
            log.group_by(start.alias("interval_start"))
            .agg(pl.len().cast(pl.Int64).alias("count"), *statistics)
            .with_columns(pl.lit(column).alias("feature"), pl.lit(STRING if is_text else NUMERIC).alias("kind"))
        )
    out = pl.concat(frames).select(
        "interval_start", "feature", "kind", "count", *[pl.col(s).cast(pl.Float64) for s in STATISTICS]
    )
    return out.sort("feature", "interval_start")


def _numeric_statistics(c: pl.Expr) -> list[pl.Expr]:
    valid = c.filter(c.is_not_null() & c.is_not_nan())
    return [
        ((c.is_null() | c.is_nan()).sum() / pl.len()).cast(pl.Float64).alias("null_rate"),
        pl.lit(None, dtype=pl.Float64).alias("distinct"),
        valid.mean().alias("mean"),
        valid.std(ddof=0).alias("std"),
        valid.min().alias("min"),
        valid.max().alias("max"),
        valid.quantile(0.01, "linear").alias("p1"),
        valid.quantile(0.50, "linear").alias("p50"),
        valid.quantile(0.99, "linear").alias("p99"),
    ]


def _string_statistics(c: pl.Expr | None) -> list[pl.Expr]:
    """Null-or-empty rate and distinct count of the decoded strings (both blank when the
    log keeps none of them); the numeric statistics are blank."""
    blank = [pl.lit(None, dtype=pl.Float64).alias(s) for s in _NUMERIC_STATISTICS]
    if c is None:
        return [
            pl.lit(None, dtype=pl.Float64).alias("null_rate"),
            pl.lit(None, dtype=pl.Float64).alias("distinct"),
            *blank,
        ]
    missing = c.is_null() | (c == "")
    return [
        (missing.sum() / pl.len()).cast(pl.Float64).alias("null_rate"),
        c.filter(~missing).n_unique().cast(pl.Float64).alias("distinct"),
        *blank,
    ]


def flag_drift(stats: pl.DataFrame, config: QualityConfig) -> pl.DataFrame:
    """Add ``alert`` and ``drifted``: which statistics left their baseline by > sigmas."""
    alerts: list[bool] = []
    drifted: list[str] = []
    for (feature,), group in stats.group_by("feature", maintain_order=True):
        del feature
        starts = group["interval_start"].to_numpy()
        values = {s: group[s].to_numpy().astype(np.float64) for s in STATISTICS}
        for i, t in enumerate(starts):
            window = (starts >= t - config.baseline_ms) & (starts < t)
            names = []
            if int(window.sum()) >= config.min_baseline_points:
                for s in STATISTICS:
                    base = values[s][window]
                    base = base[~np.isnan(base)]
                    x = values[s][i]
                    if len(base) < config.min_baseline_points or math.isnan(x):
                        continue
                    mu, sd = float(base.mean()), float(base.std())
                    # A constant baseline: any real change is infinitely many sigmas away.
                    spread = sd if sd > 0 else 1e-9 * max(1.0, abs(mu))
                    if abs(x - mu) > config.sigmas * spread:
                        names.append(s)
            alerts.append(bool(names))
            drifted.append(",".join(names))
    ordered = stats.sort("feature", "interval_start", maintain_order=True)
    return ordered.with_columns(
        pl.Series("alert", alerts, dtype=pl.Boolean), pl.Series("drifted", drifted, dtype=pl.Utf8)
    )


def compute_quality(
    log_root: str,
    view_name: str,
    config: QualityConfig | None = None,
    *,
    fingerprint_hex: str | None = None,
    text_columns: Collection[str] = (),
) -> pl.DataFrame:
    """The quality table of one view, computed from its deduplicated Parquet log;
    ``text_columns``: its aggregated columns of schema type string."""
    config = config or QualityConfig()
    log = read_log(log_root, view_name, fingerprint_hex)
    stats = interval_stats(log, config.interval_ms, text_columns)
    if stats.is_empty():
        return pl.DataFrame(schema=QUALITY_SCHEMA)
    return flag_drift(stats, config).select(list(QUALITY_SCHEMA))


def quality_path(log_root: str, view_name: str) -> tuple[pafs.FileSystem, str]:
    """``(filesystem, path)`` of a view's quality table."""
    fs, base = resolve_root(log_root)
    return fs, f"{base}/{QUALITY_DIR}/view={view_name}/{QUALITY_FILE}"


def write_quality(log_root: str, view_name: str, table: pl.DataFrame) -> str:
    """Write (replace) a view's quality table; returns its path."""
    fs, path = quality_path(log_root, view_name)
    directory = path.rsplit("/", 1)[0]
    fs.create_dir(directory, recursive=True)
    tmp = f"{directory}/.{QUALITY_FILE}.tmp"
    pq.write_table(table.to_arrow(), tmp, filesystem=fs)
    fs.move(tmp, path)  # readers see the old table or the new one, never half of one
    return path


def read_quality(log_root: str, view_name: str) -> pl.DataFrame:
    """A view's quality table (empty, with the schema, when no pass has run yet)."""
    fs, path = quality_path(log_root, view_name)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return pl.DataFrame(schema=QUALITY_SCHEMA)
    try:
        table = pq.read_table(path, filesystem=fs)
    except Exception as exc:
        raise QualityError(
            f"quality table {path}: cannot be read: {exc}",
            hint="run `streamfeat quality` to rewrite it",
        ) from exc
    return pl.DataFrame(pl.from_arrow(table))


def run_quality(
    log_root: str,
    view_names: Sequence[str],
    config: QualityConfig | None = None,
    text_columns: Mapping[str, Collection[str]] | None = None,
    fingerprints: Mapping[str, str] | None = None,
) -> dict[str, pl.DataFrame]:
    """Compute and write the quality table of each view; returns them by view name.
    ``text_columns``: per view name, its aggregated columns of schema type string;
    ``fingerprints``: per view name, its fingerprint (its log under every name it had,
    docs/parquet-log.md; without one, the one fingerprint logged under its name)."""
    out: dict[str, pl.DataFrame] = {}
    for name in view_names:
        table = compute_quality(
            log_root,
            name,
            config,
            fingerprint_hex=(fingerprints or {}).get(name),
            text_columns=(text_columns or {}).get(name, ()),
        )
        write_quality(log_root, name, table)
        out[name] = table
    return out
