"""State layer: RocksDB shard store with exactly-once offsets, online tables, Redis copy."""

from engine.state.exceptions import (
    OnlineTableUnavailable,
    OnlineWriteError,
    ShardCountMismatchError,
    StateError,
)
from engine.state.keys import entity_key, shard_for, shard_for_many
from engine.state.offsets import OffsetRecord, ResumePoint
from engine.state.online_redis import RedisOnlineTable
from engine.state.online_rocksdb import RocksDBOnlineTable
from engine.state.protocols import (
    OnlineTable,
    OnlineTableHealth,
    OnlineWriter,
    Store,
    StorePartition,
    Transaction,
)
from engine.state.records import (
    UNKNOWN_FRESHNESS,
    Freshness,
    freshest,
    offset_key,
    redis_key,
    tile_key,
)
from engine.state.redis_writer import RedisOnlineWriter
from engine.state.rocksdb_store import RocksDBStore, RocksDBStorePartition, RocksDBTransaction
from engine.state.secondary import resume_positions

__all__ = [
    "UNKNOWN_FRESHNESS",
    "Freshness",
    "OffsetRecord",
    "OnlineTable",
    "OnlineTableHealth",
    "OnlineTableUnavailable",
    "OnlineWriteError",
    "OnlineWriter",
    "RedisOnlineTable",
    "RedisOnlineWriter",
    "ResumePoint",
    "RocksDBOnlineTable",
    "RocksDBStore",
    "RocksDBStorePartition",
    "RocksDBTransaction",
    "ShardCountMismatchError",
    "StateError",
    "Store",
    "StorePartition",
    "Transaction",
    "entity_key",
    "freshest",
    "offset_key",
    "redis_key",
    "resume_positions",
    "shard_for",
    "shard_for_many",
    "tile_key",
]
