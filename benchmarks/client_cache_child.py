"""Child of bench_serving: FeatureClient.get_feature_vector per call, cached vs uncached,
against a running `streamfeat serve` (the way an inference service calls it).

    .venv/bin/python -m benchmarks.client_cache_child PORT CALLS USER [USER ...]

Prints one JSON object: per-call latency percentiles (microseconds) of uncached calls
(every call reaches the server) and of cache hits (the same entities again within their
TTL), and the cache's hit/miss counters as a check that the hits were hits.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import orjson

from serving.client import FeatureClient
from serving.client_cache import CacheConfig


def _percentiles(samples_ns: list[int]) -> dict[str, float]:
    us = np.array(samples_ns, dtype=np.float64) / 1000
    return {
        "p50_us": round(float(np.percentile(us, 50)), 2),
        "p99_us": round(float(np.percentile(us, 99)), 2),
        "calls": len(samples_ns),
    }


def main(port: int, calls: int, users: list[str]) -> None:
    url = f"http://127.0.0.1:{port}"
    keys = [({"user_id": u, "merchant_id": "m1"}, {"amount": 10.0}) for u in users]
    timings: dict[str, list[int]] = {"uncached": [], "cached": []}
    with (
        FeatureClient(url, timeout=10.0) as plain,
        FeatureClient(url, timeout=10.0, cache=CacheConfig(default_ttl_s=3600.0)) as cached,
    ):
        for join_keys, request in keys:  # warm both: connections, and the cache's rows
            plain.get_feature_vector("fraud_scoring", join_keys, request)
            cached.get_feature_vector("fraud_scoring", join_keys, request)
        for name, client in (("uncached", plain), ("cached", cached)):
            for i in range(calls):
                join_keys, request = keys[i % len(keys)]
                started = time.perf_counter_ns()
                client.get_feature_vector("fraud_scoring", join_keys, request)
                timings[name].append(time.perf_counter_ns() - started)
        if cached.cache is None:
            raise RuntimeError("FeatureClient(cache=...) built no cache")
        stats = cached.cache.stats
        result = {name: _percentiles(samples) for name, samples in timings.items()}
        result["cache"] = {"hits": stats.hits, "misses": stats.misses, "entities": len(keys)}
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:])
