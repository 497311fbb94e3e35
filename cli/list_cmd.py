"""``streamfeat list`` and ``streamfeat describe NAME``: what a feature repo defines."""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from datetime import timedelta

from cli.common import Subparsers, add_settings_args, settings_from
from engine.definitions import (
    Entity,
    EventSource,
    FeatureRef,
    FeatureRepo,
    FeatureService,
    OnDemandFeatureView,
    StreamFeatureView,
)
from engine.definitions.base import closest, timedelta_ms
from engine.exceptions import ConfigError
from engine.timefmt import duration_text
from engine.wording import counted

#: Anything ``streamfeat describe NAME`` can name.
Describable = Entity | EventSource | StreamFeatureView | OnDemandFeatureView | FeatureService


def register(subparsers: Subparsers) -> None:
    listing: argparse.ArgumentParser = subparsers.add_parser(
        "list",
        help="list the repo's entities, sources, views, services and features with their types",
    )
    add_settings_args(listing, kafka=False)
    listing.set_defaults(handler=_list)
    describe: argparse.ArgumentParser = subparsers.add_parser(
        "describe", help="show one entity, source, view, on-demand view or service in full"
    )
    add_settings_args(describe, kafka=False)
    describe.add_argument("name", help="the definition's name (see `streamfeat list`)")
    describe.set_defaults(handler=_describe)


def _repo(args: argparse.Namespace) -> FeatureRepo:
    from engine.definitions.repo import load_repo

    return load_repo(settings_from(args).repo_path)


def _span(value: timedelta | None) -> str:
    if value is None:
        return "its lifetime"
    return duration_text(timedelta_ms(value))


#: A definition row (name, what it is) or a feature row (name, type, how it is computed);
#: rows are aligned into columns as wide as their longest cell (:func:`_aligned`).
Row = tuple[str, str] | tuple[str, str, str]
Line = str | Row


def _aligned(lines: Sequence[Line]) -> list[str]:
    """Text lines as they are; definition rows indented 2, feature rows 4, each kind's
    columns padded to the longest cell of that kind in ``lines``."""
    rows = [line for line in lines if not isinstance(line, str)]
    widths = {
        size: [max((len(r[c]) for r in rows if len(r) == size), default=0) for c in range(size - 1)] for size in (2, 3)
    }
    out = []
    for line in lines:
        if isinstance(line, str):
            out.append(line)
            continue
        indent = "  " if len(line) == 2 else "    "
        cells = [cell.ljust(width) for cell, width in zip(line, widths[len(line)], strict=False)]
        out.append(indent + " ".join([*cells, line[-1]]))
    return out


def _view_features(view: StreamFeatureView) -> Iterator[Row]:
    types = view.feature_types
    for agg in view.aggregations:
        kind = types[agg.output_name].value
        if kind == "list":  # a list of the column's values: say of which type
            kind = f"list[{getattr(view.source.schema.get(agg.column), 'value', '?')}]"
        arguments = ", ".join([agg.column, *(f"{name}={value:g}" for name, value in agg.params)])
        yield (agg.output_name, kind, f"{agg.function}({arguments}) over {_span(agg.window)}")


def _odfv_features(odfv: OnDemandFeatureView) -> Iterator[Row]:
    # A source is a RequestSource, a view, or a FeatureRef selecting some of a view's features.
    inputs = ", ".join(src.view.name if isinstance(src, FeatureRef) else src.name for src in odfv.sources)
    for name, ftype in odfv.feature_types.items():
        yield (name, ftype.value, f"computed at request time from {inputs}")


def _service_features(service: FeatureService) -> Iterator[Row]:
    for ref in service.refs:
        for name, ftype in ref.feature_types.items():
            yield (name, ftype.value, f"from {ref.view.name}")


def _entity_line(entity: Entity) -> Row:
    return (entity.name, f"join keys {', '.join(entity.join_keys)}")


def _source_line(source: EventSource) -> Row:
    return (
        source.name,
        f"topic {source.topic!r}, event time {source.timestamp_field} "
        f"({source.timestamp_format}), allowed lateness {_span(source.allowed_lateness)}",
    )


def _view_line(view: StreamFeatureView) -> Row:
    return (
        view.name,
        f"source {view.source.name}, entities "
        f"{', '.join(e.name for e in view.entities)}, tiles of {_span(view.aggregation_interval)}",
    )


