"""Feast objects (as read by ``reader``) -> the source of an equivalent streamfeat repo module.

Translated: ``Entity``; ``KafkaSource`` with a ``JsonFormat`` schema (-> ``EventSource``,
``watermark_delay_threshold`` -> ``allowed_lateness``); ``RequestSource``;
``StreamFeatureView`` aggregations (sum, count, mean/avg, min, max; Feast's output
names kept, ``{function}_{column}_{seconds}s`` unless named); python-mode
``on_demand_feature_view`` functions (called one row at a time through an adapter);
``FeatureService`` (views and ``view[[...]]`` selections). Everything else is listed
in :attr:`Translation.not_translated` with the reason, never approximated silently: what
streamfeat computes only approximately (Feast's exact distinct count as a HyperLogLog
``count_distinct_approx``, Spark's sample stddev as the population ``stddev``) is translated
and listed in :attr:`Translation.approximated` with what differs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from engine.feast_import.emit import HEADER_IMPORTS, ModuleWriter
from engine.feast_import.objects import entity, kafka_source, on_demand, request_source, service, stream_view
from engine.feast_import.reader import FeastCall, FeastRepoSource

_BATCH_SOURCES = (
    "FileSource",
    "BigQuerySource",
    "SnowflakeSource",
    "RedshiftSource",
    "SparkSource",
    "PostgreSQLSource",
    "TrinoSource",
    "AthenaSource",
)


@dataclass(frozen=True)
class Translation:
    source: str  # the streamfeat module's text
    translated: tuple[str, ...]  # "StreamFeatureView 'user_spend'", ...
    not_translated: tuple[tuple[str, str], ...]  # (what, why)
    approximated: tuple[tuple[str, str], ...] = ()  # (what, what differs): translated, not exactly

    def report(self) -> str:
        lines = [f"translated ({len(self.translated)}):", *(f"  {t}" for t in self.translated)]
        if self.approximated:
            lines.append(f"translated approximately ({len(self.approximated)}):")
            lines.extend(f"  {what}: {why}" for what, why in self.approximated)
        lines.append(f"not translated ({len(self.not_translated)}):")
        lines.extend(f"  {what}: {why}" for what, why in self.not_translated)
        return "\n".join(lines)


def _not_translated(w: ModuleWriter, kinds: tuple[str, ...], why: str) -> None:
    for call in w.repo.of_kind(*kinds):
        w.failed[id(call)] = why
        w.notes.append((f"{call.kind} {call.name!r} ({call.where})", why))


Build = Callable[[ModuleWriter, FeastCall], tuple[str, str]]


def translate(repo: FeastRepoSource, origin: str) -> Translation:
    w = ModuleWriter(repo)
    builders: tuple[tuple[str, Build], ...] = (
        ("Entity", entity),
        ("KafkaSource", kafka_source),
        ("RequestSource", request_source),
        ("StreamFeatureView", stream_view),
        ("OnDemandFeatureView", on_demand),
        ("FeatureService", service),
    )
    for kind, build in builders:
        if kind == "StreamFeatureView":
            _not_translated(
                w,
                ("FeatureView", "BatchFeatureView"),
                "batch feature view: streamfeat computes "
                "features from a stream (write it as a StreamFeatureView over an EventSource)",
            )
            _not_translated(
                w,
                ("PushSource",),
                "push source: streamfeat ingests from Kafka; produce the pushed "
                "events to a topic and declare an EventSource for it",
            )
            _not_translated(
                w, _BATCH_SOURCES, "batch source: backfill history from Parquet files with `streamfeat backfill --from`"
            )
        for call in repo.of_kind(kind):
            w.emit(call, functools.partial(build, w))
    for file, why in repo.skipped_files:
        w.notes.append((file, why))
    return Translation(_module(w, origin), tuple(w.translated), tuple(w.notes), tuple(w.approximated))


def _module(w: ModuleWriter, origin: str) -> str:
    missing = "".join(f"\n- {what}: {why}" for what, why in w.notes) or "\nnothing"
    approximated = "".join(f"\n- {what}: {why}" for what, why in w.approximated)
    header = (
        f'"""Translated from the Feast repo {origin} by `streamfeat import-feast`.\n\n'
        + (f"Translated approximately:{approximated}\n\n" if approximated else "")
        + f'Not translated:{missing}\n"""\n\n'
        + "".join(f"{line}\n" for line in HEADER_IMPORTS)
        + "\n"
        "from engine.definitions import (\n    Aggregation, Entity, EventSource, FeatureService, RequestSource,"
        " StreamFeatureView, on_demand_feature_view,\n)\n"
    )
    extra = "".join(f"{line}\n" for line in w.imports)
    return header + extra + "".join(f"\n\n{block}\n" for block in w.blocks)
