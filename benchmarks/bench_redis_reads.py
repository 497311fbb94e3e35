"""What the copy check costs a Redis read: :meth:`RedisOnlineTable.read_views` of one
view, without the check (no ``view_topics``) and with it (the copy marks of the shards
holding the entities, read in the same MGET), same process, same server, alternating
rounds (this machine is noisy). A request of one entity reads one key and one mark.
Reported: median microseconds per call over the rounds, and the ratio checked / plain.

    .venv/bin/python -m benchmarks.bench_redis_reads [--rounds=N] [--calls=N] [--shards=4,16] [--keys=1,100]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import emit
from benchmarks.servers import redis_server
from engine.state.keys import entity_key
from engine.state.online_redis import RedisOnlineTable
from engine.state.redis_writer import RedisOnlineWriter

FINGERPRINT = bytes.fromhex("00000000000000aa")
TOPIC = "bench-copy-check"


def _per_call_us(table: RedisOnlineTable, keys: list[bytes], calls: int) -> float:
    requests = [(FINGERPRINT, keys)]
    started = time.perf_counter()
    for _ in range(calls):
        table.read_views(requests)
    return (time.perf_counter() - started) / calls * 1e6


def main(argv: list[str]) -> int:
    options = dict(a.removeprefix("--").split("=", 1) for a in argv if a.startswith("--"))
    rounds = int(options.get("rounds", "7"))
    calls = int(options.get("calls", "3000"))
    shard_counts = [int(s) for s in options.get("shards", "4,16").split(",")]
    key_counts = [int(k) for k in options.get("keys", "1,100").split(",")]
    with tempfile.TemporaryDirectory() as tmp, redis_server(Path(tmp)) as url:
        all_keys = [entity_key([f"u{i}"]) for i in range(max(key_counts))]
        with RedisOnlineWriter(url) as writer:
            writer.write([(FINGERPRINT, k, b"x" * 600) for k in all_keys], ttl_ms=None)
            for shard in range(max(shard_counts)):
                writer.mark_copied(TOPIC, shard)
        results = []
        for shards in shard_counts:
            plain = RedisOnlineTable(url)
            checked = RedisOnlineTable(url, view_topics={FINGERPRINT: TOPIC}, n_shards=shards)
            for n_keys in key_counts:
                keys = all_keys[:n_keys]
                _per_call_us(plain, keys, calls // 10)  # warm both connection pools
                _per_call_us(checked, keys, calls // 10)
                plain_us, checked_us = [], []
                for _ in range(rounds):
                    plain_us.append(_per_call_us(plain, keys, calls))
                    checked_us.append(_per_call_us(checked, keys, calls))
                ratios = [c / p for c, p in zip(checked_us, plain_us, strict=True)]
                results.append(
                    {
                        "shards": shards,
                        "keys": n_keys,
                        "plain_us": round(statistics.median(plain_us), 2),
                        "checked_us": round(statistics.median(checked_us), 2),
                        "ratio_median": round(statistics.median(ratios), 3),
                        "ratio_range": [round(min(ratios), 3), round(max(ratios), 3)],
                    }
                )
                print(results[-1], file=sys.stderr)
            plain.close()
            checked.close()
    emit({"benchmark": "redis_reads", "rounds": rounds, "calls": calls, "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
