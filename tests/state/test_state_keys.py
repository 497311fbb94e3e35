from __future__ import annotations

import numpy as np
import pytest

from engine.state.exceptions import StateTypeError, StateValueError
from engine.state.keys import entity_key, shard_for, shard_for_many, shards_of
from engine.state.records import (
    offset_key,
    partition_of_offset_key,
    redis_key,
    split_tile_key,
    tile_key,
    topic_prefix,
)
from tests.reference import offset_key_bytes, redis_tile_key_bytes, shard_of, tile_key_bytes

FP = bytes(range(8))


def test_tile_key_layout_and_inverse() -> None:
    key = tile_key(FP, b"u1\x1fm9")
    assert key == tile_key_bytes(FP, b"u1\x1fm9")
    assert split_tile_key(key) == (FP, b"u1\x1fm9")


def test_offset_key_layout() -> None:
    key = offset_key("payments", 258)
    assert key == offset_key_bytes("payments", 258)
    assert partition_of_offset_key(key, topic_prefix("payments")) == 258


def test_offset_keys_sort_by_partition() -> None:
    keys = [offset_key("t", p) for p in (300, 2, 70000, 0)]
    assert [partition_of_offset_key(k, topic_prefix("t")) for k in sorted(keys)] == [
        0,
        2,
        300,
        70000,
    ]


def test_entity_key_joins_values() -> None:
    assert entity_key(["user-1", 42]) == b"user-1\x1f42"
    assert entity_key(["ü"]) == "ü".encode()
    assert entity_key([7]) == entity_key(["7"])


@pytest.mark.parametrize(
    ("values", "error"),
    [
        ([], StateValueError),
        (["a\x1fb"], StateValueError),
        ([True], StateTypeError),
        ([1.5], StateTypeError),
        ("abc", StateTypeError),
    ],
)
def test_entity_key_refuses(values: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        entity_key(values)  # type: ignore[arg-type]


def test_fingerprint_must_be_eight_bytes() -> None:
    with pytest.raises(StateValueError, match="8 bytes"):
        tile_key(b"short", b"k")
    with pytest.raises(StateTypeError, match="expected bytes, got str") as info:
        tile_key(FP.hex(), b"k")  # type: ignore[arg-type]
    assert info.value.hint is not None and "hex" in info.value.hint


def test_topic_and_partition_validation() -> None:
    with pytest.raises(StateValueError):
        offset_key("a\x00b", 0)
    with pytest.raises(StateValueError):
        offset_key("t", -1)
    with pytest.raises(StateValueError):
        offset_key("t", 2**32)


def test_shard_for_is_crc32_mod_n() -> None:
    keys = [entity_key([f"user-{i}"]) for i in range(500)]
    expected = [shard_of(FP, k, 7) for k in keys]
    assert [shard_for(FP, k, 7) for k in keys] == expected
    vectorized = shard_for_many(FP, keys, 7)
    assert vectorized.dtype == np.int64
    assert vectorized.tolist() == expected
    assert shards_of(FP, keys, 7) == expected  # the read path's list form
    # every shard gets some of 500 keys
    assert set(expected) == set(range(7))


def test_shard_for_many_empty() -> None:
    assert shard_for_many(FP, [], 4).tolist() == []
    assert shards_of(FP, [], 4) == []


def test_redis_key() -> None:
    assert redis_key(FP, b"u\x1f1") == redis_tile_key_bytes(FP, b"u\x1f1")
