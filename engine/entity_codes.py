"""Entity codes: the distinct entity keys of a batch's rows and one integer code per row.

Rows carry integer codes into a list of distinct entity keys instead of one key per row:
a batch usually names each entity a few times, so encoding keys (engine/state/keys.py)
and hashing them for the shard is done once per distinct key, then broadcast.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import polars as pl

from engine.io.decoder import Decoder, EventSourceLike
from engine.kernel.layout import AggregatedView, double_read_columns
from engine.state.keys import ENTITY_KEY_SEPARATOR, encode_entity_keys

Int64Array = npt.NDArray[np.int64]


def factorize_entity_keys(
    join_values: Sequence[npt.NDArray[np.object_]],
) -> tuple[list[bytes], Int64Array]:
    """``(distinct entity keys, code per row)`` with ``keys[codes[i]]`` equal to
    :func:`encode_entity_keys` ``(join_values)[i]`` (key order is unspecified)."""
    n = len(join_values[0]) if join_values else 0
    if len(join_values) == 1 and n >= _HASHED_FACTORIZE_ROWS:
        hashed = _factorize_by_hash(join_values[0])
        if hashed is not None:
            return hashed
    raw: list[object]
    if len(join_values) == 1:
        raw = join_values[0].tolist()
    else:
        raw = list(zip(*(col.tolist() for col in join_values), strict=True))
    # Distinct values in first-seen order, numbered, then one C-level lookup per row
    # (no Python frame per row: about twice as fast as a setdefault generator).
    index: dict[object, int] = dict(zip(dict.fromkeys(raw), range(n), strict=False))
    codes = np.fromiter(map(index.__getitem__, raw), dtype=np.int64, count=n)
    distinct = list(index)
    if len(join_values) == 1:
        keys = encode_entity_keys([distinct])
    else:
        keys = encode_entity_keys(list(zip(*distinct, strict=True)))
    if len(set(keys)) != len(keys):
        # Distinct values with the same text (7 and "7" in one object column) are one
        # entity: factorize again on the key bytes themselves.
        by_key: dict[bytes, int] = {}
        remap = np.fromiter((by_key.setdefault(k, len(by_key)) for k in keys), dtype=np.int64, count=len(keys))
        return list(by_key), remap[codes]
    return keys, codes


# Below this many rows a dict lookup per row is cheaper than building a polars Series.
_HASHED_FACTORIZE_ROWS = 50_000


def _factorize_by_hash(values: npt.NDArray[np.object_]) -> tuple[list[bytes], Int64Array] | None:
    """Factorize a string column through polars' row hash (C speed on big batches).

    Exact despite hash collisions: every row is compared with the representative of
    its hash, and any mismatch returns None (the caller then uses the dict path).
    None also when the column is not all strings.
    """
    try:
        series = pl.Series("k", values, dtype=pl.String, strict=True)
    except (TypeError, ValueError, pl.exceptions.PolarsError):
        return None
    if series.null_count():
        return None
    hashes = series.hash().to_numpy()
    _, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)
    representatives = series.gather(first)
    if not bool((series == representatives.gather(inverse)).all()):
        return None
    keys = encode_entity_keys([representatives.to_list()])
    return keys, inverse.astype(np.int64, copy=False).reshape(-1)


def compose_entity_keys(
    parts: Sequence[tuple[list[bytes], Int64Array]],
) -> tuple[list[bytes], Int64Array] | None:
    """Multi-join-key entity keys from each join key's own factorization.

    ``parts[j]`` is ``(distinct keys of join key j, code per row)``; returns what
    :func:`factorize_entity_keys` returns for the same rows (keys joined by the
    separator), from integer codes instead of one tuple per row. None when the code
    space would overflow or two pairs join to the same bytes (a separator inside a
    value): the caller then factorizes the rows themselves.
    """
    sizes = [max(len(keys), 1) for keys, _ in parts]
    if math.prod(sizes) >= 2**62:
        return None
    combined = parts[0][1].astype(np.int64, copy=True)
    for (_, codes), size in zip(parts[1:], sizes[1:], strict=True):
        combined *= size
        combined += codes
    distinct, inverse = np.unique(combined, return_inverse=True)
    indices: list[Int64Array] = []
    rest = distinct
    for size in reversed(sizes[1:]):
        indices.append(rest % size)
        rest = rest // size
    indices.append(rest)
    indices.reverse()
    columns = [[keys[i] for i in index.tolist()] for (keys, _), index in zip(parts, indices, strict=True)]
    joined = [ENTITY_KEY_SEPARATOR.join(values) for values in zip(*columns, strict=True)]
    if len(set(joined)) != len(joined):
        return None
    return joined, inverse.astype(np.int64, copy=False).reshape(-1)


def used_keys_only(keys: list[bytes], codes: Int64Array) -> tuple[list[bytes], Int64Array]:
    """Drop the keys no row names (a batch-wide factorization seen through a view's filter)."""
    used = np.bincount(codes, minlength=len(keys)) > 0
    if bool(used.all()):
        return keys, codes
    new_code = np.cumsum(used, dtype=np.int64) - 1
    return [k for k, u in zip(keys, used.tolist(), strict=True) if u], new_code[codes]


class _Keyed(AggregatedView, Protocol):
    @property
    def join_keys(self) -> Sequence[str]: ...


# Any: Decoder's own keyword options (each typed there), passed through unchanged.
def keyed_decoder(source: EventSourceLike, views: Iterable[_Keyed], **options: Any) -> Decoder:
    """The decoder of ``source`` for the stream and for pushes: it refuses join-key values
    (of the fields ``views`` read as join keys) holding the entity-key separator, which
    would make two entities one (docs/semantics.md section 1), and int values beyond
    +-2**53 in the fields ``views`` read as doubles (section 5)."""
    views = list(views)
    join_keys = {k for view in views for k in view.join_keys if k in source.schema}
    exact_ints = double_read_columns(views) & set(source.schema)
    return Decoder(
        source,
        join_keys=join_keys,
        key_separator=ENTITY_KEY_SEPARATOR.decode(),
        exact_int_fields=exact_ints,
        **options,
    )
