"""Window evaluation for one request: one multi-get per view, then the kernel.

One entity uses :func:`engine.kernel.evaluate` (no CSR set-up); several use
:func:`engine.kernel.evaluate_many` on the concatenated tile sets. Every row is
evaluated as of the request's time (wall clock or ``as_of``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.kernel import TileCodecError, decode_tiles, evaluate, evaluate_many
from engine.kernel.window import Value
from engine.state.keys import entity_key
from serving.exceptions import ServerError
from serving.online import OnlineAccess
from serving.registry import CompiledView
from serving.request import EntityValue


@dataclass(frozen=True, slots=True)
class ViewValues:
    """One view's features for every row of a request."""

    columns: dict[str, list[Value]]  # feature -> one value per row
    found: list[bool]  # False: the entity has no record (never seen, or expired)
    defaulted: dict[str, list[bool]]  # feature -> whether a declared default replaced an empty window
    max_event_ts: list[int | None]  # newest event time in the entity's record


def entity_keys(view: CompiledView, entities: dict[str, list[EntityValue]], n_rows: int) -> list[bytes]:
    if len(view.join_keys) == 1:
        column = entities[view.join_keys[0]]
        return [entity_key((v,)) for v in column]
    columns = [entities[k] for k in view.join_keys]
    return [entity_key([c[i] for c in columns]) for i in range(n_rows)]


def _decode(view: CompiledView, record: bytes) -> tuple[np.ndarray, np.ndarray, int]:
    try:
        return decode_tiles(record, view.spec.layout.width)
    except TileCodecError as exc:
        raise ServerError(f"view {view.name!r}: a stored tile record cannot be decoded: {exc}",
                          hint="the state is corrupt or from another version; rebuild it with a backfill") from exc


def evaluate_view(view: CompiledView, records: list[bytes | None], t_ms: int) -> ViewValues:
    spec = view.spec
    names = [a.output_name for a in spec.aggregations]
    if len(records) == 1:
        record = records[0]
        if record is None:
            tiles, partials, max_ts = np.empty(0, np.int64), spec.layout.empty(0), None
        else:
            tiles, partials, max_ts = _decode(view, record)
        result = evaluate(spec, tiles, partials, t_ms)
        return ViewValues(
            columns={n: [result.values[n]] for n in names},
            found=[record is not None],
            defaulted={n: [d] for n, d in zip(names, result.defaulted, strict=True)},
            max_event_ts=[max_ts],
        )
    tile_parts: list[np.ndarray] = []
    partial_parts: list[np.ndarray] = []
    indptr = np.zeros(len(records) + 1, dtype=np.int64)
    max_event_ts: list[int | None] = []
    for i, record in enumerate(records):
        if record is None:
            indptr[i + 1] = indptr[i]
            max_event_ts.append(None)
            continue
        tiles, partials, max_ts = _decode(view, record)
        tile_parts.append(tiles)
        partial_parts.append(partials)
        indptr[i + 1] = indptr[i] + len(tiles)
        max_event_ts.append(max_ts)
    all_tiles = np.concatenate(tile_parts) if tile_parts else np.empty(0, np.int64)
    all_partials = np.concatenate(partial_parts) if partial_parts else spec.layout.empty(0)
    batch = evaluate_many(spec, all_tiles, all_partials, indptr,
                          np.arange(len(records), dtype=np.int64), t_ms)
    defaulted = batch.defaulted
    return ViewValues(
        columns=batch.to_pylists(),
        found=[r is not None for r in records],
        defaulted={n: defaulted[:, j].tolist() for j, n in enumerate(names)},
        max_event_ts=max_event_ts,
    )


def read_and_evaluate(
    online: OnlineAccess, view: CompiledView, entities: dict[str, list[EntityValue]], n_rows: int, t_ms: int,
) -> ViewValues:
    """One multi-get for the view, then window evaluation as of ``t_ms``."""
    records = online.read(view.fingerprint, entity_keys(view, entities, n_rows))
    return evaluate_view(view, records, t_ms)