def _heading(kind: str, row: Row) -> str:
    return f"{kind} {row[0]}: {row[-1]}"


def _list(args: argparse.Namespace) -> int:
    repo = _repo(args)
    lines: list[Line] = [f"entities ({len(repo.entities)}):", *map(_entity_line, repo.entities)]
    lines += [f"sources ({len(repo.sources)}):", *map(_source_line, repo.sources)]
    lines.append(f"views ({len(repo.views)}):")
    for view in repo.views:
        lines += [_view_line(view), *_view_features(view)]
    lines.append(f"on-demand views ({len(repo.on_demand_views)}):")
    for odfv in repo.on_demand_views:
        lines += [(odfv.name, f"{odfv.mode} transform {odfv.fn}"), *_odfv_features(odfv)]
    lines.append(f"services ({len(repo.services)}):")
    for service in repo.services:
        lines += [(service.name, counted(len(service.feature_names), "feature")), *_service_features(service)]
    print("\n".join(_aligned(lines)))
    return 0


def _details(definition: Describable) -> list[str]:
    """Everything about one definition, heading first."""
    if isinstance(definition, Entity):
        return [_heading("entity", _entity_line(definition)), _about(definition)]
    if isinstance(definition, EventSource):
        schema: list[Line] = [(name, "", ftype.value) for name, ftype in definition.field_types.items()]
        heading = _heading("source", _source_line(definition))
        return [heading, _about(definition), "  schema:", *_aligned(schema)]
    if isinstance(definition, StreamFeatureView):
        return [
            _heading("view", _view_line(definition)),
            _about(definition),
            f"  filter: {definition.filter if definition.filter is not None else 'none'}",
            f"  expected freshness: {_span(definition.expected_freshness)}",
            "  features:",
            *_aligned(list(_view_features(definition))),
        ]
    if isinstance(definition, OnDemandFeatureView):
        heading = f"on-demand view {definition.name}: {definition.mode} transform {definition.fn}"
        return [heading, _about(definition), "  features:", *_aligned(list(_odfv_features(definition)))]
    heading = f"service {definition.name}: {counted(len(definition.feature_names), 'feature')}"
    return [heading, _about(definition), "  features:", *_aligned(list(_service_features(definition)))]


def _describe(args: argparse.Namespace) -> int:
    repo = _repo(args)
    groups: tuple[tuple[Describable, ...], ...] = (
        repo.entities,
        repo.sources,
        repo.views,
        repo.on_demand_views,
        repo.services,
    )
    definitions = [d for group in groups for d in group]
    found = ["\n".join(_details(d)) for d in definitions if d.name == args.name]
    # A feature is described by its line in its view (`streamfeat list` shows features too).
    features: list[tuple[str, StreamFeatureView | OnDemandFeatureView]] = [
        *((row[0], view) for view in repo.views for row in _view_features(view)),
        *((row[0], odfv) for odfv in repo.on_demand_views for row in _odfv_features(odfv)),
    ]
    found += [_feature_details(args.name, owner) for name, owner in features if name == args.name]
    if not found:
        names = {str(d.name) for d in definitions} | {name for name, _ in features}
        match = closest(args.name, sorted(names))
        raise ConfigError(
            f"describe: nothing named {args.name!r} in the repo {repo.path}",
            hint=(f"did you mean {match!r}? " if match else "")
            + f"defined names: {', '.join(sorted(str(d.name) for d in definitions))} "
            "(and their features: `streamfeat list`)",
        )
    print("\n\n".join(found))
    return 0


def _feature_details(name: str, owner: StreamFeatureView | OnDemandFeatureView) -> str:
    """One feature: its line in its view, and the view's heading."""
    if isinstance(owner, StreamFeatureView):
        rows, heading = list(_view_features(owner)), _heading("view", _view_line(owner))
    else:
        rows, heading = list(_odfv_features(owner)), f"on-demand view {owner.name}: {owner.mode} transform {owner.fn}"
    (row,) = [r for r in rows if r[0] == name]
    return "\n".join([f"feature {name}: {row[1]}, {row[-1]}", f"  of {heading}"])


def _about(definition: Describable) -> str:
    text = definition.description
    return f"  description: {text}" if text else "  description: (none)"
