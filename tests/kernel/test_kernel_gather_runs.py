"""gather_runs and scatter_runs (one slice per run for long runs, one index gather for
short ones) must move exactly the words of ``runs``' index (the batch codec that uses
them is checked against the record codec, long records included, in
tests/engine/test_routing_fast_paths.py)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.kernel.blob_buffers import SLICED_RUN_WORDS, gather_runs, runs, scatter_runs

# Short runs take the gather, long ones the slices: both, and mixes of the two.
run_lengths = st.lists(st.one_of(st.integers(0, 8), st.integers(SLICED_RUN_WORDS, 3 * SLICED_RUN_WORDS)), max_size=6)


@settings(max_examples=150, deadline=None)
@given(run_lengths, st.lists(st.integers(0, 40), min_size=6, max_size=6), st.integers(0, 2**32 - 1))
def test_gather_and_scatter_runs_move_the_words_of_runs(lengths: list[int], gaps: list[int], seed: int) -> None:
    n = np.asarray(lengths, dtype=np.int64)
    starts = np.cumsum(n + np.asarray(gaps[: len(n)], dtype=np.int64)) - n  # runs apart, ascending
    size = int(starts[-1] + n[-1]) + 3 if len(n) else 3
    data = np.random.default_rng(seed).integers(-(2**62), 2**62, size)
    index = runs(starts, n)
    assert gather_runs(data, starts, n).tolist() == data[index].tolist()
    values = np.random.default_rng(seed + 1).standard_normal(len(index))
    want = np.zeros(size)
    want[index] = values
    got = np.zeros(size)
    scatter_runs(got, starts, n, values)
    assert got.tobytes() == want.tobytes()
