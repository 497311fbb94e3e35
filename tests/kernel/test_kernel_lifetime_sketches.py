"""Lifetime windows over sketch slots: folding expired tiles also folds their blobs, so
the compacted record answers like the record that kept every tile, bit for bit."""

from __future__ import annotations

import numpy as np

from engine.kernel.codec import decode_sketches, decode_tiles
from engine.kernel.layout import AggregationSpec
from engine.kernel.sketches import merge_window
from engine.kernel.view_spec import ViewSpec
from tests.kernel.kernel_support import stream_sketch_records

G = 60_000
SPEC = ViewSpec(
    G,
    ("merchant", "amount"),
    (
        AggregationSpec("m_hll", "merchant", "count_distinct_approx", None),
        AggregationSpec("p95", "amount", "percentile", None, params=(("q", 0.95),)),
        AggregationSpec("n_5m", "amount", "count", 5 * G),
    ),
    5 * G + G,
)
LAYOUT = SPEC.layout
ENTITIES = 2


def _events(n: int) -> list[dict[str, object]]:
    rng = np.random.default_rng(5)
    ts = np.sort(rng.integers(0, 90 * G, n))
    return [
        {
            "entity": int(rng.integers(0, ENTITIES)),
            "e": int(t),
            "pos": i,
            "merchant": f"m{int(rng.integers(0, 40))}",
            "amount": float(np.round(rng.exponential(40.0), 2)),
        }
        for i, t in enumerate(ts.tolist())
    ]


def _stream(batches: list[list[dict[str, object]]], compact: bool) -> list[bytes | None]:
    arrays = [
        {
            "entity": np.array([ev["entity"] for ev in batch], dtype=np.int64),
            "e": np.array([ev["e"] for ev in batch], dtype=np.int64),
            "pos": np.array([ev["pos"] for ev in batch], dtype=np.int64),
            "merchant": np.array([ev["merchant"] for ev in batch], dtype=object),
            "amount": np.array([ev["amount"] for ev in batch], dtype=np.float64),
        }
        for batch in batches
    ]
    return stream_sketch_records(SPEC, ENTITIES, arrays, compact=compact)


def test_folded_blobs_equal_the_blobs_of_every_tile() -> None:
    events = _events(400)
    per_event = _stream([[ev] for ev in events], compact=True)
    one_batch = _stream([events], compact=True)
    everything = _stream([events], compact=False)
    n_slots = len(LAYOUT.sketch_slots)
    for a, b in zip(per_event, one_batch, strict=True):
        assert a is not None and b is not None
        # Blobs are bit-identical; float partials may differ in the last bits with batch
        # boundaries (docs/semantics.md section 6).
        assert decode_sketches(a, n_slots).tolist() == decode_sketches(b, n_slots).tolist()
        tiles_a, partials_a, _ = decode_tiles(a)
        tiles_b, partials_b, _ = decode_tiles(b)
        assert tiles_a.tolist() == tiles_b.tolist()
        np.testing.assert_allclose(partials_a, partials_b, rtol=1e-9, atol=1e-9)
    for entity in range(ENTITIES):
        compacted, full = per_event[entity], everything[entity]
        assert compacted is not None and full is not None
        tiles, _, _ = decode_tiles(compacted)
        assert len(tiles) < len(decode_tiles(full)[0])  # folding happened
        got, want = decode_sketches(compacted, n_slots), decode_sketches(full, n_slots)
        for j, slot in enumerate(LAYOUT.sketch_slots):
            assert merge_window(slot, got[:, j].tolist()) == merge_window(slot, want[:, j].tolist())
