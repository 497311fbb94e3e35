"""History routing with keys factorized once per slice equals the stream's routing.

Backfill factorizes every string join-key column of a slice once
(``factorize_key_columns``) and hands each chunk its codes (``chunk_codes``); a
multi-join-key view then composes its entity keys from them, as streaming does from
its own per-batch factorization, instead of one tuple per row. Each row must still
get the entity key, shard, values and log columns of ``route`` without them.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.offline.history_batches import chunk_codes, factorize_key_columns, history_batches, routed_columns
from engine.offline.history_slices import EVENT_MS
from engine.routing import ShardBatch, route
from tests.backfill.backfill_support import views_by_name

USERS = ["u1", "u2", "ü3", "4", "u5", ""]
MERCHANTS = ["m", "n", "mü", "7"]


def _per_row(routed: list[tuple[str, ShardBatch]]) -> dict[tuple[bytes, int], tuple[object, ...]]:
    """(view, offset) -> (shard, entity key, event time, values, join values, raw values)."""
    out: dict[tuple[bytes, int], tuple[object, ...]] = {}
    for _, batch in routed:
        for fp, rows in batch.views.items():
            assert len(set(rows.keys)) == len(rows.keys)
            keys = rows.entity_keys
            for i, offset in enumerate(rows.offsets.tolist()):
                out[(fp, offset)] = (
                    batch.shard,
                    keys[i],
                    int(rows.event_ts[i]),
                    rows.values[i].tolist(),
                    {k: v[i] for k, v in rows.join_values.items()},
                    {k: v[i] for k, v in rows.raw_values.items()},
                )
    return out


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(USERS), st.sampled_from(MERCHANTS), st.booleans(), st.integers(0, 9)),
        min_size=1,
        max_size=120,
    ),
    st.integers(1, 7),
    st.integers(1, 50),
    st.sampled_from(["user_id", "merchant_id"]),
)
def test_factorized_history_routing_equals_stream_routing(
    rows: list[tuple[str, str, bool, int]], shards: int, chunk: int, family: str
) -> None:
    views = [v for v in views_by_name().values() if v.join_keys[0] == family]
    source = views[0].source
    n = len(rows)
    history = pl.DataFrame(
        {
            "transaction_id": [f"t{i}" for i in range(n)],
            "user_id": [r[0] for r in rows],
            "merchant_id": [r[1] for r in rows],
            "card_id": [f"c{r[3]}" for r in rows],
            "amount": [float(r[3]) * 1.25 for r in rows],
            "currency": ["EUR"] * n,
            "event_type": ["PURCHASE" if r[2] else "REFUND" for r in rows],
            EVENT_MS: np.arange(1_780_000_000_000, 1_780_000_000_000 + n, dtype=np.int64),
        }
    )
    factorized = factorize_key_columns(history, views)
    assert set(factorized) == {k for v in views for k in v.join_keys}  # every join key, pairs too
    backfill: dict[tuple[bytes, int], tuple[object, ...]] = {}
    stream: dict[tuple[bytes, int], tuple[object, ...]] = {}
    for batch in history_batches(history, source, "t", 0, chunk, routed_columns(views, factorized)):
        hint = chunk_codes(factorized, batch.first_offset, len(batch.offsets))
        backfill.update(_per_row(route(batch, views, shards, factorized=hint)))
    for batch in history_batches(history, source, "t", 0, chunk):
        stream.update(_per_row(route(batch, views, shards)))
    # Backfill routes single-key views without their raw join values (keys come from
    # the codes); everything else of each row is the stream's.
    single = {v.fingerprint for v in views if len(v.join_keys) == 1}
    for key, (shard, entity, ts, values, joined, raw) in stream.items():
        got = backfill[key]
        assert got[:4] == (shard, entity, ts, values)
        assert got[4] == ({} if key[0] in single else joined)
        assert got[5] == raw
    assert backfill.keys() == stream.keys()
