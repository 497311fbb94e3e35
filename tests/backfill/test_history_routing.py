"""History routing with keys factorized once per slice equals the stream's routing,
and slices gathered column by column equal slices sorted whole.

Backfill factorizes every string join-key column of a slice once
(``factorize_key_columns``) and hands each chunk its codes (``chunk_codes``); a
multi-join-key view then composes its entity keys from them, as streaming does from
its own per-batch factorization, instead of one tuple per row. Each row must still
get the entity key, shard, values and log columns of ``route`` without them. A slice
is read in file order and only the columns read are gathered into its sorted order;
the batches must be those of the rows sorted first.
"""

from __future__ import annotations

import random

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
# (user, merchant, purchase or refund, amount and card digit) of each history row.
HISTORY_ROWS = st.lists(
    st.tuples(st.sampled_from(USERS), st.sampled_from(MERCHANTS), st.booleans(), st.integers(0, 9)),
    min_size=1,
    max_size=120,
)


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
    HISTORY_ROWS,
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


@settings(max_examples=60, deadline=None)
@given(
    HISTORY_ROWS,
    st.randoms(use_true_random=False),
    st.integers(1, 50),
)
def test_batches_of_rows_gathered_by_an_order_equal_those_of_the_sorted_rows(
    rows: list[tuple[str, str, bool, int]], shuffle: random.Random, chunk: int
) -> None:
    """A slice is read in file order with the permutation that sorts it
    (``slice_order``); gathering only the columns read (strings as codes) must give the
    batches and key codes of the rows sorted first."""
    views = list(views_by_name().values())
    source = views[0].source
    n = len(rows)
    sorted_rows = pl.DataFrame(
        {
            "user_id": [r[0] for r in rows],
            "merchant_id": [r[1] for r in rows],
            "card_id": [f"c{r[3]}" for r in rows],
            "amount": [float(r[3]) * 1.25 for r in rows],
            "event_type": ["PURCHASE" if r[2] else "REFUND" for r in rows],
            EVENT_MS: np.arange(1_780_000_000_000, 1_780_000_000_000 + n, dtype=np.int64),
        }
    )
    as_read = list(range(n))
    shuffle.shuffle(as_read)
    unsorted = sorted_rows[as_read]
    order = np.argsort(np.asarray(as_read), kind="stable")
    assert unsorted[order].equals(sorted_rows)
    by_order = factorize_key_columns(unsorted, views, order)
    plain = factorize_key_columns(sorted_rows, views)
    assert by_order.keys() == plain.keys()
    for name, (keys, codes) in by_order.items():
        assert [keys[c] for c in codes.tolist()] == [plain[name][0][c] for c in plain[name][1].tolist()]
    got = list(history_batches(unsorted, source, "t", 0, chunk, offset_base=7, order=order))
    want = list(history_batches(sorted_rows, source, "t", 0, chunk, offset_base=7))
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert (a.first_offset, a.last_offset, a.top_ts_after) == (b.first_offset, b.last_offset, b.top_ts_after)
        assert np.array_equal(a.event_ts, b.event_ts) and np.array_equal(a.offsets, b.offsets)
        assert a.columns.keys() == b.columns.keys()
        for name, values in a.columns.items():
            assert values.dtype == b.columns[name].dtype
            assert values.tolist() == b.columns[name].tolist()
