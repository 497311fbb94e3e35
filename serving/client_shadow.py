"""Live shadowing from inside an inference service: ``FeatureClient(..., shadow=ShadowConfig(...))``.

A share (``sample_rate``) of the client's answered ``get_feature_vectors`` calls is
queued for comparison with a baseline feature server (Feast's HTTP shape). A background
thread asks the baseline and streamfeat (at the very ``as_of`` the caller was answered
for) and appends one outcome per sampled request to ``log_path`` as a JSON line
(``serving.shadow.outcome``), which ``streamfeat shadow --from-log`` turns into a report.

The caller's path only draws a random number and does a non-blocking put: when the
queue (``max_queue``) is full the request is dropped and counted in ``stats.dropped``;
nothing the comparison does (a slow or dead baseline included) can slow, change or fail
the caller's answer.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serving.shadow.classify import Tolerance
from serving.shadow.mapping import FeatureMapping
from serving.shadow.outcome import Outcome
from serving.shadow.runner import ShadowRequest, ShadowRunner

log = logging.getLogger("streamfeat.client.shadow")


@dataclass(frozen=True)
class ShadowConfig:
    baseline_url: str
    sample_rate: float
    log_path: Path | str
    max_queue: int = 1_000
    timeout_s: float = 2.0
    tolerance: Tolerance = field(default_factory=Tolerance)
    mapping: FeatureMapping = field(default_factory=FeatureMapping)
    seed: int | None = None  # for a reproducible sample

    def __post_init__(self) -> None:
        if not isinstance(self.baseline_url, str) or not self.baseline_url.startswith(("http://", "https://")):
            raise ValueError(f"ShadowConfig.baseline_url: expected an http(s) URL, got {self.baseline_url!r}")
        rate = self.sample_rate
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate <= 1:
            raise ValueError(
                f"ShadowConfig.sample_rate: expected a share in (0, 1], got {rate!r}; "
                "leave shadow=None to turn shadowing off"
            )
        if isinstance(self.max_queue, bool) or not isinstance(self.max_queue, int) or self.max_queue < 1:
            raise ValueError(f"ShadowConfig.max_queue: expected an integer >= 1, got {self.max_queue!r}")
        if isinstance(self.timeout_s, bool) or not isinstance(self.timeout_s, int | float) or not self.timeout_s > 0:
            raise ValueError(f"ShadowConfig.timeout_s: expected seconds > 0, got {self.timeout_s!r}")


@dataclass
class ShadowStats:
    """Counters of one sampler (``FeatureClient.shadow.stats``)."""

    sampled: int = 0
    dropped: int = 0  # sampled, but the queue was full
    compared: int = 0  # outcomes written (a failed baseline counts: its outcome says why)
    diverged: int = 0  # outcomes with at least one mismatch
    errors: int = 0  # comparisons that raised (logged; never reach the caller)


_STOP = object()


class LiveShadow:
    """The bounded queue and the thread that compares off the caller's path."""

    def __init__(self, config: ShadowConfig, streamfeat_url: str, api_key: str | None = None) -> None:
        self.config = config
        self.stats = ShadowStats()
        self._random = random.Random(config.seed)
        # Any: holds the sampled request tuples and the _STOP sentinel, told apart by identity in _work
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=config.max_queue)
        self._runner = ShadowRunner(
            config.baseline_url,
            streamfeat_url,
            mapping=config.mapping,
            tolerance=config.tolerance,
            timeout_s=config.timeout_s,
            streamfeat_api_key=api_key,  # the caller's own key: servers with API keys answer the sampler too
        )
        self._log_path = Path(config.log_path)
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        self._queued = 0
        self._thread = threading.Thread(target=self._work, name="streamfeat-shadow", daemon=True)
        self._thread.start()

    def offer(
        self,
        service: str,
        entities: Mapping[str, Sequence[object]],
        request_data: Mapping[str, Sequence[object]] | None,
        as_of: object,
    ) -> None:
        """Maybe queue this answered request; never blocks, never raises."""
        if self._random.random() >= self.config.sample_rate:
            return
        self.stats.sampled += 1
        times = as_of if isinstance(as_of, list) else [as_of]
        # One as_of per request: a request answered at several times is compared at its first.
        item = (
            self.stats.sampled - 1,
            service,
            dict(entities),
            dict(request_data or {}),
            times[0] if times and isinstance(times[0], int) else None,
        )
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.stats.dropped += 1
            return
        self._queued += 1

    def _work(self) -> None:
        with self._log_path.open("ab") as out:
            while True:
                item = self._queue.get()
                if item is _STOP:
                    return
                index, service, entities, request_data, as_of = item
                try:
                    request = ShadowRequest(index, {**entities, **request_data}, service=service, as_of_ms=as_of)
                    outcome: Outcome = self._runner.compare(request)
                    out.write(outcome.to_line())
                    out.flush()
                except Exception:  # a comparison must never take the sampler (or the caller) down
                    self.stats.errors += 1
                    log.exception("shadow comparison of request %d failed", index)
                    continue
                self.stats.compared += 1
                self.stats.diverged += bool(outcome.mismatches)

    def drain(self, timeout_s: float = 30.0) -> bool:
        """Wait until every queued request was compared (tests, shutdown); True if all were."""
        deadline = time.monotonic() + timeout_s
        while self.stats.compared + self.stats.errors < self._queued:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the thread after the requests already queued (at most ``timeout_s``)."""
        with contextlib.suppress(queue.Full):
            self._queue.put(_STOP, timeout=timeout_s)
        self._thread.join(timeout=timeout_s)
        self._runner.close()
