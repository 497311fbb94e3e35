"""The compact form in which routed rows cross between the processes of a cluster.

Bytewax pickles every item that goes to a worker of another process (a shard's share of
each source batch, engine/routing.py). Pickled as plain objects, a share's object arrays
(join-key values, text columns the sketches read) cost one pickled string per row on
each side, and its integer arrays eight bytes per row each. The wire form:

- the join-key column of a single-key view whose values are exactly the text of the
  row's entity key (the usual case: routing builds each key from that value,
  engine/state/keys.py) is not sent at all; the receiver rebuilds it from the distinct
  keys and the row codes (values come back as equal ``str`` objects);
- integer arrays travel in the narrowest unsigned type holding their range (offsets and
  event times as a base plus differences), and come back as ``int64``;
- everything else (the float values, the columns the sketches read) is left to pickle
  as it is: factorizing text columns in Python made the sender slower than pickle.

The rebuilt rows equal the sent ones value for value and dtype for dtype.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from engine.array_types import AnyArray

# Column encodings (the first element of each column's wire tuple).
_FROM_KEYS = 0  # (0,): a single join key's values, rebuilt from the keys and codes
_AS_IS = 1  # (1, the array): pickled unchanged

_UNSIGNED = ((np.uint8, 2**8 - 1), (np.uint16, 2**16 - 1), (np.uint32, 2**32 - 1))

#: One integer array on the wire: (base, differences in a narrow unsigned dtype).
IntWire = tuple[int, npt.NDArray[np.unsignedinteger[Any]]]  # Any: the unsigned width varies
ColumnWire = tuple[Any, ...]  # Any: the tuple's shape depends on its encoding tag


def narrow_ints(values: npt.NDArray[np.int64]) -> IntWire | AnyArray:
    """``values`` as ``(base, values - base)`` in the narrowest unsigned dtype that holds
    them; an array that is not one-dimensional ``int64`` is returned as it is."""
    if values.dtype != np.int64 or values.ndim != 1:
        return values
    if not len(values):
        return 0, np.empty(0, dtype=np.uint8)
    base = int(values.min())
    span = int(values.max()) - base
    for dtype, top in _UNSIGNED:
        if span <= top:
            return base, (values - base).astype(dtype)
    return base, (values - base).astype(np.uint64)


def widen_ints(wire: IntWire | AnyArray) -> npt.NDArray[np.int64]:
    if not isinstance(wire, tuple):
        array: npt.NDArray[np.int64] = wire
        return array
    base, diffs = wire
    out = diffs.astype(np.int64)
    if base:
        out += base
    return out


def _key_text(keys: list[bytes]) -> list[str] | None:
    """The text of every distinct entity key (None if one is not UTF-8)."""
    try:
        return [k.decode() for k in keys]
    except UnicodeDecodeError:
        return None


def _join_columns(
    join_values: Mapping[str, AnyArray], keys: list[bytes], codes: npt.NDArray[np.int64]
) -> dict[str, ColumnWire]:
    if len(join_values) == 1:
        ((name, column),) = join_values.items()
        text = _key_text(keys) if column.dtype == object and column.ndim == 1 else None
        if text is not None:
            distinct = np.empty(len(text), dtype=object)
            distinct[:] = text
            # Equal to the key's text, value by value: each value is that str.
            if distinct[codes].tolist() == column.tolist():
                return {name: (_FROM_KEYS,)}
    # Several join keys: their composed keys are nearly one per row, so splitting them
    # costs more than pickling the columns.
    return {name: (_AS_IS, column) for name, column in join_values.items()}


def _column_back(wire: ColumnWire, keys: list[bytes], codes: npt.NDArray[np.int64]) -> AnyArray:
    if wire[0] == _FROM_KEYS:
        distinct = np.empty(len(keys), dtype=object)
        distinct[:] = [k.decode() for k in keys]
        column: AnyArray = distinct[codes]
        return column
    array: AnyArray = wire[1]
    return array


def to_wire(
    keys: list[bytes],
    codes: npt.NDArray[np.int64],
    join_values: Mapping[str, AnyArray],
    event_ts: npt.NDArray[np.int64],
    offsets: npt.NDArray[np.int64],
    values: npt.NDArray[np.float64],
    raw_values: Mapping[str, AnyArray],
) -> tuple[Any, ...]:  # Any: a plain tuple of picklable parts, read back by from_wire only
    """A view's routed rows in wire form (see the module docstring)."""
    return (
        keys,
        narrow_ints(codes),
        _join_columns(join_values, keys, codes),
        narrow_ints(event_ts),
        narrow_ints(offsets),
        values,
        dict(raw_values),
    )


def from_wire(wire: tuple[Any, ...]) -> dict[str, Any]:  # Any: the field values of ViewRows
    """The field values of the rows :func:`to_wire` was given."""
    keys, codes_wire, join_wire, ts_wire, offsets_wire, values, raw_wire = wire
    codes = widen_ints(codes_wire)
    return {
        "keys": keys,
        "codes": codes,
        "join_values": {name: _column_back(w, keys, codes) for name, w in join_wire.items()},
        "event_ts": widen_ints(ts_wire),
        "offsets": widen_ints(offsets_wire),
        "values": values,
        "raw_values": raw_wire,
    }
